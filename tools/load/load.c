/* load.c — ringbeat-load engine: io_uring client rings, protocol v1 client side, fault injection.
 */
#define _GNU_SOURCE /* ppoll */
#include "load.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "load_ws.h"
#include "load_tls.h"
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

static volatile sig_atomic_t g_stop_requested;

void load_request_stop(void)
{
    g_stop_requested = 1;
}

static uint64_t now_us(const struct load *L)
{
    return (rb_clock_ns() - L->t0_ns) / 1000;
}

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: good enough for phases and jitter, deterministic per seed */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Every connection whose number crosses a multiple of 100/pct: exactly pct% of them, evenly. */
static bool pct_member(uint32_t id, double pct)
{
    if (pct <= 0)
        return false;
    double a = (double)id * pct / 100.0;
    double b = ((double)id + 1) * pct / 100.0;
    return (uint64_t)b > (uint64_t)a;
}

static bool is_silenced_member(const struct load *L, uint32_t id)
{
    return pct_member(id, L->cfg->silent_pct);
}

static bool is_reset_member(const struct load *L, uint32_t id)
{
    double sp = L->cfg->silent_pct, rp = L->cfg->reset_pct;
    if (rp <= 0 || is_silenced_member(L, id))
        return false;
    /* chosen among the connections that are not silenced, by rank, so both sets stay exact */
    uint32_t rank = id - (uint32_t)(((double)id + 1) * sp / 100.0);
    double share = sp < 100 ? rp * 100.0 / (100.0 - sp) : 0;
    return pct_member(rank, share > 100 ? 100 : share);
}

static inline uint64_t ud_make(enum op op, uint8_t gen, uint32_t slot)
{
    return U64(op) << 56 | U64(gen) << 32 | slot;
}

/* ---- submission helpers ---- */

/*
 * The frames of the submit that just returned left inside it: their send time is the time just
 * before the io_uring_enter (t), and a PONG's lateness is measured to it. Taken before, not
 * after: a frame never looks sent later than it was, so the server can never look early (a
 * clock read after the enter counted a preempted thread's pause, up to 5 ms on a busy box, as
 * the frame's flight time).
 */
static void stamp_sent(struct lworker *w, struct lring *r, uint64_t t)
{
    if (!r->nsent)
        return;
    for (uint32_t i = 0; i < r->nsent; i++) {
        const struct sent_ent *e = &r->sent[i];
        struct lconn *c = &r->c[e->slot];
        if (c->gen != e->gen)
            continue;
        c->last_sent_us = t;
        if (!e->pong_read_us)
            continue;
        uint64_t d = t > e->pong_read_us ? t - e->pong_read_us : 0;
        lh_record(&w->answer_us, d);
        if (d > LOAD_LATE_ANSWER_US) {
            CADD(w, late_answers, 1);
            c->flags |= CF_LATE;
        } else {
            c->flags &= (uint8_t)~CF_LATE;
        }
    }
    r->nsent = 0;
}

static int ring_flush(struct lworker *w, struct lring *r)
{
    uint64_t t = r->nsent ? now_us(w->L) : 0;
    while (io_uring_sq_ready(&r->ring) > 0) {
        int ret = io_uring_submit(&r->ring);
        CADD(w, submits, 1);
        if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) {
            /* completions backed up: let the loop reap them first */
            return ret;
        }
        if (ret < 0)
            return ret;
        if (ret == 0)
            return -EAGAIN;
    }
    /* MSG_DONTWAIT sends finished inside that enter: their bytes may be reused */
    r->tx_used = 0;
    stamp_sent(w, r, t);
    return 0;
}

/* Reserves n SQEs in a row (a link chain must not be split by a flush). */
static int ring_reserve(struct lworker *w, struct lring *r, unsigned n)
{
    if (io_uring_sq_space_left(&r->ring) >= n)
        return 0;
    int ret = ring_flush(w, r);
    if (ret < 0)
        return ret;
    return io_uring_sq_space_left(&r->ring) >= n ? 0 : -EBUSY;
}

static uint8_t *tx_alloc(struct lworker *w, struct lring *r, uint32_t len)
{
    if (r->tx_used + len > r->tx_cap) {
        if (ring_flush(w, r) < 0)
            return NULL;
    }
    uint8_t *p = r->tx + r->tx_used;
    r->tx_used += len;
    return p;
}

static int send_wire(struct lworker *w, struct lring *r, uint32_t slot, const uint8_t *frame,
                     uint32_t len, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    if (ring_reserve(w, r, 1) < 0)
        return -EBUSY;
    uint8_t *p = tx_alloc(w, r, len);
    if (!p)
        return -EBUSY;
    memcpy(p, frame, len);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_send(sqe, (int)slot, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = ud_make(OP_SEND, c->gen, slot);
    (void)now; /* the send time is the submit's (stamp_sent), not this queueing time */
    if (r->nsent < RING_ENTRIES)
        r->sent[r->nsent++] = (struct sent_ent){r->pong_read_us, slot, c->gen};
    return 0;
}

/* A frame: with --tls sealed in a record first (-EAGAIN while the handshake runs). */
static int send_bytes(struct lworker *w, struct lring *r, uint32_t slot, const uint8_t *frame,
                      uint32_t len, uint64_t now)
{
    uint8_t rec[TX_FRAME_MAX + 32];
    if (r->tls) {
        int n = ltls_seal(r->tls, slot, frame, len, rec, sizeof(rec));
        if (n < 0)
            return n;
        frame = rec;
        len = (uint32_t)n;
    }
    return send_wire(w, r, slot, frame, len, now);
}

/*
 * liburing 2.3 has no helper for IORING_OP_URING_CMD socket commands (kernel 6.7+), so the
 * SETSOCKOPT SQE is written by hand with the kernel's field layout: cmd_op at off[0:31], level at
 * addr[0:31], optname at addr[32:63], optlen in splice_fd_in, optval in addr3.
 */
#define RB_SOCKET_URING_OP_SETSOCKOPT 3u
static void prep_setsockopt(struct io_uring_sqe *sqe, int fd, int level, int optname,
                            const void *optval, uint32_t optlen)
{
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
    sqe->cmd_op = RB_SOCKET_URING_OP_SETSOCKOPT;
    sqe->addr = U64((uint32_t)level) | U64((uint32_t)optname) << 32;
    sqe->splice_fd_in = (int32_t)optlen;
    sqe->addr3 = (uint64_t)(uintptr_t)optval;
}

static const int one_int = 1;
static const struct linger linger_rst = {.l_onoff = 1, .l_linger = 0};

/* ---- protocol frames (engine/proto.c codec) ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The client id of connection number id (--client-ids). */
static int client_id_of(const struct load_cfg *cfg, uint32_t id, char out[RB_CLIENT_ID_MAX + 1])
{
    switch (cfg->client_ids) {
    case LOAD_IDS_NONE:
        out[0] = '\0';
        return 0;
    case LOAD_IDS_UUID: {
        uint64_t a = mix64(cfg->seed ^ (U64(id) << 1)), b = mix64(a ^ id);
        return snprintf(out, RB_CLIENT_ID_MAX + 1, "%08x-%04x-4%03x-%04x-%012llx",
                        (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
                        (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
                        (unsigned long long)(b & 0xffffffffffffull));
    }
    default:
        return snprintf(out, RB_CLIENT_ID_MAX + 1, "load-%u", id);
    }
}

static uint32_t frame_hello(uint8_t *out, const struct load_cfg *cfg, uint32_t id)
{
    char cid[RB_CLIENT_ID_MAX + 1], tok[RB_TOKEN_MAX + 1];
    int n = client_id_of(cfg, id, cid);
    struct rb__hello h = {.version = RB_PROTO_VERSION,
                          .mode = cfg->mode,
                          .interval_ms = cfg->interval_ms,
                          .timeout_ms = cfg->timeout_ms,
                          .client_id = (const uint8_t *)cid,
                          .client_id_len = (size_t)n};
    int tn = cfg->auth
                 ? rb_auth_mint(cfg->auth, cid, (size_t)n, cfg->token_expiry_s, tok, sizeof(tok))
                 : 0;
    if (tn > 0) {
        h.token = (const uint8_t *)tok;
        h.token_len = (size_t)tn;
    }
    return (uint32_t)rb__put_hello(out, &h);
}

static void rx_reset(struct lconn *c)
{
    c->rx_len = 0;
    if (c->flags & CF_WS_DEC)
        rb__ws_split_free(c->ws_split);
    else
        free(c->split);
    c->split = NULL;
    c->flags &= (uint8_t)~CF_WS_DEC;
}

/* The frames we send, in the protocol of the run (v1, or masked WebSocket frames). */
static uint32_t put_ping(const struct load_cfg *cfg, uint8_t *out, uint8_t type, uint64_t token)
{
    if (cfg->protocol == RB_PROTOCOL_WS)
        return lws_put_ping(out, type, token);
    return (uint32_t)rb__put_ping(out, type, token);
}

static uint32_t put_close(const struct load_cfg *cfg, uint8_t *out, uint16_t code)
{
    if (cfg->protocol == RB_PROTOCOL_WS)
        return lws_put_close(out, code);
    return (uint32_t)rb__put_close(out, code, NULL);
}

/* ---- connection lifecycle ---- */

static void arm_recv(struct lworker *w, struct lring *r, uint32_t slot)
{
    struct lconn *c = &r->c[slot];
    if (ring_reserve(w, r, 1) < 0)
        return; /* retried through the re-arm queue below */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_recv_multishot(sqe, (int)slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    sqe->user_data = ud_make(OP_RECV, c->gen, slot);
    c->flags |= CF_RECV;
}

static void rearm_enqueue(struct lring *r, uint32_t slot)
{
    struct lconn *c = &r->c[slot];
    if (c->flags & CF_REARM_Q)
        return;
    c->flags |= CF_REARM_Q;
    r->rearm[(r->rearm_head + r->rearm_len) % r->nslots] = slot;
    r->rearm_len++;
}

/* Up or given up. With --tls a connect stays "in flight" until here (handshake and WELCOME
 * included): --inflight then bounds the handshakes the server has to do at once, and a ramp
 * faster than the server's handshake rate queues in the load instead of timing out there. */
static void pending_leave(struct lworker *w, struct lring *r, struct lconn *c)
{
    if (c->flags & CF_WAS_PENDING) {
        c->flags &= (uint8_t)~CF_WAS_PENDING;
        CADD(w, pending_now, -1);
        if (r->tls)
            r->inflight--;
    }
}

/* Closes our side. rst: SO_LINGER 0 first, so close() sends RST. */
static void begin_close(struct lworker *w, struct lring *r, uint32_t slot, bool send_close1,
                        bool rst, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    if (c->state == CS_CLOSING || c->state == CS_DONE || c->state == CS_BACKOFF ||
        c->state == CS_IDLE)
        return;
    if (c->state == CS_UP)
        CADD(w, up_now, -1);
    pending_leave(w, r, c);
    c->state = CS_CLOSING;
    if (send_close1) {
        uint8_t f[LWS_FRAME_MAX];
        uint32_t n = put_close(w->L->cfg, f, RB_CLOSE_NORMAL);
        send_bytes(w, r, slot, f, n, now);
        uint8_t cn[32];
        int k = r->tls ? ltls_close_notify(r->tls, slot, cn) : 0;
        if (k > 0)
            send_wire(w, r, slot, cn, (uint32_t)k, now);
    }
    if (ring_reserve(w, r, 3) < 0) {
        /* cannot happen after a successful flush of an empty SQ; keep the slot closing */
        w->err = -EBUSY;
        return;
    }
    struct io_uring_sqe *sqe;
    if (rst) {
        if (w->L->linger_cmd) {
            sqe = io_uring_get_sqe(&r->ring);
            prep_setsockopt(sqe, (int)slot, SOL_SOCKET, SO_LINGER, &linger_rst, sizeof(linger_rst));
            sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
            sqe->user_data = ud_make(OP_LINGER, c->gen, slot);
        } else {
            /* without socket uring_cmd there is no RST on a direct descriptor: FIN instead */
            CADD(w, resets_fin_fallback, 1);
        }
    }
    /*
     * The multishot recv holds a file reference, so close_direct alone would not release the
     * socket: cancel it first. By user_data, the kernel finds it with one hash lookup; a cancel
     * by fd scans every armed request of the ring (quadratic in a mass teardown) and
     * shutdown() is punted to io-wq threads. -ENOENT (recv not armed) is fine: hardlinked.
     */
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_cancel64(sqe, ud_make(OP_RECV, c->gen, slot), 0);
    sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = ud_make(OP_CANCEL, c->gen, slot);
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_close_direct(sqe, slot);
    sqe->user_data = ud_make(OP_CLOSE, c->gen, slot);
}

static void heap_push(struct lring *r, uint64_t due, uint32_t slot)
{
    uint32_t i = r->heap_len++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (r->heap[p].due_us <= due)
            break;
        r->heap[i] = r->heap[p];
        i = p;
    }
    r->heap[i] = (struct heap_ent){due, slot};
}

static void heap_pop(struct lring *r)
{
    struct heap_ent last = r->heap[--r->heap_len];
    uint32_t i = 0, n = r->heap_len;
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l >= n)
            break;
        m = l;
        if (l + 1 < n && r->heap[l + 1].due_us < r->heap[l].due_us)
            m = l + 1;
        if (r->heap[m].due_us >= last.due_us)
            break;
        r->heap[i] = r->heap[m];
        i = m;
    }
    if (n)
        r->heap[i] = last;
}

/* The close completed: the slot is free. Reconnect later, or rest. */
static void finish_close(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    const struct load_cfg *cfg = w->L->cfg;
    r->active--;
    c->gen++;
    c->flags &= (uint8_t)~CF_LIFETIME;
    rx_reset(c);
    if (r->tls)
        ltls_reset(r->tls, slot);
    int phase = LD(&w->L->phase);
    if (cfg->reconnect && phase == PH_RUN && !(c->flags & CF_SILENT) && r->heap) {
        uint64_t d = BACKOFF_BASE_US << (c->attempts < 16 ? c->attempts : 16);
        if (d > BACKOFF_CAP_US)
            d = BACKOFF_CAP_US;
        /* jitter after the cap, so capped retries do not march in step */
        d += rng_next(&r->rng) % (d / 2 + 1);
        if (c->attempts < 255)
            c->attempts++;
        c->state = CS_BACKOFF;
        c->t_us = now + d;
        heap_push(r, c->t_us, slot);
    } else {
        c->state = CS_DONE;
    }
}

static void launch(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    struct load *L = w->L;
    struct lconn *c = &r->c[slot];
    const struct sockaddr_in *dst = &L->cfg->targets[c->id % L->cfg->target_count];
    struct io_uring_sqe *sqe;

    c->state = CS_CONNECTING;
    c->t_us = now;
    c->flags |= CF_WAS_PENDING;
    r->inflight++;
    r->active++;
    CADD(w, pending_now, 1);
    CADD(w, attempts, 1);
    if (!w->cnt.first_attempt_us)
        CSET(w, first_attempt_us, now ? now : 1);

    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_socket_direct(sqe, AF_INET, SOCK_STREAM, 0, slot, 0);
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = ud_make(OP_SOCKET, c->gen, slot);
    if (L->linger_cmd) {
        /* heartbeats are single small frames: Nagle would only delay them */
        sqe = io_uring_get_sqe(&r->ring);
        prep_setsockopt(sqe, (int)slot, IPPROTO_TCP, TCP_NODELAY, &one_int, sizeof(one_int));
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = ud_make(OP_NODELAY, c->gen, slot);
    }
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_connect(sqe, (int)slot, (const struct sockaddr *)dst, sizeof(*dst));
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
    sqe->user_data = ud_make(OP_CONNECT, c->gen, slot);
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_link_timeout(sqe, &r->connect_ts, 0);
    sqe->user_data = ud_make(OP_LTIMEOUT, c->gen, slot);
}

/* The peer ended the connection (CLOSE frame, FIN or error). */
static void peer_closed(struct lworker *w, struct lring *r, uint32_t slot, int code, bool eof,
                        uint64_t now)
{
    struct lconn *c = &r->c[slot];
    if (c->state != CS_UP && c->state != CS_HELLO)
        return;
    if (code > 0)
        CADD(w, closes_by_code[code < LOAD_CODES ? code : 0], 1);
    else if (eof)
        CADD(w, closed_eof, 1);
    else
        CADD(w, closed_reset, 1);
    if (c->flags & CF_SILENT) {
        CADD(w, detected, 1);
        uint64_t deadline = c->last_sent_us + U64(c->timeout_ms) * 1000;
        if (now >= deadline) {
            lh_record(&w->late_us, now - deadline);
        } else {
            CADD(w, detected_early, 1);
            if (deadline - now > w->cnt.early_max_us)
                CSET(w, early_max_us, deadline - now);
            lh_record(&w->late_us, 0);
        }
    } else if (LD(&w->L->phase) != PH_STOP && code != RB_CLOSE_FULL && code != RB_CLOSE_SHUTDOWN) {
        /* A server that is full or shutting down says so; only a healthy peer declared dead
         * (or dropped without a word) is a false death. Unless we caused it: our last answer
         * went out late, or by our own clock we sent nothing for a whole timeout. */
        uint64_t tmo_us = U64(c->timeout_ms) * 1000;
        bool ours = (c->flags & CF_LATE) ||
                    (tmo_us && now > c->last_sent_us && now - c->last_sent_us >= tmo_us);
        if (ours)
            CADD(w, self_inflicted, 1);
        else
            CADD(w, false_deaths, 1);
    }
    begin_close(w, r, slot, false, false, now);
}

static void protocol_error(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    CADD(w, protocol_errors, 1);
    struct lconn *c = &r->c[slot];
    if (c->state == CS_UP || c->state == CS_HELLO) {
        uint8_t f[LWS_FRAME_MAX];
        uint32_t n = put_close(w->L->cfg, f, RB_CLOSE_PROTOCOL);
        send_bytes(w, r, slot, f, n, now);
    }
    begin_close(w, r, slot, false, false, now);
}

/* One complete frame (payload may be truncated to what fits in rx for long CLOSE/DATA). */
static void handle_frame(struct lworker *w, struct lring *r, uint32_t slot, uint8_t type,
                         const uint8_t *p, uint32_t avail, uint32_t plen, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    const struct load_cfg *cfg = w->L->cfg;
    switch (type) {
    case RB_FRAME_WELCOME: {
        struct rb__welcome wel;
        if (c->state != CS_HELLO || rb__welcome_parse(p, avail, &wel) < 0) {
            protocol_error(w, r, slot, now);
            return;
        }
        uint32_t timeout_ms = wel.timeout_ms;
        c->timeout_ms = timeout_ms;
        if (timeout_ms > w->cnt.timeout_ms_max)
            CSET(w, timeout_ms_max, timeout_ms);
        c->state = CS_UP;
        c->t_us = now;
        c->attempts = 0;
        pending_leave(w, r, c);
        CADD(w, up_now, 1);
        if (c->flags & CF_EVER_UP) {
            CADD(w, reconnected, 1);
        } else {
            c->flags |= CF_EVER_UP;
            CADD(w, established, 1);
            CSET(w, last_established_us, now);
        }
        return;
    }
    case RB_FRAME_PING: {
        CADD(w, pings_received, 1);
        if (c->state != CS_UP || (c->flags & CF_SILENT))
            return;
        uint8_t f[16];
        uint32_t n = put_ping(cfg, f, RB_FRAME_PONG, rb__get_u64(p));
        r->pong_read_us = now ? now : 1;
        if (send_bytes(w, r, slot, f, n, now) == 0)
            CADD(w, pongs_sent, 1);
        r->pong_read_us = 0;
        return;
    }
    case RB_FRAME_PONG: {
        CADD(w, pongs_received, 1);
        uint64_t token = rb__get_u64(p);
        uint64_t sched = token >> 24;
        if ((token & 0xffffff) != slot || sched > now || cfg->mode != RB_MODE_CLIENT) {
            CADD(w, pong_unmatched, 1);
            return;
        }
        lh_record(&w->rtt_us, now - sched);
        return;
    }
    case RB_FRAME_CLOSE: {
        uint16_t code = rb__get_u16(p);
        const uint8_t *reason;
        size_t reason_len;
        /* a reason longer than rx keeps was cut: only its code is known, and enough */
        if (avail == plen && rb__close_parse(p, avail, &code, &reason, &reason_len) < 0) {
            protocol_error(w, r, slot, now);
            return;
        }
        peer_closed(w, r, slot, code ? code : RB_CLOSE_REASON_MAX, false, now);
        return;
    }
    case RB_FRAME_DATA:
        CADD(w, data_received, 1);
        return;
    default:
        protocol_error(w, r, slot, now);
        return;
    }
}

struct feed_ctx {
    struct lworker *w;
    struct lring *r;
    uint32_t slot;
    uint64_t now;
};

static struct rb__v1_split **feed_slot(void *ctx, bool create)
{
    struct feed_ctx *f = ctx;
    (void)create; /* the slot lives in the connection itself */
    return &f->r->c[f->slot].split;
}

/* One frame from the server; stops the decoder (1) once the connection is closing. */
static int feed_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload)
{
    struct feed_ctx *f = ctx;
    if (h->type == RB_FRAME_HELLO) { /* only clients send it */
        protocol_error(f->w, f->r, f->slot, f->now);
        return 1;
    }
    handle_frame(f->w, f->r, f->slot, h->type, payload, h->len, h->len, f->now);
    uint8_t st = f->r->c[f->slot].state;
    return st == CS_UP || st == CS_HELLO ? 0 : 1;
}

/* Splits received bytes into frames with the engine's own v1 decoder. */
static void feed(struct lworker *w, struct lring *r, uint32_t slot, uint8_t *d, uint32_t len,
                 uint64_t now)
{
    struct lconn *c = &r->c[slot];
    struct feed_ctx f = {.w = w, .r = r, .slot = slot, .now = now};
    if (w->L->cfg->protocol == RB_PROTOCOL_WS) {
        const struct lws_conn lc = {.flags = &c->flags,
                                    .flag_dec = CF_WS_DEC,
                                    .head = &c->split,
                                    .dec = &c->ws_split,
                                    .handshaking = c->state == CS_HELLO,
                                    .id = c->id,
                                    .nonce = c->gen,
                                    .mode = w->L->cfg->mode,
                                    .frame = feed_frame,
                                    .ctx = &f};
        if (lws_feed(&lc, d, len) < 0)
            protocol_error(w, r, slot, now);
        return;
    }
    const struct rb__v1_rx rx = {.inl_len = &c->rx_len,
                                 .inl = c->rx,
                                 .inl_cap = RXCAP,
                                 .max_frame = UINT16_MAX,
                                 .slot = feed_slot,
                                 .frame = feed_frame,
                                 .ctx = &f};
    int rc = rb__v1_feed(&rx, d, len);
    if (rc < 0)
        protocol_error(w, r, slot, now); /* a header v1 does not allow, or no memory */
}

static void send_hello(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    uint8_t f[LWS_REQUEST_MAX];
    const struct load_cfg *cfg = w->L->cfg;
    const struct lconn *c = &r->c[slot];
    uint32_t n = cfg->protocol == RB_PROTOCOL_WS
                     ? lws_request(f, sizeof(f), cfg, c->id, c->gen,
                                   &cfg->targets[c->id % cfg->target_count])
                     : frame_hello(f, cfg, c->id);
    send_bytes(w, r, slot, f, n, now);
}

/* ---- --tls: the transport under v1 (load_tls.c) ---- */

struct tls_cb {
    struct lworker *w;
    struct lring *r;
    uint32_t slot;
    uint64_t now;
};

static int tls_wire(void *x, const uint8_t *p, size_t n)
{
    struct tls_cb *t = x;
    return send_wire(t->w, t->r, t->slot, p, (uint32_t)n, t->now);
}

static int tls_plain(void *x, uint8_t *p, size_t n)
{
    struct tls_cb *t = x;
    feed(t->w, t->r, t->slot, p, (uint32_t)n, t->now);
    uint8_t st = t->r->c[t->slot].state;
    return st == CS_UP || st == CS_HELLO ? 0 : 1;
}

static void tls_up(void *x)
{
    struct tls_cb *t = x;
    send_hello(t->w, t->r, t->slot, t->now);
}

/* Received bytes: straight to the v1 decoder, or through TLS first. */
static void rx_bytes(struct lworker *w, struct lring *r, uint32_t slot, uint8_t *d, uint32_t len,
                     uint64_t now)
{
    if (!r->tls) {
        feed(w, r, slot, d, len, now);
        return;
    }
    struct tls_cb t = {.w = w, .r = r, .slot = slot, .now = now};
    const struct ltls_io io = {.ctx = &t, .wire = tls_wire, .plain = tls_plain, .up = tls_up};
    switch (ltls_input(r->tls, slot, d, len, &io)) {
    case LTLS_OK:
    case LTLS_STOPPED:
        return;
    case LTLS_CLOSED:
        peer_closed(w, r, slot, 0, true, now);
        return;
    case LTLS_HS_FAILED:
        CADD(w, connect_failures, 1);
        begin_close(w, r, slot, false, false, now);
        return;
    default:
        protocol_error(w, r, slot, now);
        return;
    }
}

static void handle_cqe(struct lworker *w, struct lring *r, const struct io_uring_cqe *cqe,
                       uint64_t now)
{
    uint64_t ud = cqe->user_data;
    enum op op = (enum op)(ud >> 56);
    uint8_t gen = (uint8_t)(ud >> 32);
    uint32_t slot = (uint32_t)ud;
    int res = cqe->res;

    if (op == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER)) {
        /* process then recycle the buffer at once: buffers are the scarce resource */
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        uint8_t *buf = r->bufs + (size_t)bid * w->L->cfg->buffer_size;
        if (slot < r->nslots && r->c[slot].gen == gen && res > 0 &&
            (r->c[slot].state == CS_UP || r->c[slot].state == CS_HELLO))
            rx_bytes(w, r, slot, buf, (uint32_t)res, now);
        io_uring_buf_ring_add(r->br, buf, w->L->cfg->buffer_size, (unsigned short)bid,
                              io_uring_buf_ring_mask(w->L->cfg->buffers), 0);
        io_uring_buf_ring_advance(r->br, 1);
        r->bufs_back++;
    }
    if (slot >= r->nslots)
        return;
    struct lconn *c = &r->c[slot];
    if (c->gen != gen)
        return; /* a completion of an earlier life of this slot */

    switch (op) {
    case OP_SOCKET:
    case OP_NODELAY:
    case OP_LTIMEOUT:
    case OP_CANCEL:
    case OP_LINGER:
        return; /* failures show up on the connect or close that follows */
    case OP_CONNECT:
        if (!r->tls)
            r->inflight--; /* with --tls: in pending_leave() */
        if (c->state != CS_CONNECTING)
            return;
        if (res < 0) {
            CADD(w, connect_failures, 1);
            CSET(w, last_connect_errno, -res);
            begin_close(w, r, slot, false, false, now);
            return;
        }
        if (LD(&w->L->phase) == PH_STOP) {
            begin_close(w, r, slot, false, false, now);
            return;
        }
        c->state = CS_HELLO;
        c->t_us = now;
        rx_reset(c);
        if (r->tls) { /* the ClientHello now, the HELLO once the handshake is done */
            struct tls_cb t = {.w = w, .r = r, .slot = slot, .now = now};
            const struct ltls_io io = {.ctx = &t, .wire = tls_wire};
            if (ltls_start(r->tls, slot, &io) < 0) {
                CADD(w, connect_failures, 1);
                begin_close(w, r, slot, false, false, now);
                return;
            }
        } else {
            send_hello(w, r, slot, now);
        }
        arm_recv(w, r, slot);
        return;
    case OP_SEND:
        /* A PING can race the server's CLOSE: the CLOSE frame may still wait in our receive
         * queue (behind a re-arm), so how the peer closed is left to the receive side. */
        if (res < 0 && (c->state == CS_UP || c->state == CS_HELLO))
            CADD(w, send_errors, 1);
        return;
    case OP_RECV:
        if (cqe->flags & IORING_CQE_F_MORE)
            return;
        c->flags &= (uint8_t)~CF_RECV;
        if (c->state != CS_UP && c->state != CS_HELLO)
            return;
        if (res == 0) {
            peer_closed(w, r, slot, 0, true, now);
        } else if (res == -ENOBUFS) {
            CADD(w, enobufs, 1);
            rearm_enqueue(r, slot);
        } else if (res < 0 && res != -ECANCELED) {
            peer_closed(w, r, slot, 0, false, now);
        } else {
            /* the multishot ended with data (e.g. CQ pressure): keep reading */
            rearm_enqueue(r, slot);
        }
        return;
    case OP_CLOSE:
        if (c->state == CS_CLOSING)
            finish_close(w, r, slot, now);
        return;
    }
}

/* ---- per-turn work ---- */

/* Does the generator send the PINGs in this mode (client, silent), or only answer them? */
static bool load_pings(const struct load_cfg *cfg)
{
    return cfg->mode == RB_MODE_CLIENT || cfg->mode == RB_MODE_SILENT;
}

static void visit(struct lworker *w, struct lring *r, uint32_t slot, uint64_t sched, uint64_t now)
{
    struct load *L = w->L;
    const struct load_cfg *cfg = L->cfg;
    struct lconn *c = &r->c[slot];
    int phase = LD(&L->phase);
    if (c->state == CS_HELLO && now - c->t_us > cfg->connect_timeout_us) {
        CADD(w, welcome_timeouts, 1);
        CADD(w, connect_failures, 1);
        begin_close(w, r, slot, false, false, now);
        return;
    }
    /*
     * A connection waiting for its WELCOME already PINGs: the server's liveness clock runs from
     * our HELLO, so a WELCOME we read late must not push the first PING past its timeout.
     */
    if ((c->state != CS_UP && c->state != CS_HELLO) || (c->flags & CF_SILENT))
        return;
    if (c->state == CS_UP && phase == PH_RUN && is_silenced_member(L, c->id) &&
        now >= c->t_us + cfg->silent_after_us) {
        c->flags |= CF_SILENT;
        CADD(w, silenced, 1);
        return;
    }
    if (c->state == CS_UP && phase == PH_RUN && !(c->flags & CF_RESET_DONE) &&
        is_reset_member(L, c->id) && now >= c->t_us + cfg->reset_after_us) {
        c->flags |= CF_RESET_DONE;
        CADD(w, resets, 1);
        begin_close(w, r, slot, false, true, now);
        return;
    }
    if (load_pings(cfg)) {
        uint8_t f[16];
        uint32_t n = put_ping(cfg, f, RB_FRAME_PING, sched << 24 | slot);
        if (send_bytes(w, r, slot, f, n, now) == 0) {
            CADD(w, pings_sent, 1);
            lh_record(&w->lag_us, now - sched);
        }
    }
}

static uint64_t phase_time(const struct lring *r, uint64_t interval_us, uint64_t cycle, uint32_t i)
{
    /* order[] was built so that phase(i) = i * share + jitter < (i + 1) * share */
    uint64_t base = cycle * interval_us + U64(i) * interval_us / r->nslots;
    uint64_t span = interval_us / r->nslots;
    return base + (span ? (U64(r->order[i]) * 2654435761u) % span : 0);
}

static uint64_t walk(struct lworker *w, struct lring *r, uint64_t now)
{
    uint64_t iv = w->L->interval_us;
    for (uint32_t budget = 4 * RING_ENTRIES; budget; budget--) {
        uint64_t t = phase_time(r, iv, r->cycle, r->cursor);
        if (t > now)
            return t;
        visit(w, r, r->order[r->cursor], t, now);
        if (++r->cursor == r->nslots) {
            r->cursor = 0;
            r->cycle++;
        }
    }
    return now; /* more due: come back at once */
}

static void do_rearms(struct lworker *w, struct lring *r)
{
    uint32_t budget = r->bufs_back > REARM_MIN ? r->bufs_back : REARM_MIN;
    r->bufs_back = 0;
    while (r->rearm_len && budget) {
        uint32_t slot = r->rearm[r->rearm_head];
        r->rearm_head = (r->rearm_head + 1) % r->nslots;
        r->rearm_len--;
        struct lconn *c = &r->c[slot];
        c->flags &= (uint8_t)~CF_REARM_Q;
        if ((c->state == CS_UP || c->state == CS_HELLO) && !(c->flags & CF_RECV)) {
            arm_recv(w, r, slot);
            CADD(w, rearms, 1);
            budget--;
        }
    }
}

static uint64_t do_backoffs(struct lworker *w, struct lring *r, uint64_t now)
{
    while (r->heap_len) {
        struct heap_ent top = r->heap[0];
        if (top.due_us > now)
            return top.due_us;
        if (r->inflight >= w->L->cfg->inflight_per_ring || ring_reserve(w, r, 4) < 0)
            return now + 1000;
        heap_pop(r);
        struct lconn *c = &r->c[top.slot];
        if (c->state != CS_BACKOFF || c->t_us != top.due_us)
            continue;
        launch(w, r, top.slot, now);
    }
    return UINT64_MAX;
}

/* Initial connects, paced to this worker's share of --rate. */
static uint64_t do_ramp(struct lworker *w, uint64_t now)
{
    const struct load_cfg *cfg = w->L->cfg;
    if (w->launched >= w->nconns)
        return UINT64_MAX;
    double rate = cfg->rate_per_s / cfg->workers;
    uint64_t target = (uint64_t)((double)now * rate / 1e6) + 1;
    if (target > w->nconns)
        target = w->nconns;
    while (w->launched < target) {
        uint32_t j = w->launched;
        struct lring *r = &w->rings[j % w->nrings];
        if (r->inflight >= cfg->inflight_per_ring || ring_reserve(w, r, 4) < 0)
            return now + 1000;
        launch(w, r, j / w->nrings, now);
        w->launched++;
    }
    if (w->launched >= w->nconns)
        return UINT64_MAX;
    uint64_t next = (uint64_t)((double)(w->launched) * 1e6 / rate);
    return next > now ? next : now + 100;
}

/* Shutdown: close everything open, a bounded batch per ring per turn. */
static void do_close_all(struct lworker *w, struct lring *r, uint64_t now)
{
    uint32_t budget = CLOSE_BATCH;
    while (r->close_cursor < r->nslots && budget) {
        uint32_t slot = r->close_cursor;
        struct lconn *c = &r->c[slot];
        if (c->state == CS_UP || c->state == CS_HELLO) {
            begin_close(w, r, slot,
                        w->L->cfg->close_frame && c->state == CS_UP && !(c->flags & CF_SILENT),
                        false, now);
            budget--;
        } else if (c->state == CS_BACKOFF || c->state == CS_IDLE) {
            c->state = CS_DONE;
        }
        r->close_cursor++;
    }
    r->heap_len = 0;
}

static void reap(struct lworker *w, struct lring *r)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
        CADD(w, cq_overflow, 1);
        io_uring_get_events(&r->ring);
    }
    /* One clock read per batch of 64: a completion's time within a few us, no clock storm. */
    uint64_t now = now_us(w->L);
    io_uring_for_each_cqe(&r->ring, head, cqe)
    {
        handle_cqe(w, r, cqe, now);
        if (++n % 64 == 0)
            now = now_us(w->L);
    }
    io_uring_cq_advance(&r->ring, n);
}

/* Completions to post (deferred work, an overflow) or to reap on this ring? */
static bool ring_has_work(struct lring *r)
{
    unsigned f = IO_URING_READ_ONCE(*r->ring.sq.kflags);
    return (f & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) || io_uring_cq_ready(&r->ring) > 0;
}

/* A mode where nobody waits for our PINGs (server mode: the server PINGs) walks the
 * connections only for its own events (WELCOME timeouts, silencing, resets): once none is
 * left, a heartbeat costs the generator no visit at all. */
static bool walk_needed(const struct lworker *w)
{
    const struct load_cfg *cfg = w->L->cfg;
    if (load_pings(cfg) || cfg->reconnect || w->launched < w->nconns)
        return true;
    return w->cnt.pending_now > 0 || w->cnt.silenced < w->silent_members ||
           w->cnt.resets < w->reset_members;
}

static void sleep_us(uint64_t d)
{
    struct timespec ts = {.tv_sec = (time_t)(d / 1000000), .tv_nsec = (long)(d % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* liburing 2.3 declares io_uring_enable_rings but its library lacks it: the register call. */
static int ring_enable(struct io_uring *ring)
{
    long ret =
        syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return ret < 0 ? -errno : 0;
}

static void *worker_main(void *arg)
{
    struct lworker *w = arg;
    struct load *L = w->L;
    const uint64_t turn_us = L->cfg->turn_us;
    uint64_t stop_at = 0, due = 0; /* due: when this turn should have begun, at the latest */
    for (unsigned i = 0; i < w->nrings; i++) {
        int er = w->rings[i].disabled ? ring_enable(&w->rings[i].ring) : 0;
        if (er < 0) {
            w->err = er;
            goto out;
        }
    }
    for (;;) {
        uint64_t start = now_us(L);
        if (due)
            lh_record(&w->loop_us, start > due ? start - due : 0);
        CADD(w, turns, 1);
        for (unsigned i = 0; i < w->nrings; i++) {
            struct lring *r = &w->rings[i];
            /* DEFER_TASKRUN: the kernel posts this ring's completions when we ask, here */
            if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN) {
                io_uring_get_events(&r->ring);
                CADD(w, submits, 1);
            }
            reap(w, r);
        }
        uint64_t now = now_us(L);
        int phase = LD(&L->phase);
        uint64_t next = now + 50000; /* re-check the phase at least this often */
        if (phase == PH_STOP) {
            if (!stop_at)
                stop_at = now;
            next = now + 5000;
        } else {
            uint64_t t = do_ramp(w, now);
            if (t < next)
                next = t;
        }
        bool walking = phase != PH_STOP && walk_needed(w);
        uint32_t open = 0;
        for (unsigned i = 0; i < w->nrings; i++) {
            struct lring *r = &w->rings[i];
            do_rearms(w, r);
            if (phase == PH_STOP) {
                do_close_all(w, r, now);
            } else {
                uint64_t t = walking ? walk(w, r, now) : UINT64_MAX;
                if (t < next)
                    next = t;
                t = do_backoffs(w, r, now);
                if (t < next)
                    next = t;
            }
            if (r->rearm_len && now + 1000 < next)
                next = now + 1000;
            int ret = ring_flush(w, r);
            if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) {
                w->err = ret;
                goto out;
            }
            if (ret < 0)
                next = now;
            open += r->active;
        }
        if (w->launched >= w->nconns && LD(&w->cnt.pending_now) == 0)
            __atomic_store_n(&w->ramp_done, 1, __ATOMIC_RELAXED);
        if (phase == PH_STOP) {
            bool closed_all = true;
            for (unsigned i = 0; i < w->nrings && closed_all; i++)
                closed_all = w->rings[i].close_cursor >= w->rings[i].nslots;
            if ((closed_all && open == 0) ||
                now - stop_at > DRAIN_BASE_US + DRAIN_PER_CONN_US * w->nconns)
                break;
        }
        /*
         * The next turn begins no earlier than --turn after this one began, so completions
         * gather into batches; when nothing is due it waits for the first completion (the
         * eventfd) or the next deadline, whichever comes first.
         */
        uint64_t earliest = start + turn_us;
        now = now_us(L);
        if (earliest > now)
            sleep_us(earliest - now);
        bool ready = next <= earliest;
        for (unsigned i = 0; i < w->nrings && !ready; i++)
            ready = ring_has_work(&w->rings[i]);
        if (ready) {
            due = earliest;
            continue;
        }
        uint64_t v;
        if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
            break;
        for (unsigned i = 0; i < w->nrings && !ready; i++)
            ready = ring_has_work(&w->rings[i]);
        now = now_us(L);
        if (ready || next <= now) {
            due = ready ? earliest : next;
            continue;
        }
        uint64_t d = next - now;
        struct timespec ts = {.tv_sec = (time_t)(d / 1000000),
                              .tv_nsec = (long)(d % 1000000) * 1000};
        struct pollfd pfd = {.fd = w->efd, .events = POLLIN};
        ppoll(&pfd, 1, &ts, NULL);
        due = next; /* due by then at the latest: woken earlier by I/O counts as no lag */
    }
out:
    __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- setup ---- */

static int ring_setup(struct load *L, struct lworker *w, struct lring *r, uint32_t ridx)
{
    const struct load_cfg *cfg = L->cfg;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /*
     * SINGLE_ISSUER | DEFER_TASKRUN: completions wait for the worker to ask (no interruption
     * of its sleep per completion); the ring is enabled by the worker thread, its one issuer.
     * Older kernels: COOP_TASKRUN, then plain rings.
     */
    static const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                         IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED,
                                     IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0};
    int ret = -EINVAL;
    for (unsigned k = 0; k < sizeof(tries) / sizeof(tries[0]) && ret == -EINVAL; k++) {
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | tries[k];
        p.cq_entries = CQ_ENTRIES;
        ret = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
        r->disabled = ret == 0 && (tries[k] & IORING_SETUP_R_DISABLED);
    }
    if (ret < 0)
        return ret;
    r->ring_ok = true;
    ret = io_uring_register_files_sparse(&r->ring, r->nslots);
    if (ret < 0)
        return ret;
    ret = io_uring_register_eventfd(&r->ring, w->efd);
    if (ret < 0)
        return ret;

    r->br_bytes = (size_t)cfg->buffers * sizeof(struct io_uring_buf);
    r->br = mmap(NULL, r->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->br == MAP_FAILED) {
        r->br = NULL;
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)r->br, .ring_entries = cfg->buffers, .bgid = 0};
    ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (ret < 0)
        return ret;
    r->br_ok = true;
    io_uring_buf_ring_init(r->br);
    r->bufs = malloc((size_t)cfg->buffers * cfg->buffer_size);
    if (!r->bufs)
        return -ENOMEM;
    int mask = io_uring_buf_ring_mask(cfg->buffers);
    for (uint32_t i = 0; i < cfg->buffers; i++)
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * cfg->buffer_size, cfg->buffer_size,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(r->br, (int)cfg->buffers);

    r->c = calloc(r->nslots, sizeof(*r->c));
    r->order = malloc(sizeof(uint32_t) * r->nslots);
    r->rearm = malloc(sizeof(uint32_t) * r->nslots);
    r->sent = malloc(sizeof(*r->sent) * RING_ENTRIES);
    r->tx_cap = RING_ENTRIES * TX_FRAME_MAX;
    r->tx = malloc(r->tx_cap);
    if (cfg->reconnect)
        r->heap = malloc(sizeof(*r->heap) * r->nslots);
    if (!r->c || !r->order || !r->rearm || !r->sent || !r->tx || (cfg->reconnect && !r->heap))
        return -ENOMEM;
    r->rng = cfg->seed ^ (U64(w->idx) << 32 | ridx) * 0x9e3779b97f4a7c15ull;
    for (uint32_t s = 0; s < r->nslots; s++) {
        uint32_t j = s * w->nrings + ridx;
        r->c[s].id = j * cfg->workers + w->idx;
        r->order[s] = s;
        w->silent_members += is_silenced_member(L, r->c[s].id);
        w->reset_members += is_reset_member(L, r->c[s].id);
    }
    /* shuffled phase order: neighbours in the table do not ping together */
    for (uint32_t s = r->nslots; s > 1; s--) {
        uint32_t k = (uint32_t)(rng_next(&r->rng) % s);
        uint32_t t = r->order[s - 1];
        r->order[s - 1] = r->order[k];
        r->order[k] = t;
    }
    r->ridx = ridx;
    if (L->tls && (ret = ltls_ring_new(L->tls, r->nslots, &r->tls)) < 0)
        return ret;
    r->connect_ts.tv_sec = (long long)(cfg->connect_timeout_us / 1000000);
    r->connect_ts.tv_nsec = (long long)(cfg->connect_timeout_us % 1000000) * 1000;
    return 0;
}

static void ring_teardown(struct lring *r)
{
    if (r->br_ok)
        io_uring_unregister_buf_ring(&r->ring, 0);
    if (r->ring_ok)
        io_uring_queue_exit(&r->ring);
    if (r->br)
        munmap(r->br, r->br_bytes);
    free(r->bufs);
    for (uint32_t i = 0; r->c && i < r->nslots; i++)
        rx_reset(&r->c[i]);
    free(r->c);
    free(r->order);
    free(r->rearm);
    free(r->sent);
    free(r->tx);
    free(r->heap);
    ltls_ring_free(r->tls);
}

/* Is SO_LINGER through IORING_OP_URING_CMD available (kernel 6.7+)? */
static bool probe_setsockopt_cmd(void)
{
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) < 0)
        return false;
    bool ok = false;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        prep_setsockopt(sqe, fd, SOL_SOCKET, SO_LINGER, &linger_rst, sizeof(linger_rst));
        struct io_uring_cqe *cqe;
        if (io_uring_submit(&ring) == 1 && io_uring_wait_cqe(&ring, &cqe) == 0) {
            if (cqe->res == 0) {
                struct linger lg;
                socklen_t len = sizeof(lg);
                ok = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff == 1 &&
                     lg.l_linger == 0;
            }
            io_uring_cqe_seen(&ring, cqe);
        }
        close(fd);
    }
    io_uring_queue_exit(&ring);
    return ok;
}

static void sum_counters(struct load_counters *dst, const struct load_counters *src)
{
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    size_t n = sizeof(*src) / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = LD(&s[i]);
        if (&d[i] == &dst->first_attempt_us) {
            if (v && (!d[i] || v < d[i]))
                d[i] = v;
        } else if (&d[i] == &dst->last_established_us || &d[i] == &dst->timeout_ms_max ||
                   &d[i] == &dst->last_connect_errno || &d[i] == &dst->early_max_us) {
            if (v > d[i])
                d[i] = v;
        } else {
            d[i] += v;
        }
    }
}

static void read_rss(uint64_t *rss_kb, uint64_t *hwm_kb)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu", &v) == 1)
            *rss_kb = v;
        else if (sscanf(line, "VmHWM: %llu", &v) == 1)
            *hwm_kb = v;
    }
    fclose(f);
}

static void live_line(struct load *L, uint64_t now, struct load_counters *prev,
                      struct lhist *prev_h, struct lhist *cur_h)
{
    struct load_counters t;
    memset(&t, 0, sizeof(t));
    lh_reset(cur_h);
    for (unsigned i = 0; i < L->cfg->workers; i++) {
        sum_counters(&t, &L->w[i].cnt);
        lh_merge(cur_h, &L->w[i].rtt_us);
    }
    struct lhist win;
    lh_diff(&win, cur_h, prev_h);
    char codes[160];
    int off = 0;
    for (unsigned k = 0; k < LOAD_CODES; k++)
        if (t.closes_by_code[k])
            off += snprintf(codes + off, sizeof(codes) - (size_t)off, "%s%u:%llu", off ? "," : "",
                            k, (unsigned long long)t.closes_by_code[k]);
    if (!off)
        snprintf(codes, sizeof(codes), "-");
    fprintf(stderr,
            "[%7.1fs] up=%llu connecting=%llu failed=%llu pings/s=%llu pongs/s=%llu "
            "rtt_p50=%lluus rtt_p99=%lluus closes=%s eof=%llu rst=%llu silenced=%llu "
            "detected=%llu false_deaths=%llu late_answers=%llu self_inflicted=%llu\n",
            (double)now / 1e6, (unsigned long long)t.up_now, (unsigned long long)t.pending_now,
            (unsigned long long)t.connect_failures,
            (unsigned long long)(t.pings_sent + t.pings_received - prev->pings_sent -
                                 prev->pings_received),
            (unsigned long long)(t.pongs_received + t.pongs_sent - prev->pongs_received -
                                 prev->pongs_sent),
            (unsigned long long)lh_percentile(&win, 50),
            (unsigned long long)lh_percentile(&win, 99), codes, (unsigned long long)t.closed_eof,
            (unsigned long long)t.closed_reset, (unsigned long long)t.silenced,
            (unsigned long long)t.detected, (unsigned long long)t.false_deaths,
            (unsigned long long)t.late_answers, (unsigned long long)t.self_inflicted);
    *prev = t;
    memcpy(prev_h, cur_h, sizeof(*prev_h));
}

int load_run(const struct load_cfg *cfg, struct load_result *res)
{
    struct load L;
    memset(&L, 0, sizeof(L));
    memset(res, 0, sizeof(*res));
    L.cfg = cfg;
    L.interval_us = U64(cfg->interval_ms ? cfg->interval_ms : 1000) * 1000;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    /* a ring's table may not exceed RLIMIT_NOFILE; keep a margin for our own fds */
    uint64_t spr_max = rl.rlim_cur > 2000 ? rl.rlim_cur - 1000 : rl.rlim_cur / 2;
    uint32_t spr = cfg->slots_per_ring ? cfg->slots_per_ring : (uint32_t)spr_max;
    if (spr > spr_max)
        spr = (uint32_t)spr_max;
    if (spr < 1)
        return -EMFILE;
    L.slots_per_ring = spr;
    L.linger_cmd = probe_setsockopt_cmd();
    if (cfg->tls) {
        int tr = ltls_global_init(cfg->tls_resume, cfg->tls_ciphersuites, &L.tls);
        if (tr < 0)
            return tr;
    }
    res->setsockopt_cmd = L.linger_cmd;

    L.w = calloc(cfg->workers, sizeof(*L.w));
    struct lhist *h_prev = calloc(1, sizeof(struct lhist));
    struct lhist *h_cur = calloc(1, sizeof(struct lhist));
    if (!L.w || !h_prev || !h_cur) {
        free(L.w);
        free(h_prev);
        free(h_cur);
        ltls_global_free(L.tls);
        return -ENOMEM;
    }
    L.t0_ns = rb_clock_ns();
    int ret = 0;
    unsigned started = 0;
    for (unsigned i = 0; i < cfg->workers; i++)
        L.w[i].efd = -1;
    for (unsigned i = 0; i < cfg->workers && ret == 0; i++) {
        struct lworker *w = &L.w[i];
        w->idx = i;
        w->L = &L;
        w->nconns = cfg->connections / cfg->workers + (i < cfg->connections % cfg->workers);
        w->nrings = w->nconns ? (w->nconns + spr - 1) / spr : 0;
        w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->efd < 0) {
            ret = -errno;
            break;
        }
        w->rings = calloc(w->nrings ? w->nrings : 1, sizeof(*w->rings));
        if (!w->rings) {
            ret = -ENOMEM;
            break;
        }
        for (unsigned k = 0; k < w->nrings && ret == 0; k++) {
            struct lring *r = &w->rings[k];
            r->nslots = w->nconns / w->nrings + (k < w->nconns % w->nrings);
            ret = ring_setup(&L, w, r, k);
        }
        res->rings += w->nrings;
    }
    res->slots_per_ring = spr;
    /* rings are set up before the clock starts: the ramp is paced from here */
    L.t0_ns = rb_clock_ns();
    for (unsigned i = 0; i < cfg->workers && ret == 0; i++) {
        ret = -pthread_create(&L.w[i].th, NULL, worker_main, &L.w[i]);
        if (ret == 0)
            started++;
    }
    if (ret)
        __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);

    /* Supervisor: phases and the live line. */
    double nominal_ramp_s = (double)cfg->connections / cfg->rate_per_s;
    /* the hold starts when every connection was tried, or after this much ramp at most */
    uint64_t ramp_deadline =
        (uint64_t)(nominal_ramp_s * 1e6) +
        (nominal_ramp_s > 15 ? (uint64_t)(2 * nominal_ramp_s * 1e6) : 30000000);
    uint64_t hold_start = 0, hold_end = 0, grace_end = 0;
    uint64_t next_line = 1000000;
    struct load_counters prev;
    memset(&prev, 0, sizeof(prev));
    while (ret == 0) {
        struct timespec sl = {0, 20 * 1000 * 1000};
        nanosleep(&sl, NULL);
        uint64_t now = now_us(&L);
        bool all_ramped = true, any_finished = false;
        for (unsigned i = 0; i < cfg->workers; i++) {
            all_ramped &= __atomic_load_n(&L.w[i].ramp_done, __ATOMIC_RELAXED) != 0;
            any_finished |= __atomic_load_n(&L.w[i].finished, __ATOMIC_ACQUIRE) != 0;
        }
        int phase = LD(&L.phase);
        if (g_stop_requested || any_finished) {
            __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
            break;
        }
        if (!hold_start && (all_ramped || now >= ramp_deadline)) {
            hold_start = now;
            hold_end = hold_start + cfg->duration_us;
            res->ramp_s = (double)now / 1e6;
        }
        if (hold_start && now >= hold_end && phase == PH_RUN) {
            struct load_counters t;
            memset(&t, 0, sizeof(t));
            for (unsigned i = 0; i < cfg->workers; i++)
                sum_counters(&t, &L.w[i].cnt);
            uint64_t tmo = t.timeout_ms_max  ? t.timeout_ms_max
                           : cfg->timeout_ms ? cfg->timeout_ms
                                             : 3ull * cfg->interval_ms;
            if (cfg->silent_pct > 0 && t.silenced > t.detected) {
                /* pending detections: wait for them, bounded by timeout + 2 s */
                grace_end = now + tmo * 1000 + 2000000;
                __atomic_store_n(&L.phase, PH_GRACE, __ATOMIC_RELAXED);
            } else {
                __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
            }
        }
        if (phase == PH_GRACE) {
            struct load_counters t;
            memset(&t, 0, sizeof(t));
            for (unsigned i = 0; i < cfg->workers; i++)
                sum_counters(&t, &L.w[i].cnt);
            if (now >= grace_end || t.detected >= t.silenced)
                __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
        }
        if (now >= next_line) {
            if (!cfg->quiet)
                live_line(&L, now, &prev, h_prev, h_cur);
            next_line += 1000000;
        }
        if (LD(&L.phase) == PH_STOP)
            break;
    }
    uint64_t stop_us = now_us(&L);
    for (unsigned i = 0; i < started; i++)
        pthread_join(L.w[i].th, NULL);
    res->duration_s = (double)stop_us / 1e6;
    if (!res->ramp_s)
        res->ramp_s = res->duration_s;
    read_rss(&res->rss_kb, &res->rss_peak_kb);

    for (unsigned i = 0; i < cfg->workers; i++) {
        struct lworker *w = &L.w[i];
        if (w->err && !ret)
            ret = w->err;
        sum_counters(&res->c, &w->cnt);
        lh_merge(&res->rtt_us, &w->rtt_us);
        lh_merge(&res->lateness_us, &w->late_us);
        lh_merge(&res->send_lag_us, &w->lag_us);
        lh_merge(&res->answer_lag_us, &w->answer_us);
        lh_merge(&res->loop_lag_us, &w->loop_us);
        if (w->rings)
            for (unsigned k = 0; k < w->nrings; k++)
                ring_teardown(&w->rings[k]);
        free(w->rings);
        if (w->efd >= 0)
            close(w->efd);
    }
    if (L.tls) {
        ltls_counts(L.tls, &res->tls_full, &res->tls_resumed, &res->tls_failed);
        ltls_global_free(L.tls);
    }
    free(L.w);
    free(h_prev);
    free(h_cur);
    return ret;
}
