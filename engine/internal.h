/* internal.h — the engine's private structures: connection record, ring, worker, engine. */
#ifndef RB_INTERNAL_H
#define RB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ringbeat.h"
#include "proto.h"
#include "proxy.h"
#include "slab.h"
#include "tls.h"
#include "uring.h"
#include "wheel.h"

/*
 * A connection id names its record without a lookup structure of its own:
 * bits 0-19 the fixed-file slot, 20-31 the engine-wide ring index, 32-59 a generation that
 * changes each time the slot is reused (so a stale id or a late completion is recognised),
 * 60-63 zero in ids and the operation kind in io_uring user_data.
 */
#define RB__SLOT_BITS 20
#define RB__RING_BITS 12
#define RB__GEN_BITS  28
#define RB__MAX_RINGS (1u << RB__RING_BITS)
#define RB__MAX_SLOTS (1u << RB__SLOT_BITS)

static inline uint64_t rb__id_make(uint32_t gen, uint32_t gring, uint32_t slot)
{
    return (uint64_t)(gen & ((1u << RB__GEN_BITS) - 1)) << 32 | (uint64_t)gring << RB__SLOT_BITS |
           slot;
}
static inline uint32_t rb__id_slot(uint64_t id)
{
    return (uint32_t)id & (RB__MAX_SLOTS - 1);
}
static inline uint32_t rb__id_ring(uint64_t id)
{
    return (uint32_t)(id >> RB__SLOT_BITS) & (RB__MAX_RINGS - 1);
}
static inline uint32_t rb__id_gen(uint64_t id)
{
    return (uint32_t)(id >> 32) & ((1u << RB__GEN_BITS) - 1);
}

/* Operation kinds, in the top 4 bits of user_data. */
enum rb__op {
    RB__OP_NONE = 0, /* fire-and-forget SQEs whose rare failures need no action */
    RB__OP_ACCEPT,   /* low bits: listener index */
    RB__OP_RECV,     /* low bits: connection id */
    RB__OP_SEND,     /* low bits: send-log parity and index (see out.c) */
    RB__OP_FLUSH,    /* low bits: connection id; a send of queued output, with a completion */
    RB__OP_WAKE,     /* the worker's eventfd read */
    RB__OP_PEER,     /* low bits: connection id; fixed fd installed to learn the peer address */
    RB__OP_CANCEL,
    RB__OP_CLOSE_FRAME, /* low bits: the code; only a failed CLOSE send completes */
    RB__OP_KEEPALIVE,   /* low bits: connection id; only a refused kernel-mode option completes */
    RB__OP_INQ,         /* low bits: connection id; SIOCINQ before a death (loop.c) */
};
#define RB__OP_SHIFT 60
static inline uint64_t rb__ud(enum rb__op op, uint64_t low)
{
    return (uint64_t)op << RB__OP_SHIFT | low;
}

enum {
    RB__CF_OPEN = 1u << 0,       /* the codec has opened the connection (on_open was called) */
    RB__CF_FIRST_PING = 1u << 1, /* server mode: no frame since the opening one (live.c) */
    RB__CF_CLOSING = 1u << 2,
    RB__CF_RECV = 1u << 3,      /* a multishot recv is armed */
    RB__CF_REARM = 1u << 4,     /* queued for a recv re-arm (ENOBUFS) */
    RB__CF_BLOCKED = 1u << 5,   /* output queued in ext: new frames go behind it */
    RB__CF_FLUSHING = 1u << 6,  /* a send of ext output is in flight */
    RB__CF_PING_HELD = 1u << 7, /* server mode: a paced PING waits on the place it reserved */
};

/*
 * Slow-path state, allocated only while needed (split frame, blocked output, peer address) and
 * for the life of a TLS connection, whose transport state follows it in the same allocation
 * (struct rb__tls_ext: 256 bytes together, from the worker's TLS slab). Everything that has a
 * size of its own lives behind a pointer, so the header stays 24 bytes.
 */
struct rb__conn_ext {
    void *codec;                   /* the codec's slow-path state (freed by codec->release) */
    struct rb__outq *out;          /* output the socket did not take yet */
    struct sockaddr_storage *peer; /* rb_config.peer_addr: until on_open has it */
};

/* Queued output, allocated at --max-pending-out once (so an in-flight flush never sees it move).
 * The flush completion names it, not the connection: it outlives a connection released while
 * the kernel still reads it (off == RB__OUTQ_ORPHAN). */
struct rb__outq {
    uint64_t id; /* its connection */
    uint32_t len, off;
    uint8_t data[];
};
#define RB__OUTQ_ORPHAN UINT32_MAX

/* Bytes of the record the connection's codec owns (v1: a split frame's length and 7 bytes). */
#define RB__CODEC_INLINE 8

/* One cache line per connection; the timer goes last so its tail padding ends the line. */
struct rb__conn {
    uint32_t last_rx_ms; /* engine clock (wraps; compared by signed difference) */
    uint32_t interval_ms;
    uint32_t timeout_ms;
    uint32_t gen;
    uint32_t slot : 20;         /* < RB__MAX_SLOTS */
    uint32_t listener : 4;      /* < RB_LISTEN_MAX: names the codec and the transport */
    uint32_t proxy_pending : 1; /* the PROXY header is still to come: bytes go to proxy.c */
    uint32_t proxy_local : 1;   /* the header was LOCAL: the balancer's own connection */
    uint32_t tls : 1;           /* the listener's transport is TLS: ext holds struct rb__tls_ext */
    uint32_t death_looked : 1;  /* its death was postponed once for unread bytes (loop.c) */
    uint32_t spare : 4;
    uint16_t ring; /* index within its worker */
    uint8_t state; /* bits 0-1 liveness, 2-3 mode, 4-6 weight of the mark */
    uint8_t flags; /* RB__CF_* */
    struct rb__conn_ext *ext;
    uint8_t codec[RB__CODEC_INLINE];
    struct rb__timer timer;
};
_Static_assert(sizeof(struct rb__conn) == 64, "a connection record is one cache line");
_Static_assert(RB_LISTEN_MAX <= 16, "the listener index has 4 bits");

static inline enum rb_liveness rb__conn_liveness(const struct rb__conn *c)
{
    return (enum rb_liveness)(c->state & 3);
}
static inline enum rb_mode rb__conn_mode(const struct rb__conn *c)
{
    return (enum rb_mode)((c->state >> 2) & 3);
}
static inline unsigned rb__conn_weight(const struct rb__conn *c)
{
    return (c->state >> 4) & 7;
}

/* Output written during a loop turn; reused two turns later (after its failures are reaped). */
struct rb__out_chunk {
    struct rb__out_chunk *next;
    uint32_t used, cap;
    uint8_t data[];
};
struct rb__send_rec {
    uint64_t id;
    const uint8_t *buf;
    uint32_t len;
};
struct rb__out_gen {
    struct rb__out_chunk *head, *cur;
    struct rb__send_rec *log;
    uint32_t log_len, log_cap;
    /* The most either held in one turn since trim_ms: a burst's high-water is given back. */
    uint32_t peak_chunks, peak_log;
    uint64_t trim_ms;
};

struct rb__ring {
    struct io_uring uring;
    struct rb__worker *w;
    uint16_t index;  /* within the worker */
    uint16_t gindex; /* engine-wide, part of connection ids */
    uint32_t slots;  /* fixed-file table size */
    uint32_t used;   /* slots holding a connection */
    struct rb__conn **by_slot;
    struct rb__bufring bufs;
    uint64_t *rearm; /* ids of connections waiting for receive buffers (ENOBUFS) */
    uint32_t rearm_head, rearm_len, rearm_cap; /* a FIFO: [head, len) wait */
    uint32_t accept_armed;                     /* accept requests in flight on this ring */
    uint16_t accept_multishot;                 /* listeners with a multishot accept armed here */
    uint64_t *ip_key; /* per slot, with --max-conns-per-ip: the address the slot counts against */
};

/* A deque of connection ids (the TLS handshake queues); cap is a power of two. */
struct rb__idq {
    uint64_t *v;
    uint32_t head, len, cap;
};

/* A message from another thread (rb_send / rb_close): bounded MPSC queue of the worker. */
struct rb__msg {
    uint64_t id;
    uint8_t *data; /* message payload copy, or NULL for a close */
    uint32_t len;
    uint16_t code;
    uint8_t kind; /* enum rb_data_kind */
};
struct rb__mbox_cell {
    _Atomic uint64_t seq;
    struct rb__msg msg;
};
struct rb__mbox {
    struct rb__mbox_cell *cells;
    uint32_t mask;
    _Atomic uint64_t tail; /* producers */
    uint64_t head;         /* the worker */
};

struct rb__worker {
    struct rb_engine *e;
    unsigned index;
    pthread_t thread;
    bool thread_started;
    int error; /* the loop's exit status */

    struct rb__ring *rings; /* rings[0] is the one the thread sleeps on */
    unsigned nrings, max_rings;
    unsigned accept_ring;
    uint32_t *gen_counter; /* per ring: generations handed out, so ids are not reused soon */
    int listen_fd[RB_LISTEN_MAX];

    int wake_fd;
    uint64_t wake_buf;

    struct rb__wheel wheel;
    struct rb__slab slab;
    struct rb__mbox mbox;

    struct rb__out_gen out[2];
    uint64_t turn;
    unsigned overflow_hold; /* turns to keep output alive after a CQ overflow */
    uint8_t *out_last;      /* the frame rb__out_begin() handed out last */

    uint64_t now_ms64; /* engine clock */
    uint32_t now_ms;
    uint64_t planned_ms; /* the deadline the last wait slept for (loop lag, loop.c) */
    uint32_t lag_ms;     /* this turn's lateness against it */
    bool shedding;       /* lag past the threshold: accepts paused, PINGs deferred */
    uint64_t late_ms;    /* when a turn last ran late (0: never): deaths soon after wait once */

    double ping_tokens; /* PING pacing: below 0, the PINGs reserved ahead (see live.c) */
    double ping_per_ms; /* ... the refill rate */
    uint64_t ping_refill_ms;
    double accept_tokens; /* --accept-rate: token bucket */
    uint64_t accept_refill_ms, accept_resume_ms;

    bool stopping;
    uint64_t stop_deadline_ms;
    uint32_t drain_ring, drain_slot;

    /* TLS transport (transport_tls.c); all of it unused without a TLS listener. */
    struct rb_tls_scratch *tls_scratch; /* cipher contexts of this thread */
    struct rb__slab tls_slab;           /* TLS connections' ext + transport state, 256 B each */
    struct rb__idq tls_cont;            /* handshakes under way with input waiting: served first */
    struct rb__idq tls_new;             /* ... and new ones (a ClientHello to answer) */
    uint32_t tls_budget;                /* handshake records left for this turn */
    uint64_t tls_rotate_check_ms;       /* next look at the ticket key rotation */
    uint64_t tls_hs_seen;               /* handshakes ended, as of the last look */
    uint64_t tls_decay_until_ms;        /* give back the handshakes' garbage until then */
    struct rb__conn *tls_batch; /* frames for it go into one record (while its codec runs) */
    struct rb__conn *tls_open;  /* ... the record being filled, sealed before anything else */
    uint8_t *tls_open_rec;
    uint32_t tls_open_len;  /* plaintext bytes in it */
    uint8_t *tls_begin_end; /* end of what rb__out_begin reserved for a TLS frame */
    uint8_t tls_begin_kind; /* ... and how it will be sent (transport_tls.c) */
    uint8_t *tls_plain;     /* plaintext out of SSL objects (TLS 1.2), 16 KiB */

    struct rb_stats stats; /* written by this thread only; read relaxed by others */
};

struct rb__ip_count {
    uint64_t key; /* 0: empty */
    uint32_t count;
};

/* A listening address: the protocol (codec) its connections speak, over which transport. */
struct rb__listener {
    struct rb_listen_addr spec;
    const struct rb__codec *codec;
    uint16_t port; /* bound (port 0 in the spec picks one) */
};

struct rb_engine {
    struct rb_config cfg;
    struct rb__worker *workers;
    unsigned nworkers;
    unsigned rings_per_worker_max;
    uint32_t slots_per_ring;
    struct rb__ring **ring_by_gindex; /* engine-wide ring table, for id lookups */
    _Atomic unsigned nrings_total;
    _Atomic uint32_t conns; /* engine-wide, for --max-conns */
    _Atomic int stop;
    uint64_t epoch_ns;
    struct rb__listener listeners[RB_LISTEN_MAX];
    struct rb_tls_ctx *tls; /* with a TLS listener: certificate, ticket keys (shared) */
    int listen_error;       /* a listener that did not parse: rb_engine_start says so */
    uint64_t token_key;     /* keys the PING tokens so a forged PONG is not taken for ours */
    _Atomic(const struct rb_auth *) auth; /* rb_engine_set_auth; NULL: ids on trust */
    _Atomic(rb_metrics_extra_fn) metrics_extra;
    void *_Atomic metrics_extra_user;
    pthread_mutex_t ip_lock; /* per-address counts: taken at accept and close only */
    struct rb__ip_count *ip_table;
    uint32_t ip_mask, ip_used;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned started, start_failed;
    int start_error;
};

/* Relaxed single-writer counters: no lock prefix, yet race-free for readers. */
#define RB__ADD(w, field, n)                                                                       \
    __atomic_store_n(&(w)->stats.field, (w)->stats.field + (n), __ATOMIC_RELAXED)
#define RB__INC(w, field) RB__ADD(w, field, 1)
#define RB__DEC(w, field) RB__ADD(w, field, (uint64_t)-1)

/* ---- records (conn.c) ---- */

static inline struct rb__ring *rb__conn_ring(struct rb__worker *w, const struct rb__conn *c)
{
    return &w->rings[c->ring];
}
static inline uint64_t rb__conn_id(struct rb__worker *w, const struct rb__conn *c)
{
    return rb__id_make(c->gen, rb__conn_ring(w, c)->gindex, c->slot);
}
static inline const struct rb__codec *rb__conn_codec(const struct rb__worker *w,
                                                     const struct rb__conn *c)
{
    return w->e->listeners[c->listener].codec;
}
static inline enum rb_protocol rb__conn_protocol(const struct rb__worker *w,
                                                 const struct rb__conn *c)
{
    return w->e->listeners[c->listener].spec.protocol;
}
/* Over the TLS transport (its listener's; kept in the record so no table is read per frame). */
static inline bool rb__conn_tls(const struct rb__conn *c)
{
    return c->tls;
}
static inline void rb__conn_set_mode(struct rb__conn *c, enum rb_mode mode)
{
    c->state = (uint8_t)((c->state & ~0x0c) | (unsigned)mode << 2);
}
/* The record behind an id, if it is this worker's and still the same open connection. */
struct rb__conn *rb__conn_lookup(struct rb__worker *w, uint64_t id);
/* The slow-path state, allocated on first use (a TLS connection always has one); NULL when
 * memory is short. */
struct rb__conn_ext *rb__conn_ext(struct rb__worker *w, struct rb__conn *c);
/* Frees the slow-path state once nothing in it is needed any more (never a TLS connection's). */
void rb__conn_ext_trim(struct rb__conn *c);
/* Makes a record for a socket just accepted into `slot` of ring r (NULL: none left). */
struct rb__conn *rb__conn_new(struct rb__worker *w, struct rb__ring *r, uint32_t slot,
                              unsigned listener);
/*
 * Closes and frees a connection: the codec's close frame for `reason` (when the peer can still
 * read), shutdown and close of its socket, counters, on_close (if it was opened). reason is an
 * rb_close_code; peer_code the code the peer sent (RB_CLOSE_PEER) or 0.
 */
void rb__conn_release(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code);

/* ---- protocol-neutral events from the codecs (sess.c) ---- */
#include "codec.h"

/* ---- liveness: the mark, the wheel, PING scheduling and pacing (live.c) ---- */

/* Kernel mode: the kernel's keepalive judges; the wheel keeps a backstop at timeout plus one
 * keepalive interval (the kernel's whole second) of slack (docs/design.md, "Kernel mode"). */
#define RB__KEEPALIVE_SLACK_MS 1000u

unsigned rb__live_weight_max(const struct rb__conn *c);
void rb__live_set_mark(struct rb__worker *w, struct rb__conn *c, enum rb_liveness to,
                       unsigned weight);
/* A complete frame arrived: records the time and restores the mark; touches no timer. */
static inline void rb__live_touch(struct rb__worker *w, struct rb__conn *c)
{
    /* Rounded up: the clock is truncated to ms, and a connection must never look older than it
     * is (that would declare it dead up to 1 ms early). */
    c->last_rx_ms = w->now_ms + 1;
    if (c->flags & RB__CF_OPEN) /* not the opening frame: PING points from here (live.c) */
        c->flags &= (uint8_t)~RB__CF_FIRST_PING;
    if (rb__conn_liveness(c) != RB_ALIVE)
        rb__live_set_mark(w, c, RB_ALIVE, rb__live_weight_max(c));
}
/* Kernel mode's TCP keepalive settings for an interval and a timeout (live.c). */
struct rb__keepalive_plan {
    uint32_t idle_s;  /* TCP_KEEPIDLE: the first probe after this much silence */
    uint32_t intvl_s; /* TCP_KEEPINTVL: the kernel's next look after a probe */
    uint32_t cnt;     /* TCP_KEEPCNT (TCP_USER_TIMEOUT decides; set to the same effect) */
};
void rb__live_keepalive_plan(uint32_t interval_ms, uint32_t timeout_ms,
                             struct rb__keepalive_plan *plan);
/* (Re)starts the connection's timer for its current mode, interval and timeout. */
void rb__live_start(struct rb__worker *w, struct rb__conn *c);
void rb__live_arm_at(struct rb__worker *w, struct rb__conn *c, uint64_t deadline_ms64);
enum rb__live_verdict {
    RB__LIVE_OK,   /* re-armed (or held for pacing) */
    RB__LIVE_PING, /* a PING is due now: send it, then call rb__live_schedule() */
    RB__LIVE_DEAD, /* the timeout has passed */
};
/* What a fired timer means; updates the mark and the pacing bucket. */
enum rb__live_verdict rb__live_timer(struct rb__worker *w, struct rb__conn *c);
void rb__live_schedule(struct rb__worker *w, struct rb__conn *c);
/* Refills the PING pacing bucket up to the worker's clock (once per turn). */
void rb__live_refill(struct rb__worker *w);
/* PING tokens carry their send time and a keyed check, so a PONG needs no state. */
uint64_t rb__live_token(const struct rb__worker *w, uint64_t id, uint64_t t_us);
/* A PONG's token: 0 and the RTT when it is one of ours, -EINVAL otherwise. */
int rb__live_pong(struct rb__worker *w, struct rb__conn *c, uint64_t token, uint64_t now_us,
                  uint64_t *rtt_us);

/* ---- output: arena, send log, pending output, flush, close chains (out.c) ---- */

void rb__out_reset(struct rb__worker *w);
void rb__out_free(struct rb__worker *w);
/* Bytes in this turn's arena, valid until their send failures are reaped. */
uint8_t *rb__out_alloc(struct rb__worker *w, uint32_t len);
/*
 * A frame for c: rb__out_begin() returns room for up to max_len bytes of it (NULL when memory
 * is short, or while a TLS handshake runs); rb__out_end() sends the first len of them (frames
 * queue behind blocked output). The one place frames are made: over TLS they are sealed there.
 * May release c (slow reader).
 */
uint8_t *rb__out_begin(struct rb__worker *w, struct rb__conn *c, uint32_t max_len);
void rb__out_end(struct rb__worker *w, struct rb__conn *c, uint8_t *frame, uint32_t len);
/* Sends bytes of this turn's arena as they are (after the transport): one SQE, or extends the
 * previous one to c. false when c was released meanwhile (slow reader, no memory). */
bool rb__out_send(struct rb__worker *w, struct rb__conn *c, const uint8_t *buf, uint32_t len);
/* The arena's last allocation ends at `end`: moves its end to new_end (shrinks or grows by up
 * to what the chunk has left). false when it is not the last or there is no room. */
bool rb__out_resize_last(struct rb__worker *w, const uint8_t *end, const uint8_t *new_end);
/* Room for n SQEs in a row (submits mid-turn when the SQ is full); false if there is none. */
bool rb__ring_reserve(struct rb__worker *w, struct rb__ring *r, unsigned n);
struct io_uring_sqe *rb__ring_sqe(struct rb__worker *w, struct rb__ring *r);
/* The socket's close chain: the frame (len > 0), shutdown, close of the direct descriptor. */
void rb__slot_close(struct rb__worker *w, struct rb__ring *r, uint32_t slot, const uint8_t *frame,
                    uint32_t len);
void rb__on_send_failed(struct rb__worker *w, struct io_uring_cqe *cqe);
void rb__on_flush(struct rb__worker *w, struct io_uring_cqe *cqe);
/* Frees a connection's queued output (or leaves it to the flush in flight). */
void rb__out_release(struct rb__conn *c, struct rb__conn_ext *x);

/* ---- the TLS transport (transport_tls.c): between the socket and the codec ---- */

/* Engine start and stop: the shared context (certificate, tickets); a worker's thread state. */
int rb__tls_engine_init(struct rb_engine *e);
void rb__tls_engine_free(struct rb_engine *e);
int rb__tls_worker_init(struct rb__worker *w);
void rb__tls_worker_free(struct rb__worker *w);
/* A record was made for an accepted socket: its TLS state and the handshake's deadline (the SSL
 * object itself comes with the first handshake step, within the budget). -ENOMEM. */
int rb__tls_start(struct rb__worker *w, struct rb__conn *c);
/* Received bytes: the handshake (deferred to the turn's handshake step) or records, whose
 * plaintext goes to the codec. 0, or -1 when c was released. */
int rb__tls_input(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n);
/* The peer's FIN or reset (reason RB_CLOSE_EOF / RB_CLOSE_RESET): true when handshake input
 * waits for the handshake step, which then releases the connection after judging it; false:
 * release it now. */
bool rb__tls_eof(struct rb__conn *c, int reason);
static inline bool rb__tls_pending(const struct rb__worker *w)
{
    return w->tls_cont.len || w->tls_new.len;
}
/* The turn's handshake work, bounded by the per-worker budget (after the turn's replies were
 * submitted); true while some is left for the next turn. */
bool rb__tls_handshakes(struct rb__worker *w);
/* Once a turn: ticket key rotation, when due. */
void rb__tls_tick(struct rb__worker *w);
/* Output: see rb__out_begin/rb__out_end. */
uint8_t *rb__tls_out_begin(struct rb__worker *w, struct rb__conn *c, uint32_t max_len);
void rb__tls_out_end(struct rb__worker *w, struct rb__conn *c, uint8_t *frame, uint32_t len);
/* Seals and sends the record being filled (before any other output and any submit). */
void rb__tls_seal_open(struct rb__worker *w);
static inline void rb__tls_seal_pending(struct rb__worker *w)
{
    if (w->tls_open)
        rb__tls_seal_open(w);
}
/* The close chain's bytes: the codec's close frame sealed, then close_notify (nothing while the
 * handshake runs or after a fatal alert). Returns their length, *out in the arena. */
uint32_t rb__tls_close_bytes(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code,
                             uint8_t **out);
/* Frees the transport state (the ext itself included) of a connection being released. */
void rb__tls_release(struct rb__worker *w, struct rb__conn *c, int reason);

/* ---- receive: buffer ring, multishot recv, ENOBUFS re-arm (recv.c) ---- */

#define RB__BGID 0 /* each ring's one provided-buffer group */
void rb__recv_arm(struct rb__worker *w, struct rb__conn *c);
void rb__on_recv(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe);
void rb__recv_rearm(struct rb__worker *w, struct rb__ring *r);

/* ---- accept (accept.c) ---- */

void rb__accept_keep_armed(struct rb__worker *w);
void rb__accept_cancel(struct rb__worker *w, struct rb__ring *r);
void rb__on_accept(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe);
void rb__on_peer(struct rb__worker *w, struct io_uring_cqe *cqe);
/* The peer's address is known (getpeername, or a PROXY header): counts it for
 * --max-conns-per-ip and keeps it for on_open. -1 when the connection was released. */
int rb__peer_apply(struct rb__worker *w, struct rb__conn *c, const struct sockaddr_storage *peer);

/* ---- cross-thread mailbox (mbox.c) ---- */

int rb__mbox_init(struct rb__mbox *q, uint32_t cells);
void rb__mbox_free(struct rb__mbox *q);
int rb__worker_post(struct rb__worker *w, const struct rb__msg *m);
void rb__worker_wake(struct rb__worker *w);
void rb__mbox_arm_wake(struct rb__worker *w);
void rb__mbox_drain(struct rb__worker *w);

/* ---- the worker: setup, clock, loop turn (worker.c, loop.c) ---- */

extern __thread struct rb__worker *rb__current_worker;
int rb__worker_init(struct rb__worker *w, struct rb_engine *e, unsigned index);
void rb__worker_destroy(struct rb__worker *w);
void *rb__worker_main(void *arg);
int rb__ring_open(struct rb__worker *w, unsigned idx);
int rb__worker_loop(struct rb__worker *w);
void rb__worker_clock(struct rb__worker *w);
static inline uint64_t rb__worker_now_us(const struct rb__worker *w)
{
    return (rb_clock_ns() - w->e->epoch_ns) / 1000;
}

/* ---- util.c ---- */
/* Lets the calling thread's jemalloc arena give back the pages a burst left dirty (no-op
 * without jemalloc). A few microseconds; called once a second after handshakes. */
void rb__mem_decay(void);

/* ---- stats.c ---- */
void rb__hist_add(struct rb_hist *h, const uint32_t *bounds, uint64_t value);
void rb__stats_add(struct rb_stats *sum, const struct rb_stats *w);

/* ---- engine.c ---- */
uint64_t rb__ip_key(const struct sockaddr_storage *ss);
/* Counts one more connection from key; -EDQUOT when that would exceed max_conns_per_ip. */
int rb__ip_acquire(struct rb_engine *e, uint64_t key);
void rb__ip_release(struct rb_engine *e, uint64_t key);

#endif
