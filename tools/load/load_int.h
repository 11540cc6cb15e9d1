/* load_int.h — ringbeat-load engine internals: the structs and functions its files share. */
#ifndef RB_LOAD_INT_H
#define RB_LOAD_INT_H

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "load.h"
#include "load_tls.h"
#include "load_ws.h"
#include "proto.h"
#include "ringbeat.h"

/*
 * Design
 * - Connection n belongs to worker n % W; inside a worker, local index j goes to ring j % R at
 *   slot j / R, so consecutive connects spread over all rings and each ring's fixed-file table
 *   stays <= slots_per_ring (RLIMIT_NOFILE - margin). A connection keeps its slot for life
 *   (reconnects reuse it); a generation byte in user_data discards stale completions.
 * - One thread drives all of its rings, in turns of at least --turn (1 ms): completions gather
 *   meanwhile, so a turn handles many of them with one io_uring_enter per ring that has work
 *   (instead of a wake-up, an eventfd read and an enter per heartbeat: that made the generator
 *   cost more CPU per heartbeat than the server it measures). Rings are SINGLE_ISSUER |
 *   DEFER_TASKRUN, enabled by their worker: the kernel never interrupts the thread for a
 *   completion, it queues the work until the thread enters the ring (IORING_SQ_TASKRUN says
 *   which rings have some). When nothing is due the thread sleeps in ppoll() on one eventfd
 *   that every ring signals (io_uring_register_eventfd), until the next deadline.
 * - Times that matter are taken where they happen: a frame's send time is the time its submit
 *   returned (a per-ring send log stamps them), a completion's time is a clock read per batch
 *   of completions (not per completion, not the turn's start). A PONG submitted more than
 *   LOAD_LATE_ANSWER_US after its PING was read is a late answer of ours; a death after one
 *   (or after our own silence longer than the timeout) is self-inflicted, not a false death.
 * - Schedule without timers: each ring walks a shuffled order of its slots, slot i of the order
 *   owning phase i * interval / M (+ jitter inside its share) of every interval since the run
 *   start. A connection therefore PINGs first at a random point of the interval after it is up,
 *   and the PING's token carries its SCHEDULED time, so RTT includes any lateness of ours
 *   (no coordinated omission). The same walk activates silencing, resets and WELCOME timeouts.
 * - Sends are tiny and go out with MSG_DONTWAIT + IOSQE_CQE_SKIP_SUCCESS: they complete inside
 *   the submitting io_uring_enter, so the per-ring transmit arena is reused after each flush.
 *   A failure posts a CQE and closes the connection (a short send is not reported by the
 *   kernel with SKIP_SUCCESS; with a 12-byte frame on a nearly idle socket it does not happen).
 */

#define U64(x)        ((uint64_t)(x))
#define CADD(w, f, v) __atomic_store_n(&(w)->cnt.f, (w)->cnt.f + (uint64_t)(v), __ATOMIC_RELAXED)
#define CSET(w, f, v) __atomic_store_n(&(w)->cnt.f, (uint64_t)(v), __ATOMIC_RELAXED)
#define LD(p)         __atomic_load_n((p), __ATOMIC_RELAXED)

#define RING_ENTRIES 1024u
#define CQ_ENTRIES   8192u
#define TX_FRAME_MAX 160u  /* a HELLO with a 64-byte id and a token */
#define CLOSE_BATCH  1024u /* shutdown closes per ring per turn: paces a mass teardown */
#define REARM_MIN    64u   /* ENOBUFS re-arms allowed per ring per turn even if no buffer came */
/* shutdown: time allowed for the close completions: 5 s plus 1 s per 10k connections */
#define DRAIN_BASE_US     5000000ull
#define DRAIN_PER_CONN_US 100ull
#define BACKOFF_BASE_US   100000ull
#define BACKOFF_CAP_US    5000000ull
#define RXCAP             24u /* split-frame bytes kept inline (header + WELCOME fit) */

enum op {
    OP_SOCKET = 1,
    OP_CONNECT,
    OP_LTIMEOUT,
    OP_NODELAY,
    OP_SEND,
    OP_RECV,
    OP_CANCEL,
    OP_LINGER,
    OP_CLOSE,
};

enum cstate {
    CS_IDLE = 0, /* never launched */
    CS_CONNECTING,
    CS_HELLO, /* connected, HELLO sent, waiting for WELCOME */
    CS_UP,
    CS_CLOSING, /* close_direct submitted */
    CS_BACKOFF, /* waiting in the reconnect heap */
    CS_DONE,
};

/* persistent flags (survive reconnects) */
#define CF_EVER_UP    0x01
#define CF_SILENT     0x02
#define CF_RESET_DONE 0x04
#define CF_REARM_Q    0x08 /* the slot sits in the ENOBUFS re-arm queue */
#define CF_WS_DEC     0x40 /* WebSocket: `ws_split` (not `split`) holds decoder state */
/* per-connection-lifetime flags */
#define CF_RECV        0x10 /* multishot recv armed */
#define CF_WAS_PENDING 0x20
#define CF_LATE        0x80 /* our last PONG went out late (LOAD_LATE_ANSWER_US) */
#define CF_LIFETIME    (CF_RECV | CF_WAS_PENDING | CF_LATE)

/* 64 bytes: the whole per-connection user-space state. */
struct lconn {
    uint64_t last_sent_us; /* last frame we sent (the peer's liveness reference) */
    uint64_t t_us;         /* CONNECTING/HELLO: attempt start; UP: WELCOME; BACKOFF: due */
    uint32_t id;           /* global connection number */
    uint32_t timeout_ms;   /* effective, from WELCOME */
    uint8_t state;
    uint8_t flags;
    uint8_t gen;
    uint8_t attempts;
    uint8_t rx_len; /* bytes of a split frame held in rx (the engine's v1 decoder) */
    uint8_t pad[3];
    uint8_t rx[RXCAP];
    union {
        struct rb__v1_split *split;    /* a longer split frame (rare: big DATA); WebSocket: a 101
                                          that came in pieces */
        struct rb__ws_split *ws_split; /* WebSocket: a split frame or message (CF_WS_DEC) */
    };
};
_Static_assert(sizeof(struct lconn) == 64, "per-connection state must stay 64 bytes");

struct heap_ent {
    uint64_t due_us;
    uint32_t slot;
};

/* A frame queued since the ring's last submit; stamped with the submit's time. */
struct sent_ent {
    uint64_t pong_read_us; /* a PONG: when its PING was read (0: another frame) */
    uint32_t slot;
    uint8_t gen;
};

struct lring {
    struct io_uring ring;
    bool ring_ok, br_ok;
    struct lconn *c;
    uint32_t nslots;
    uint32_t ridx;
    /* phase walk */
    uint32_t *order;
    uint32_t cursor;
    uint64_t cycle;
    uint64_t share_us; /* interval / nslots */
    /* ENOBUFS re-arm FIFO (each slot at most once: CF_REARM_Q) */
    uint32_t *rearm;
    uint32_t rearm_head, rearm_len;
    uint32_t bufs_back; /* buffers recycled this turn */
    /* reconnect backoff min-heap */
    struct heap_ent *heap;
    uint32_t heap_len;
    /* provided buffers */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *bufs;
    /* transmit arena, reused after every flush */
    uint8_t *tx;
    uint32_t tx_used, tx_cap;
    struct sent_ent *sent; /* send log: frames since the last submit (<= RING_ENTRIES) */
    uint32_t nsent;
    uint64_t pong_read_us; /* set while the PONG to a PING read then is being queued */
    bool disabled;         /* created R_DISABLED (SINGLE_ISSUER): its worker enables it */
    uint32_t inflight;     /* connects */
    uint32_t active;       /* slots holding (or about to hold) a socket */
    uint32_t close_cursor;
    struct __kernel_timespec connect_ts;
    uint64_t rng;
    struct ltls_ring *tls; /* --tls: per-slot TLS state (load_tls.c) */
};

struct load;

struct lworker {
    pthread_t th;
    unsigned idx;
    struct load *L;
    struct lring *rings;
    unsigned nrings;
    uint32_t nconns;   /* connections owned by this worker */
    uint32_t launched; /* initial attempts issued */
    int efd;
    int err;
    int ramp_done; /* atomic */
    int finished;  /* atomic */
    struct load_counters cnt;
    struct lhist rtt_us;
    struct lhist late_us;
    struct lhist lag_us;                    /* PING sent minus scheduled: our own lateness */
    struct lhist answer_us;                 /* PONG submitted minus its PING read */
    struct lhist loop_us;                   /* turn start minus when it was due */
    uint32_t silent_members, reset_members; /* of this worker: the walk ends when all are done */
};

enum phase { PH_RUN = 0, PH_GRACE = 1, PH_STOP = 2 };

struct load {
    const struct load_cfg *cfg;
    uint64_t t0_ns; /* rb_clock_ns() at start */
    int phase;      /* atomic enum phase */
    uint64_t interval_us;
    uint32_t slots_per_ring;
    bool linger_cmd;        /* SO_LINGER / TCP_NODELAY via IORING_OP_URING_CMD */
    struct rb_tls_ctx *tls; /* --tls: the client context shared by all rings */
    struct lworker *w;
};

static inline uint64_t ld_now_us(const struct load *L)
{
    return (rb_clock_ns() - L->t0_ns) / 1000;
}

static inline uint64_t ld_rng_next(uint64_t *s)
{
    /* splitmix64: good enough for phases and jitter, deterministic per seed */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Every connection whose number crosses a multiple of 100/pct: exactly pct% of them, evenly. */
static inline bool ld_pct_member(uint32_t id, double pct)
{
    if (pct <= 0)
        return false;
    double a = (double)id * pct / 100.0;
    double b = ((double)id + 1) * pct / 100.0;
    return (uint64_t)b > (uint64_t)a;
}

static inline bool ld_is_silenced_member(const struct load *L, uint32_t id)
{
    return ld_pct_member(id, L->cfg->silent_pct);
}

static inline bool ld_is_reset_member(const struct load *L, uint32_t id)
{
    double sp = L->cfg->silent_pct, rp = L->cfg->reset_pct;
    if (rp <= 0 || ld_is_silenced_member(L, id))
        return false;
    /* chosen among the connections that are not silenced, by rank, so both sets stay exact */
    uint32_t rank = id - (uint32_t)(((double)id + 1) * sp / 100.0);
    double share = sp < 100 ? rp * 100.0 / (100.0 - sp) : 0;
    return ld_pct_member(rank, share > 100 ? 100 : share);
}

static inline uint64_t ld_ud_make(enum op op, uint8_t gen, uint32_t slot)
{
    return U64(op) << 56 | U64(gen) << 32 | slot;
}

/* load_ring.c: submission and ring setup */
int ld_ring_flush(struct lworker *w, struct lring *r);
void ld_prep_setsockopt(struct io_uring_sqe *sqe, int fd, int level, int optname,
                        const void *optval, uint32_t optlen);
extern const int ld_one_int;
extern const struct linger ld_linger_rst;
int ld_ring_setup(struct load *L, struct lworker *w, struct lring *r, uint32_t ridx);
void ld_ring_teardown(struct lring *r);
bool ld_probe_setsockopt_cmd(void);

/* load_conn.c: connection lifecycle */
void ld_arm_recv(struct lworker *w, struct lring *r, uint32_t slot);
void ld_rearm_enqueue(struct lring *r, uint32_t slot);
void ld_pending_leave(struct lworker *w, struct lring *r, struct lconn *c);
void ld_begin_close(struct lworker *w, struct lring *r, uint32_t slot, bool send_close1, bool rst,
                    uint64_t now);
void ld_heap_pop(struct lring *r);
void ld_finish_close(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now);
void ld_launch(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now);
void ld_peer_closed(struct lworker *w, struct lring *r, uint32_t slot, int code, bool eof,
                    uint64_t now);
void ld_protocol_error(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now);

/* load_rx.c: completions and received frames */
void ld_rx_reset(struct lconn *c);
void ld_reap(struct lworker *w, struct lring *r);

/* load_turn.c: the worker thread */
void *ld_worker_main(void *arg);

/*
 * The per-heartbeat send path, inline in every file that sends (as it was when the engine was
 * one file): queueing a frame costs no call.
 */
/* Reserves n SQEs in a row (a link chain must not be split by a flush). */
static inline int ld_ring_reserve(struct lworker *w, struct lring *r, unsigned n)
{
    if (io_uring_sq_space_left(&r->ring) >= n)
        return 0;
    int ret = ld_ring_flush(w, r);
    if (ret < 0)
        return ret;
    return io_uring_sq_space_left(&r->ring) >= n ? 0 : -EBUSY;
}

static inline uint8_t *ld_tx_alloc(struct lworker *w, struct lring *r, uint32_t len)
{
    if (r->tx_used + len > r->tx_cap) {
        if (ld_ring_flush(w, r) < 0)
            return NULL;
    }
    uint8_t *p = r->tx + r->tx_used;
    r->tx_used += len;
    return p;
}

static inline int ld_send_wire(struct lworker *w, struct lring *r, uint32_t slot,
                               const uint8_t *frame, uint32_t len, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    if (ld_ring_reserve(w, r, 1) < 0)
        return -EBUSY;
    uint8_t *p = ld_tx_alloc(w, r, len);
    if (!p)
        return -EBUSY;
    memcpy(p, frame, len);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_send(sqe, (int)slot, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = ld_ud_make(OP_SEND, c->gen, slot);
    (void)now; /* the send time is the submit's (stamp_sent), not this queueing time */
    if (r->nsent < RING_ENTRIES)
        r->sent[r->nsent++] = (struct sent_ent){r->pong_read_us, slot, c->gen};
    return 0;
}

/* A frame: with --tls sealed in a record first (-EAGAIN while the handshake runs). */
static inline int ld_send_bytes(struct lworker *w, struct lring *r, uint32_t slot,
                                const uint8_t *frame, uint32_t len, uint64_t now)
{
    uint8_t rec[TX_FRAME_MAX + 32];
    if (r->tls) {
        int n = ltls_seal(r->tls, slot, frame, len, rec, sizeof(rec));
        if (n < 0)
            return n;
        frame = rec;
        len = (uint32_t)n;
    }
    return ld_send_wire(w, r, slot, frame, len, now);
}

/* The frames we send, in the protocol of the run (v1, or masked WebSocket frames). */
static inline uint32_t ld_put_ping(const struct load_cfg *cfg, uint8_t *out, uint8_t type,
                                   uint64_t token)
{
    if (cfg->protocol == RB_PROTOCOL_WS)
        return lws_put_ping(out, type, token);
    return (uint32_t)rb__put_ping(out, type, token);
}

static inline uint32_t ld_put_close(const struct load_cfg *cfg, uint8_t *out, uint16_t code)
{
    if (cfg->protocol == RB_PROTOCOL_WS)
        return lws_put_close(out, code);
    return (uint32_t)rb__put_close(out, code, NULL);
}

#endif
