/* worker.c — one worker thread: its rings, connection records, frames, timers and loop turn. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

__thread struct rb__worker *rb__current_worker;

#define RB__REAP_BATCH     256
#define RB__DRAIN_PER_TURN 8192
#define RB__OUT_CHUNK      (64 * 1024)
#define RB__LOG_MIN        1024u  /* send records kept however quiet the turns */
#define RB__TRIM_MS        10000u /* how often burst-sized buffers are given back */
#define RB__REARM_KEEP     1024u  /* re-arm queue entries kept once the queue has drained */
#define RB__BGID           0

static void conn_release(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code,
                         uint16_t send_code);

/* ---- clock ------------------------------------------------------------------ */

static void clock_update(struct rb__worker *w)
{
    w->now_ms64 = (rb__clock_ns() - w->e->epoch_ns) / 1000000;
    w->now_ms = (uint32_t)w->now_ms64;
}

static uint64_t now_us(const struct rb__worker *w)
{
    return (rb__clock_ns() - w->e->epoch_ns) / 1000;
}

/* ---- records and lookups ------------------------------------------------------------------ */

static inline struct rb__ring *conn_ring(struct rb__worker *w, const struct rb__conn *c)
{
    return &w->rings[c->ring];
}

static inline uint64_t conn_id(struct rb__worker *w, const struct rb__conn *c)
{
    return rb__id_make(c->gen, conn_ring(w, c)->gindex, c->slot);
}

/* The record behind an id, if it is this worker's and still the same connection. */
static struct rb__conn *conn_lookup(struct rb__worker *w, uint64_t id)
{
    uint32_t gring = rb__id_ring(id);
    if (gring >= w->e->nworkers * w->e->rings_per_worker_max)
        return NULL;
    struct rb__ring *r = w->e->ring_by_gindex[gring];
    if (!r || r->w != w)
        return NULL;
    uint32_t slot = rb__id_slot(id);
    if (slot >= r->slots)
        return NULL;
    struct rb__conn *c = r->by_slot[slot];
    if (!c || c->gen != rb__id_gen(id) || (c->flags & RB__CF_CLOSING))
        return NULL;
    return c;
}

static struct rb__conn_ext *conn_ext(struct rb__worker *w, struct rb__conn *c)
{
    if (!c->ext && (c->ext = calloc(1, sizeof(*c->ext))))
        c->ext->id = conn_id(w, c);
    return c->ext;
}

/* Frees the slow-path state once nothing in it is needed any more. */
static void conn_ext_trim(struct rb__conn *c)
{
    struct rb__conn_ext *x = c->ext;
    if (x && !x->part && !x->out && !x->have_peer) {
        free(x);
        c->ext = NULL;
    }
}

/* ---- liveness: the mark ------------------------------------------------------------------- */

/*
 * Each connection carries a mark of weight ceil(timeout / interval) (capped at 7). Every interval
 * that passes with nothing received (plus half an interval of grace for the answer to a PING)
 * takes one unit off; while the weight is below full the connection is suspect, and at the
 * timeout it is dead. Any complete frame restores the full weight.
 */
static unsigned weight_max(const struct rb__conn *c)
{
    unsigned wmax = (c->timeout_ms + c->interval_ms - 1) / c->interval_ms;
    return wmax > 7 ? 7 : (wmax ? wmax : 1);
}

static void conn_set_mark(struct rb__worker *w, struct rb__conn *c, enum rb_liveness to,
                          unsigned weight)
{
    enum rb_liveness from = rb__conn_liveness(c);
    unsigned old_weight = rb__conn_weight(c);
    if (from == to && old_weight == weight)
        return;
    RB__DEC(w, by_liveness[from]);
    RB__INC(w, by_liveness[to]);
    RB__DEC(w, by_weight[old_weight]);
    RB__INC(w, by_weight[weight]);
    c->state = (uint8_t)((c->state & 0x0c) | (unsigned)to | weight << 4);
    if (from != to && w->e->cfg.cb.on_liveness)
        w->e->cfg.cb.on_liveness(w->e, conn_id(w, c), from, to, w->e->cfg.user);
}

/* Receiving a frame records the time and restores the mark; it touches no timer. (The weight
 * is below full only while the connection is suspect, so one test covers both.) */
static inline void conn_touch(struct rb__worker *w, struct rb__conn *c)
{
    /* Rounded up: the clock is truncated to ms, and a connection must never look older than it
     * is (that would declare it dead up to 1 ms early). */
    c->last_rx_ms = w->now_ms + 1;
    if (rb__conn_liveness(c) != RB_ALIVE)
        conn_set_mark(w, c, RB_ALIVE, weight_max(c));
}

static void conn_arm_at(struct rb__worker *w, struct rb__conn *c, uint64_t deadline_ms64)
{
    uint32_t tick_ms = w->e->cfg.tick_ms;
    /* Rounded up: a timer never fires before its deadline. */
    rb__wheel_add(&w->wheel, &c->timer, (uint32_t)((deadline_ms64 + tick_ms - 1) / tick_ms));
}

/* ---- output --------------------------------------------------------------------------------- */

static struct rb__out_gen *out_gen(struct rb__worker *w)
{
    return &w->out[w->turn & 1];
}

/*
 * Gives back what one burst needed and the turns since no longer do: a turn that sends 500,000
 * frames (a stall at 1M connections) grows the arena and the send log to tens of MB, which
 * would otherwise stay for the life of the process (the 1M soak's RSS "drift"). Every
 * RB__TRIM_MS, chunks past the most any turn used since are freed and the log shrinks to twice
 * that turn's length. The generation being reset holds nothing live (see out_reset).
 */
static void out_trim(struct rb__out_gen *g, uint64_t now_ms64)
{
    uint32_t n = 0;
    for (struct rb__out_chunk *k = g->head; k && g->cur; k = k->next) {
        n++;
        if (k == g->cur)
            break;
    }
    if (n > g->peak_chunks)
        g->peak_chunks = n;
    if (g->log_len > g->peak_log)
        g->peak_log = g->log_len;
    if (now_ms64 - g->trim_ms < RB__TRIM_MS)
        return;
    g->trim_ms = now_ms64;
    struct rb__out_chunk **link = &g->head;
    for (uint32_t i = 0; *link && i < (g->peak_chunks ? g->peak_chunks : 1); i++)
        link = &(*link)->next;
    for (struct rb__out_chunk *k = *link, *next; k; k = next) {
        next = k->next;
        free(k);
    }
    *link = NULL;
    uint32_t want = RB__LOG_MIN;
    while (want < 2 * g->peak_log)
        want *= 2;
    if (g->log_cap > want) {
        struct rb__send_rec *log = realloc(g->log, want * sizeof(*log));
        if (log) {
            g->log = log;
            g->log_cap = want;
        }
    }
    g->peak_chunks = g->peak_log = 0;
}

/* Output of a turn stays valid until its send failures have been reaped, two turns later. */
static void out_reset(struct rb__out_gen *g, uint64_t now_ms64)
{
    out_trim(g, now_ms64);
    g->cur = g->head;
    if (g->head)
        g->head->used = 0;
    g->log_len = 0;
}

static uint8_t *out_alloc(struct rb__worker *w, uint32_t len)
{
    struct rb__out_gen *g = out_gen(w);
    struct rb__out_chunk *k = g->cur;
    while (!k || k->cap - k->used < len) {
        if (k && k->next) {
            k = k->next;
            k->used = 0;
            continue;
        }
        uint32_t cap = len > RB__OUT_CHUNK ? len : RB__OUT_CHUNK;
        struct rb__out_chunk *n = malloc(sizeof(*n) + cap);
        if (!n)
            return NULL;
        n->next = NULL;
        n->used = 0;
        n->cap = cap;
        if (k)
            k->next = n;
        else
            g->head = n;
        k = n;
    }
    g->cur = k;
    uint8_t *p = k->data + k->used;
    k->used += len;
    return p;
}

/*
 * Room for n SQEs in a row; when the SQ is too full, what is there is submitted mid-turn. A linked
 * chain asks for all its SQEs at once: a submit between two of them would end the batch on a
 * link flag, and the kernel hands such a dangling head to an io-wq thread, so the rest of the
 * chain, submitted next, could overtake it (a shutdown overtaking its CLOSE frame sent peers a
 * bare FIN at shutdown, under CPU contention).
 */
static bool ring_reserve(struct rb__worker *w, struct rb__ring *r, unsigned n)
{
    if (io_uring_sq_space_left(&r->uring) >= n)
        return true;
    unsigned ready = io_uring_sq_ready(&r->uring);
    if (rb__ring_submit(&r->uring) == 0) {
        RB__INC(w, submits);
        RB__ADD(w, sqes_submitted, ready);
    }
    return io_uring_sq_space_left(&r->uring) >= n;
}

static struct io_uring_sqe *ring_sqe(struct rb__worker *w, struct rb__ring *r)
{
    return ring_reserve(w, r, 1) ? io_uring_get_sqe(&r->uring) : NULL;
}

/* Appends to the connection's queued output, which goes out in order before any new frame. */
static int out_queue(struct rb__worker *w, struct rb__conn *c, const uint8_t *buf, uint32_t len)
{
    struct rb__conn_ext *x = conn_ext(w, c);
    if (!x)
        return -ENOMEM;
    uint32_t cap = w->e->cfg.max_pending_out;
    if (!x->out) {
        /* Allocated at its cap once, so an in-flight flush never sees the buffer move. */
        x->out = malloc(cap);
        if (!x->out)
            return -ENOMEM;
        x->out_cap = cap;
        x->out_len = x->out_off = 0;
    }
    if (x->out_len + len > x->out_cap)
        return -ENOBUFS;
    memcpy(x->out + x->out_len, buf, len);
    x->out_len += len;
    c->flags |= RB__CF_BLOCKED;
    return 0;
}

static void out_flush(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__conn_ext *x = c->ext;
    if ((c->flags & RB__CF_FLUSHING) || !x || !x->out || x->out_off == x->out_len)
        return;
    struct io_uring_sqe *sqe = ring_sqe(w, conn_ring(w, c));
    if (!sqe)
        return;
    /* No MSG_DONTWAIT: this one may wait for room in the socket, and reports with a CQE. */
    io_uring_prep_send(sqe, (int)c->slot, x->out + x->out_off, x->out_len - x->out_off,
                       MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_FLUSH, (uint64_t)(uintptr_t)x));
    c->flags |= RB__CF_FLUSHING;
    RB__INC(w, send_retries);
}

/*
 * Sends bytes that live in this turn's output arena. MSG_DONTWAIT | MSG_WAITALL makes the send
 * finish inside the submitting io_uring_enter, and CQE_SKIP_SUCCESS makes a full send silent, so
 * a heartbeat reply costs one SQE and no completion. A refusal or short send posts a CQE, handled
 * by on_send_failed(). Consecutive frames to one connection extend one SQE.
 */
static void conn_send(struct rb__worker *w, struct rb__conn *c, uint8_t *buf, uint32_t len,
                      uint8_t type)
{
    RB__INC(w, frames_out[type]);
    RB__ADD(w, bytes_out, len);
    if (c->flags & RB__CF_BLOCKED) {
        if (out_queue(w, c, buf, len) < 0)
            conn_release(w, c, RB_CLOSE_SLOW_READER, 0, 0);
        return;
    }
    struct rb__ring *r = conn_ring(w, c);
    struct rb__out_gen *g = out_gen(w);
    uint64_t id = conn_id(w, c);
    if (g->log_len) {
        struct rb__send_rec *last = &g->log[g->log_len - 1];
        struct io_uring_sqe *prev =
            r->uring.sq.sqe_tail != r->uring.sq.sqe_head
                ? &r->uring.sq.sqes[(r->uring.sq.sqe_tail - 1) & *r->uring.sq.kring_mask]
                : NULL;
        if (last->id == id && last->buf + last->len == buf && prev &&
            prev->user_data ==
                rb__ud(RB__OP_SEND, (uint64_t)(w->turn & 1) << 32 | (g->log_len - 1))) {
            last->len += len;
            prev->len += len;
            return;
        }
    }
    if (g->log_len == g->log_cap) {
        uint32_t cap = g->log_cap ? g->log_cap * 2 : RB__LOG_MIN;
        struct rb__send_rec *n = realloc(g->log, cap * sizeof(*n));
        if (!n) {
            conn_release(w, c, RB_CLOSE_RESET, 0, 0);
            return;
        }
        g->log = n;
        g->log_cap = cap;
    }
    struct io_uring_sqe *sqe = ring_sqe(w, r);
    if (!sqe)
        return;
    uint32_t idx = g->log_len++;
    g->log[idx] = (struct rb__send_rec){.id = id, .buf = buf, .len = len};
    io_uring_prep_send(sqe, (int)c->slot, buf, len, MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_SEND, (uint64_t)(w->turn & 1) << 32 | idx));
}

static void send_ping(struct rb__worker *w, struct rb__conn *c, uint8_t type, uint64_t token)
{
    uint8_t *p = out_alloc(w, RB_FRAME_HEADER_LEN + RB__PING_LEN);
    if (p)
        conn_send(w, c, p, (uint32_t)rb__put_ping(p, type, token), type);
}

/* PING tokens carry their send time and a keyed check, so a PONG needs no per-connection state. */
static uint64_t token_make(struct rb__worker *w, uint64_t id, uint64_t t_us)
{
    uint64_t h = (t_us ^ id ^ w->e->token_key) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    return (t_us & 0xFFFFFFFFFFFFULL) << 16 | (h & 0xFFFF);
}

static void on_pong(struct rb__worker *w, struct rb__conn *c, uint64_t token)
{
    uint64_t t_us = token >> 16;
    uint64_t now = now_us(w);
    if (token_make(w, conn_id(w, c), t_us) != token || t_us > now) {
        RB__INC(w, pong_unmatched);
        return;
    }
    rb__hist_add(&w->stats.rtt_us, rb_rtt_bounds_us, now - t_us);
}

/* ---- closing -------------------------------------------------------------------------------- */

/* Queues CLOSE(code) (when code != 0), then shutdown and close of the direct descriptor. The
 * hard links keep the order even when the CLOSE frame cannot be sent. */
static void slot_close(struct rb__worker *w, struct rb__ring *r, uint32_t slot, uint16_t code,
                       bool can_send)
{
    struct io_uring_sqe *sqe;
    can_send = can_send && code;
    ring_reserve(w, r, can_send ? 3 : 2); /* one chain, one submission */
    if (can_send) {
        uint8_t *p = out_alloc(w, RB_FRAME_HEADER_LEN + RB__CLOSE_MIN);
        if (p && (sqe = ring_sqe(w, r))) {
            size_t n = rb__put_close(p, code, NULL);
            io_uring_prep_send(sqe, (int)slot, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_HARDLINK;
            io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_CLOSE_FRAME, code));
            RB__INC(w, frames_out[RB_FRAME_CLOSE]);
        }
    }
    /* shutdown ends the multishot recv (it holds its own reference to the socket). */
    if ((sqe = ring_sqe(w, r))) {
        io_uring_prep_shutdown(sqe, (int)slot, SHUT_RDWR);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_NONE, 0));
    }
    if ((sqe = ring_sqe(w, r))) {
        io_uring_prep_close_direct(sqe, slot);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_NONE, 0));
    }
}

static void conn_release(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code,
                         uint16_t send_code)
{
    struct rb__ring *r = conn_ring(w, c);
    uint64_t id = conn_id(w, c);
    c->flags |= RB__CF_CLOSING;
    rb__wheel_del(&w->wheel, &c->timer);
    slot_close(w, r, c->slot, send_code, !(c->flags & RB__CF_BLOCKED));

    enum rb_liveness l = rb__conn_liveness(c);
    RB__DEC(w, by_liveness[l]);
    RB__DEC(w, by_weight[rb__conn_weight(c)]);
    RB__DEC(w, conns);
    RB__INC(w, closed[reason]);
    if (w->e->cfg.cb.on_close && (c->flags & RB__CF_HELLO))
        w->e->cfg.cb.on_close(w->e, id, reason, peer_code, w->e->cfg.user);

    struct rb__conn_ext *x = c->ext;
    if (x) {
        free(x->part);
        if (c->flags & RB__CF_FLUSHING) {
            /* The kernel still reads x->out; the flush completion frees it (see on_flush). */
            x->have_peer = false;
            x->part = NULL;
            x->out_off = UINT32_MAX; /* marks the orphan */
        } else {
            free(x->out);
            free(x);
        }
    }
    if (r->ip_key && r->ip_key[c->slot]) {
        rb__ip_release(w->e, r->ip_key[c->slot]);
        r->ip_key[c->slot] = 0;
    }
    r->by_slot[c->slot] = NULL;
    r->used--;
    atomic_fetch_sub_explicit(&w->e->conns, 1, memory_order_relaxed);
    rb__slab_free(&w->slab, c);
}

/* ---- frames in ------------------------------------------------------------------------------ */

static void conn_open_event(struct rb__worker *w, struct rb__conn *c, const uint8_t *client_id,
                            size_t client_id_len)
{
    if (!w->e->cfg.cb.on_open)
        return;
    struct rb_conn_info info = {.id = conn_id(w, c),
                                .worker = w->index,
                                .mode = rb__conn_mode(c),
                                .interval_ms = c->interval_ms,
                                .timeout_ms = c->timeout_ms,
                                .client_id = (const char *)client_id,
                                .client_id_len = client_id_len};
    info.peer.ss_family = AF_UNSPEC;
    if (c->ext && c->ext->have_peer) {
        info.peer = c->ext->peer;
        c->ext->have_peer = false;
        conn_ext_trim(c);
    }
    w->e->cfg.cb.on_open(w->e, &info, w->e->cfg.user);
}

static void conn_schedule(struct rb__worker *w, struct rb__conn *c);

static void conn_set_mode(struct rb__conn *c, enum rb_mode mode)
{
    c->state = (uint8_t)((c->state & ~0x0c) | (unsigned)mode << 2);
}

/*
 * Server mode spreads PINGs so that they never bunch: the first PING point is one interval plus a
 * phase in [0, interval) derived from the connection's id, so a burst of arrivals does not ping
 * in a burst one interval later; every later PING point gets a jitter in [0, interval / 16)
 * derived from the id and the time of the last frame, so a stall that bunches answers together
 * (a slow peer, an overloaded moment) is spread out again instead of repeating every interval.
 * No PING ever goes out before a full interval of silence. Derived, not stored: the record
 * stays 64 bytes, and the timer handler recomputes the same offset as the scheduler.
 */
static uint64_t ping_offset(struct rb__worker *w, const struct rb__conn *c)
{
    if (rb__conn_mode(c) != RB_MODE_SERVER)
        return 0;
    uint64_t h = (conn_id(w, c) ^ w->e->token_key) * 0x9E3779B97F4A7C15ULL;
    if (c->flags & RB__CF_FIRST_PING)
        return (h >> 32) % c->interval_ms;
    h = (h ^ c->last_rx_ms) * 0xBF58476D1CE4E5B9ULL;
    return (h >> 32) % (c->interval_ms / 16 + 1);
}

static void conn_start_timer(struct rb__worker *w, struct rb__conn *c)
{
    if (rb__conn_mode(c) == RB_MODE_SERVER)
        c->flags |= RB__CF_FIRST_PING;
    else
        c->flags &= (uint8_t)~RB__CF_FIRST_PING;
    conn_schedule(w, c);
}

static int on_hello(struct rb__worker *w, struct rb__conn *c, const uint8_t *p, size_t len)
{
    const struct rb_config *cfg = &w->e->cfg;
    struct rb__hello h;
    if (rb__hello_parse(p, len, &h) < 0)
        return -EPROTO;
    uint32_t interval = cfg->interval_ms, timeout = cfg->timeout_ms;
    if (h.interval_ms) {
        interval = h.interval_ms;
        if (interval < cfg->min_interval_ms)
            interval = cfg->min_interval_ms;
        if (interval > cfg->max_interval_ms)
            interval = cfg->max_interval_ms;
        timeout = interval > UINT32_MAX / 3 ? UINT32_MAX : interval * 3;
    }
    if (h.timeout_ms)
        timeout = h.timeout_ms;
    if (timeout > cfg->max_timeout_ms)
        timeout = cfg->max_timeout_ms;
    if (timeout <= interval)
        return -EPROTO; /* a HELLO we cannot honour */
    uint32_t old_timeout = c->timeout_ms;
    c->interval_ms = interval;
    c->timeout_ms = timeout;
    conn_set_mode(c, (enum rb_mode)h.mode);
    conn_set_mark(w, c, RB_ALIVE, weight_max(c));

    uint8_t *out = out_alloc(w, RB_FRAME_HEADER_LEN + RB__WELCOME_LEN);
    if (out) {
        struct rb__welcome wl = {.version = RB_PROTO_VERSION,
                                 .mode = h.mode,
                                 .interval_ms = interval,
                                 .timeout_ms = timeout,
                                 .conn_id = conn_id(w, c)};
        conn_send(w, c, out, (uint32_t)rb__put_welcome(out, &wl), RB_FRAME_WELCOME);
    }
    if (timeout != old_timeout) {
        /* The listener's TCP_USER_TIMEOUT was inherited; this connection asked for another. */
        /* The arena is byte-granular, so the value is copied in (no aligned store). */
        uint8_t *val = out_alloc(w, sizeof(uint32_t));
        struct io_uring_sqe *sqe;
        if (val && (sqe = ring_sqe(w, conn_ring(w, c)))) {
            memcpy(val, &timeout, sizeof(timeout));
            rb__prep_setsockopt_direct(sqe, c->slot, IPPROTO_TCP, TCP_USER_TIMEOUT, val,
                                       sizeof(timeout));
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_NONE, 0));
        }
    }
    rb__wheel_del(&w->wheel, &c->timer);
    conn_start_timer(w, c);
    conn_open_event(w, c, h.client_id, h.client_id_len);
    return 0;
}

/* Handles one complete frame; returns -1 when the connection was released. */
static int on_frame(struct rb__worker *w, struct rb__conn *c, const struct rb__frame_hdr *h,
                    const uint8_t *p)
{
    uint64_t id = conn_id(w, c);
    RB__INC(w, frames_in[h->type]);
    conn_touch(w, c);
    if (!(c->flags & RB__CF_HELLO)) {
        c->flags |= RB__CF_HELLO;
        if (h->type == RB_FRAME_HELLO) {
            if (on_hello(w, c, p, h->len) == 0)
                return 0;
            c->flags &= (uint8_t)~RB__CF_HELLO; /* never opened, so no close event either */
            goto protocol;
        }
        conn_open_event(w, c, NULL, 0);
        if (!conn_lookup(w, id))
            return -1;
    }
    switch (h->type) {
    case RB_FRAME_HELLO:   /* a second HELLO */
    case RB_FRAME_WELCOME: /* only servers send it */
        goto protocol;
    case RB_FRAME_PING:
        if (rb__conn_mode(c) != RB_MODE_SILENT)
            send_ping(w, c, RB_FRAME_PONG, rb__get_u64(p));
        return 0;
    case RB_FRAME_PONG:
        on_pong(w, c, rb__get_u64(p));
        return 0;
    case RB_FRAME_DATA:
        if (w->e->cfg.cb.on_data) {
            w->e->cfg.cb.on_data(w->e, id, p, h->len, w->e->cfg.user);
            return conn_lookup(w, id) ? 0 : -1;
        }
        if (w->e->cfg.echo_data) {
            uint8_t *out = out_alloc(w, RB_FRAME_HEADER_LEN + h->len);
            if (out)
                conn_send(w, c, out, (uint32_t)rb__put_data(out, p, h->len), RB_FRAME_DATA);
            return conn_lookup(w, id) ? 0 : -1;
        }
        return 0;
    case RB_FRAME_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        if (rb__close_parse(p, h->len, &code, &reason, &reason_len) < 0)
            goto protocol;
        conn_release(w, c, RB_CLOSE_PEER, code, 0);
        return -1;
    }
    }
protocol:
    conn_release(w, c, RB_CLOSE_PROTOCOL, 0, RB_CLOSE_PROTOCOL);
    return -1;
}

static int frame_error(struct rb__worker *w, struct rb__conn *c, int err)
{
    uint16_t code = err == -EMSGSIZE ? RB_CLOSE_TOO_BIG : RB_CLOSE_PROTOCOL;
    conn_release(w, c, code, 0, code);
    return -1;
}

/* Keeps the bytes of an incomplete frame: in the record while they fit, else in a buffer sized
 * for exactly that frame and freed when it completes. */
static int part_store(struct rb__worker *w, struct rb__conn *c, const uint8_t *p, size_t n,
                      size_t frame_len)
{
    struct rb__conn_ext *x = c->ext;
    size_t have = x && x->part ? x->part_len : c->part_len;
    if (have + n <= RB__PART_INLINE && !(x && x->part)) {
        memcpy(c->part + c->part_len, p, n);
        c->part_len = (uint8_t)(c->part_len + n);
        return 0;
    }
    if (!x || !x->part) {
        if (!(x = conn_ext(w, c)) || !(x->part = malloc(frame_len))) {
            conn_release(w, c, RB_CLOSE_RESET, 0, 0);
            return -1;
        }
        memcpy(x->part, c->part, c->part_len);
        x->part_len = c->part_len;
        x->part_cap = (uint32_t)frame_len;
        c->part_len = 0;
    }
    memcpy(x->part + x->part_len, p, n);
    x->part_len += (uint32_t)n;
    return 0;
}

/* Parses received bytes: whole frames straight from the receive buffer, split ones via the
 * record. Returns -1 when the connection was released. */
static int conn_input(struct rb__worker *w, struct rb__conn *c, const uint8_t *p, size_t n)
{
    uint32_t max_frame = w->e->cfg.max_frame;
    struct rb__frame_hdr h;
    while (c->part_len || (c->ext && c->ext->part)) {
        struct rb__conn_ext *x = c->ext;
        uint8_t *buf = x && x->part ? x->part : c->part;
        size_t have = x && x->part ? x->part_len : c->part_len;
        if (have < RB_FRAME_HEADER_LEN) {
            size_t take = RB_FRAME_HEADER_LEN - have < n ? RB_FRAME_HEADER_LEN - have : n;
            memcpy(c->part + have, p, take); /* a header always fits inline */
            c->part_len = (uint8_t)(have + take);
            p += take;
            n -= take;
            if (c->part_len < RB_FRAME_HEADER_LEN)
                return 0;
            buf = c->part;
            have = c->part_len;
        }
        int err = rb__frame_check(buf, max_frame, &h);
        if (err < 0)
            return frame_error(w, c, err);
        size_t total = RB_FRAME_HEADER_LEN + h.len;
        size_t take = total - have < n ? total - have : n;
        if (have < total && part_store(w, c, p, take, total) < 0)
            return -1;
        p += take;
        n -= take;
        x = c->ext;
        buf = x && x->part ? x->part : c->part;
        have = x && x->part ? x->part_len : c->part_len;
        if (have < total)
            return 0;
        int r = on_frame(w, c, &h, buf + RB_FRAME_HEADER_LEN);
        if (r < 0)
            return -1;
        c->part_len = 0;
        if ((x = c->ext) && x->part) {
            free(x->part);
            x->part = NULL;
            x->part_len = 0;
            conn_ext_trim(c);
        }
    }
    while (n) {
        if (n < RB_FRAME_HEADER_LEN)
            return part_store(w, c, p, n, RB_FRAME_HEADER_LEN);
        int err = rb__frame_check(p, max_frame, &h);
        if (err < 0)
            return frame_error(w, c, err);
        size_t total = RB_FRAME_HEADER_LEN + h.len;
        if (n < total)
            return part_store(w, c, p, n, total);
        if (on_frame(w, c, &h, p + RB_FRAME_HEADER_LEN) < 0)
            return -1;
        p += total;
        n -= total;
    }
    return 0;
}

/* ---- timers --------------------------------------------------------------------------------- */

/*
 * The next instant this connection needs attention, from last_rx alone: a PING point (server
 * mode: every interval of silence, the first one shifted by the spread), the next step of the
 * mark (half an interval after a PING point: the answer is overdue), or death at the timeout.
 */
static void conn_schedule(struct rb__worker *w, struct rb__conn *c)
{
    int32_t idle32 = (int32_t)(w->now_ms - c->last_rx_ms);
    uint64_t idle = idle32 < 0 ? 0 : (uint64_t)idle32;
    uint64_t base = w->now_ms64 - idle;
    uint64_t iv = c->interval_ms, first = iv + ping_offset(w, c), step_at = first + iv / 2;
    uint64_t next = c->timeout_ms;
    uint64_t step = idle < step_at ? step_at : step_at + ((idle - step_at) / iv + 1) * iv;
    if (step < next)
        next = step;
    if (rb__conn_mode(c) == RB_MODE_SERVER) {
        uint64_t ping = idle < first ? first : first + ((idle - first) / iv + 1) * iv;
        if (ping < next)
            next = ping;
    }
    conn_arm_at(w, c, base + next);
}

/* Returns false when the connection is dead (the caller decides after a last look). */
static bool conn_timer(struct rb__worker *w, struct rb__conn *c)
{
    bool held = c->flags & RB__CF_PING_HELD;
    c->flags &= (uint8_t)~RB__CF_PING_HELD;
    int32_t idle32 = (int32_t)(w->now_ms - c->last_rx_ms);
    uint64_t idle = idle32 < 0 ? 0 : (uint64_t)idle32;
    if (idle >= c->timeout_ms)
        return false;
    uint64_t iv = c->interval_ms, grace = iv / 2, first = iv + ping_offset(w, c);
    uint64_t missed = idle < first + grace ? 0 : 1 + (idle - first - grace) / iv;
    unsigned wmax = weight_max(c);
    unsigned weight = missed >= wmax ? 1 : (unsigned)(wmax - missed);
    conn_set_mark(w, c, missed ? RB_SUSPECT : RB_ALIVE, weight);
    /* A PING is due in the first half of each interval of silence past the first PING point;
     * a timer that fires in the second half is a step of the mark, not a PING point. */
    if (rb__conn_mode(c) == RB_MODE_SERVER && idle >= first && (idle - first) % iv < grace) {
        /*
         * Paced: PINGs go out at most at twice this worker's average rate. A stall that bunched
         * answers together would otherwise be pinged again in one burst an interval later, and
         * near saturation the burst causes the next stall. Each PING takes a token; past the
         * bucket, it reserves the place the refill will reach and its timer waits for exactly
         * that, once (a timer re-fired every tick until a token is left turned a burst of
         * 100,000s of due PINGs into millions of timer fires per second, which starved the
         * loop: the 1M soak). It never waits past a quarter of the grace, so the peer keeps
         * most of it to answer.
         */
        if (!held) {
            w->ping_tokens -= 1;
            if (w->ping_tokens < 0) {
                uint64_t into = (idle - first) % iv;
                double wait_ms = -w->ping_tokens / w->ping_per_ms;
                if (into + wait_ms < grace / 4) {
                    RB__INC(w, pings_deferred);
                    c->flags |= RB__CF_PING_HELD;
                    conn_arm_at(w, c, w->now_ms64 + (uint64_t)wait_ms + 1);
                    return true;
                }
            }
        }
        uint64_t id = conn_id(w, c);
        c->flags &= (uint8_t)~RB__CF_FIRST_PING;
        send_ping(w, c, RB_FRAME_PING, token_make(w, id, now_us(w)));
        if (!conn_lookup(w, id))
            return true;
    }
    conn_schedule(w, c);
    return true;
}

/* ---- receive -------------------------------------------------------------------------------- */

static void conn_arm_recv(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__ring *r = conn_ring(w, c);
    struct io_uring_sqe *sqe = ring_sqe(w, r);
    if (!sqe)
        return;
    io_uring_prep_recv_multishot(sqe, (int)c->slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = RB__BGID;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_RECV, conn_id(w, c)));
    c->flags |= RB__CF_RECV;
}

static void on_recv(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    uint64_t id = cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1);
    struct rb__conn *c = conn_lookup(w, id);
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (c && cqe->res > 0) {
            RB__ADD(w, bytes_in, (uint64_t)cqe->res);
            if (conn_input(w, c, rb__bufring_addr(&r->bufs, bid), (size_t)cqe->res) < 0)
                c = NULL;
        }
        rb__bufring_recycle(&r->bufs, bid);
    }
    if (more || !c)
        return;
    c->flags &= (uint8_t)~RB__CF_RECV;
    if (cqe->res == -ENOBUFS) {
        /* Re-armed in bounded batches as buffers return, never all at once (no ENOBUFS storm). */
        RB__INC(w, enobufs);
        if (r->rearm_len == r->rearm_cap && r->rearm_head) {
            /* Compacted only when full: one move per cap entries served, not one per turn. */
            r->rearm_len -= r->rearm_head;
            memmove(r->rearm, r->rearm + r->rearm_head, r->rearm_len * sizeof(*r->rearm));
            r->rearm_head = 0;
        }
        if (r->rearm_len == r->rearm_cap) {
            uint32_t cap = r->rearm_cap ? r->rearm_cap * 2 : 256;
            uint64_t *n = realloc(r->rearm, cap * sizeof(*n));
            if (!n) {
                conn_release(w, c, RB_CLOSE_RESET, 0, 0);
                return;
            }
            r->rearm = n;
            r->rearm_cap = cap;
        }
        r->rearm[r->rearm_len++] = id;
        c->flags |= RB__CF_REARM;
    } else if (cqe->res > 0) {
        conn_arm_recv(w, c); /* the kernel ended the multishot (e.g. CQ pressure): go on */
    } else if (cqe->res == 0) {
        conn_release(w, c, RB_CLOSE_EOF, 0, 0);
    } else {
        conn_release(w, c, RB_CLOSE_RESET, 0, 0);
    }
}

static void ring_rearm(struct rb__worker *w, struct rb__ring *r)
{
    uint32_t budget = r->bufs.count / 2, i = r->rearm_head;
    for (; i < r->rearm_len && budget; i++) {
        struct rb__conn *c = conn_lookup(w, r->rearm[i]);
        if (!c)
            continue;
        c->flags &= (uint8_t)~RB__CF_REARM;
        conn_arm_recv(w, c);
        budget--;
    }
    r->rearm_head = i;
    if (r->rearm_head == r->rearm_len) {
        r->rearm_head = r->rearm_len = 0;
        if (r->rearm_cap > RB__REARM_KEEP) { /* sized for a storm that is over */
            free(r->rearm);
            r->rearm = NULL;
            r->rearm_cap = 0;
        }
    }
}

/* ---- send completions (failures only) ------------------------------------------------------- */

static void on_send_failed(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    uint64_t low = cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1);
    struct rb__out_gen *g = &w->out[(low >> 32) & 1];
    uint32_t idx = (uint32_t)low;
    if (idx >= g->log_len)
        return;
    struct rb__send_rec *rec = &g->log[idx];
    struct rb__conn *c = conn_lookup(w, rec->id);
    if (!c)
        return;
    if (cqe->res < 0 && cqe->res != -EAGAIN) {
        conn_release(w, c, RB_CLOSE_RESET, 0, 0);
        return;
    }
    /* A later send of the same turn to this connection may have gone out ahead of these bytes:
     * the stream order is lost, so the connection is dropped rather than corrupted. */
    for (uint32_t j = idx + 1; j < g->log_len; j++) {
        if (g->log[j].id == rec->id) {
            conn_release(w, c, RB_CLOSE_SLOW_READER, 0, 0);
            return;
        }
    }
    uint32_t sent = cqe->res > 0 ? (uint32_t)cqe->res : 0;
    if (sent > rec->len)
        return;
    if (out_queue(w, c, rec->buf + sent, rec->len - sent) < 0) {
        conn_release(w, c, RB_CLOSE_SLOW_READER, 0, 0);
        return;
    }
    out_flush(w, c);
}

static void on_flush(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    struct rb__conn_ext *x =
        (struct rb__conn_ext *)(uintptr_t)(cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
    if (x->out_off == UINT32_MAX) { /* its connection is gone */
        free(x->out);
        free(x);
        return;
    }
    struct rb__conn *c = conn_lookup(w, x->id);
    if (!c || c->ext != x)
        return;
    c->flags &= (uint8_t)~RB__CF_FLUSHING;
    if (cqe->res < 0) {
        conn_release(w, c, RB_CLOSE_RESET, 0, 0);
        return;
    }
    x->out_off += (uint32_t)cqe->res;
    if (x->out_off < x->out_len) {
        memmove(x->out, x->out + x->out_off, x->out_len - x->out_off);
        x->out_len -= x->out_off;
        x->out_off = 0;
        out_flush(w, c);
        return;
    }
    free(x->out);
    x->out = NULL;
    x->out_len = x->out_off = 0;
    c->flags &= (uint8_t)~RB__CF_BLOCKED;
    conn_ext_trim(c);
}

/* ---- accept --------------------------------------------------------------------------------- */

/* Multishot accepts, one per listener not yet armed on this ring. */
static void arm_accept(struct rb__worker *w, struct rb__ring *r)
{
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++) {
        struct io_uring_sqe *sqe;
        if ((r->accept_multishot & (1u << i)) || !(sqe = ring_sqe(w, r)))
            continue;
        io_uring_prep_multishot_accept_direct(sqe, w->listen_fd[i], NULL, NULL, 0);
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_ACCEPT, i));
        r->accept_multishot |= (uint16_t)(1u << i);
        r->accept_armed++;
    }
}

/* Single-shot accepts, as many as there are tokens (--accept-rate): a multishot accept would
 * take a whole backlog at once before a pause could take effect. */
static void arm_accept_tokens(struct rb__worker *w, struct rb__ring *r, unsigned n)
{
    for (unsigned k = 0; k < n; k++) {
        unsigned i = k % w->e->cfg.listen_count;
        struct io_uring_sqe *sqe = ring_sqe(w, r);
        if (!sqe)
            return;
        /* The kernel picks the slot; set by hand because liburing 2.3's helper adds 1 to it. */
        io_uring_prep_accept(sqe, w->listen_fd[i], NULL, NULL, 0);
        sqe->file_index = IORING_FILE_INDEX_ALLOC;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_ACCEPT, i));
        r->accept_armed++;
    }
}

/* The cancelled requests complete with -ECANCELED, which is when they stop counting as armed. */
static void cancel_accept(struct rb__worker *w, struct rb__ring *r)
{
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++) {
        struct io_uring_sqe *sqe = ring_sqe(w, r);
        if (!sqe)
            return;
        io_uring_prep_cancel64(sqe, rb__ud(RB__OP_ACCEPT, i), IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_CANCEL, 0));
    }
}

/* --accept-rate: a token bucket per worker, spent by arming that many single-shot accepts. Out
 * of tokens, arrivals wait in the listen backlog: a reconnect storm is slowed, not refused. */
static void accept_keep_armed(struct rb__worker *w)
{
    struct rb__ring *r = &w->rings[w->accept_ring];
    uint32_t rate = w->e->cfg.accept_rate;
    if (!rate) {
        arm_accept(w, r);
        return;
    }
    double per_ms = (double)rate / w->e->nworkers / 1000.0;
    double burst = per_ms * 100 > 1 ? per_ms * 100 : 1; /* 100 ms worth */
    w->accept_tokens += (double)(w->now_ms64 - w->accept_refill_ms) * per_ms;
    w->accept_refill_ms = w->now_ms64;
    if (w->accept_tokens > burst)
        w->accept_tokens = burst;
    if (r->accept_armed)
        return;
    if (w->accept_tokens < 1) {
        if (w->accept_resume_ms <= w->now_ms64)
            RB__INC(w, accept_paused);
        w->accept_resume_ms = w->now_ms64 + (uint64_t)((1 - w->accept_tokens) / per_ms) + 1;
        return;
    }
    unsigned n = w->accept_tokens > 64 ? 64 : (unsigned)w->accept_tokens;
    w->accept_tokens -= n;
    arm_accept_tokens(w, r, n);
}

static int ring_open(struct rb__worker *w, unsigned idx);

/* A multishot accept can land a burst of connections before we look, so the accepting ring
 * moves on while this many slots are still free: a full table would refuse (ENFILE) and the
 * kernel would drop the connection it had accepted. */
static uint32_t accept_margin(const struct rb__ring *r)
{
    return r->slots / 4 < 4096 ? r->slots / 4 : 4096; /* 4096: the listen backlog */
}

static void accept_rotate(struct rb__worker *w)
{
    struct rb__ring *cur = &w->rings[w->accept_ring];
    if (cur->used + accept_margin(cur) < cur->slots)
        return;
    unsigned best = w->accept_ring;
    uint32_t best_free = 0;
    for (unsigned i = 0; i < w->nrings; i++) {
        struct rb__ring *r = &w->rings[i];
        uint32_t free_slots = r->slots - r->used;
        if (r->used + accept_margin(r) < r->slots && free_slots > best_free) {
            best = i;
            best_free = free_slots;
        }
    }
    if (best == w->accept_ring && w->nrings < w->max_rings && ring_open(w, w->nrings) == 0)
        best = w->nrings - 1;
    if (best == w->accept_ring)
        return; /* every table is nearly full: the margin absorbs what still arrives */
    cancel_accept(w, cur);
    w->accept_ring = best;
    accept_keep_armed(w);
}

static void on_accept(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        /* Re-armed by this turn's housekeeping if this is still the accepting ring. */
        unsigned listener = (unsigned)(cqe->user_data & 0xffff);
        r->accept_armed--;
        if (!w->e->cfg.accept_rate)
            r->accept_multishot &= (uint16_t) ~(1u << listener);
    }
    if (cqe->res < 0) {
        /* -EINVAL: the listener was shut down by begin_stop(). */
        if (cqe->res != -ECANCELED && !(w->stopping && cqe->res == -EINVAL))
            rb_log(RB_LOG_WARN, "accept_failed", "worker=%u ring=%u error=%s", w->index, r->index,
                   strerror(-cqe->res));
        if (cqe->res == -ENFILE)
            accept_rotate(w); /* this table is full: move on before re-arming */
        return;
    }
    uint32_t slot = (uint32_t)cqe->res;
    const struct rb_config *cfg = &w->e->cfg;
    struct rb__conn *c = NULL;
    uint32_t n = atomic_fetch_add_explicit(&w->e->conns, 1, memory_order_relaxed);
    if (n >= cfg->max_conns || w->stopping || slot >= r->slots || !(c = rb__slab_alloc(&w->slab))) {
        atomic_fetch_sub_explicit(&w->e->conns, 1, memory_order_relaxed);
        RB__INC(w, rejected_full);
        slot_close(w, r, slot, w->stopping ? RB_CLOSE_SHUTDOWN : RB_CLOSE_FULL, true);
        return;
    }
    memset(c, 0, sizeof(*c));
    rb__timer_init(&c->timer);
    c->gen = (uint32_t)(++w->gen_counter[r->index] & ((1u << RB__GEN_BITS) - 1));
    if (!c->gen)
        c->gen = (uint32_t)++w->gen_counter[r->index];
    c->slot = slot;
    c->ring = r->index;
    c->last_rx_ms = w->now_ms + 1; /* rounded up, as in conn_touch() */
    c->interval_ms = cfg->interval_ms;
    c->timeout_ms = cfg->timeout_ms;
    conn_set_mode(c, cfg->mode);
    unsigned wmax = weight_max(c);
    c->state = (uint8_t)((c->state & 0x0c) | RB_ALIVE | wmax << 4);
    r->by_slot[slot] = c;
    r->used++;
    RB__INC(w, accepted);
    RB__INC(w, conns);
    RB__INC(w, by_liveness[RB_ALIVE]);
    RB__INC(w, by_weight[wmax]);
    if (cfg->peer_addr || cfg->max_conns_per_ip) {
        /* Queued before the receive, so the address is known before the first frame. */
        struct io_uring_sqe *sqe = ring_sqe(w, r);
        if (sqe) {
            rb__prep_fixed_fd_install(sqe, slot);
            io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_PEER, conn_id(w, c)));
        }
    }
    conn_arm_recv(w, c);
    conn_start_timer(w, c);
    accept_rotate(w);
}

static void on_peer(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    if (cqe->res < 0)
        return;
    int fd = cqe->res;
    struct rb__conn *c = conn_lookup(w, cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    bool ok = c && getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
    close(fd);
    if (!ok)
        return;
    struct rb__ring *r = conn_ring(w, c);
    if (r->ip_key) {
        uint64_t key = rb__ip_key(&peer);
        if (key && rb__ip_acquire(w->e, key) < 0) {
            RB__INC(w, rejected_per_ip);
            conn_release(w, c, RB_CLOSE_FULL, 0, RB_CLOSE_FULL);
            return;
        }
        r->ip_key[c->slot] = key;
    }
    struct rb__conn_ext *x;
    if (w->e->cfg.peer_addr && !(c->flags & RB__CF_HELLO) && (x = conn_ext(w, c))) {
        x->peer = peer;
        x->have_peer = true;
    }
}

/* ---- cross-thread hand-off ------------------------------------------------------------------ */

static void arm_wake(struct rb__worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(w, &w->rings[0]);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_WAKE, 0));
}

int rb__worker_post(struct rb__worker *w, const struct rb__msg *m)
{
    struct rb__mbox *q = &w->mbox;
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (;;) {
        struct rb__mbox_cell *cell = &q->cells[pos & q->mask];
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                cell->msg = *m;
                atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
                rb__worker_wake(w);
                return 0;
            }
        } else if (diff < 0) {
            return -EAGAIN;
        } else {
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
}

void rb__worker_wake(struct rb__worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r; /* a full counter already means "wake up" */
}

static void mbox_drain(struct rb__worker *w)
{
    struct rb__mbox *q = &w->mbox;
    for (;;) {
        struct rb__mbox_cell *cell = &q->cells[q->head & q->mask];
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        if (seq != q->head + 1)
            return;
        struct rb__msg m = cell->msg;
        atomic_store_explicit(&cell->seq, q->head + q->mask + 1, memory_order_release);
        q->head++;
        if (m.data) {
            rb__conn_send_local(w, m.id, m.data, m.len);
            free(m.data);
        } else {
            rb__conn_close_local(w, m.id, m.code);
        }
    }
}

int rb__conn_send_local(struct rb__worker *w, uint64_t id, const void *data, size_t len)
{
    struct rb__conn *c = conn_lookup(w, id);
    if (!c)
        return -ENOENT;
    if (len > w->e->cfg.max_frame)
        return -EMSGSIZE;
    uint8_t *out = out_alloc(w, (uint32_t)(RB_FRAME_HEADER_LEN + len));
    if (!out)
        return -ENOMEM;
    conn_send(w, c, out, (uint32_t)rb__put_data(out, data, (uint16_t)len), RB_FRAME_DATA);
    return 0;
}

int rb__conn_close_local(struct rb__worker *w, uint64_t id, uint16_t code)
{
    struct rb__conn *c = conn_lookup(w, id);
    if (!c)
        return -ENOENT;
    conn_release(w, c, code ? code : RB_CLOSE_NORMAL, 0, code ? code : RB_CLOSE_NORMAL);
    return 0;
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void handle_cqe(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    switch ((enum rb__op)(cqe->user_data >> RB__OP_SHIFT)) {
    case RB__OP_RECV:
        on_recv(w, r, cqe);
        break;
    case RB__OP_SEND:
        on_send_failed(w, cqe);
        break;
    case RB__OP_FLUSH:
        on_flush(w, cqe);
        break;
    case RB__OP_ACCEPT:
        on_accept(w, r, cqe);
        break;
    case RB__OP_WAKE:
        arm_wake(w);
        break;
    case RB__OP_PEER:
        on_peer(w, cqe);
        break;
    case RB__OP_CLOSE_FRAME:
        rb_log(RB_LOG_DEBUG, "close_frame_failed", "worker=%u code=%u error=%s", w->index,
               (unsigned)(cqe->user_data & 0xffff), strerror(cqe->res < 0 ? -cqe->res : EIO));
        break;
    default:
        break;
    }
}

static unsigned reap_ring(struct rb__worker *w, struct rb__ring *r)
{
    struct io_uring_cqe *cqes[RB__REAP_BATCH];
    unsigned total = 0, n;
    do {
        n = io_uring_peek_batch_cqe(&r->uring, cqes, RB__REAP_BATCH);
        for (unsigned i = 0; i < n; i++)
            handle_cqe(w, r, cqes[i]);
        io_uring_cq_advance(&r->uring, n);
        rb__bufring_publish(&r->bufs);
        total += n;
    } while (n == RB__REAP_BATCH);
    if (IO_URING_READ_ONCE(*r->uring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
        /* Overflowed completions may still name this turn's output: keep it a while. */
        RB__INC(w, cq_overflow);
        w->overflow_hold = 3;
        io_uring_get_events(&r->uring);
        clock_update(w); /* what they carry is newer than the turn's clock (see run_timers) */
        total += reap_ring(w, r);
    }
    return total;
}

static void reap_all(struct rb__worker *w)
{
    for (unsigned i = 0; i < w->nrings; i++)
        reap_ring(w, &w->rings[i]);
}

/* Twice the steady PING rate of this worker's connections (at the default interval), in a
 * bucket that holds one tick's worth; below zero it counts the PINGs reserved ahead. */
static void ping_refill(struct rb__worker *w)
{
    double per_ms = 2.0 * (double)w->stats.conns / w->e->cfg.interval_ms;
    double burst = per_ms * w->e->cfg.tick_ms;
    if (per_ms < 0.1)
        per_ms = 0.1;
    if (burst < 16)
        burst = 16;
    w->ping_per_ms = per_ms;
    w->ping_tokens += (double)(w->now_ms64 - w->ping_refill_ms) * per_ms;
    w->ping_refill_ms = w->now_ms64;
    if (w->ping_tokens > burst)
        w->ping_tokens = burst;
}

/*
 * Expires due timers. Before a connection is declared dead, every completion that is already
 * there is processed (DEFER_TASKRUN keeps them queued until asked), so a heartbeat that arrived
 * but was not yet read never causes a false death, even when the loop runs late.
 */
static void run_timers(struct rb__worker *w)
{
    uint32_t tick_ms = w->e->cfg.tick_ms;
    ping_refill(w);
    rb__wheel_update(&w->wheel, (uint32_t)(w->now_ms64 / tick_ms));
    struct rb__timer *t;
    uint64_t *dead = NULL;
    size_t ndead = 0, cap = 0;
    while ((t = rb__wheel_get(&w->wheel))) {
        struct rb__conn *c =
            (struct rb__conn *)(void *)((char *)t - offsetof(struct rb__conn, timer));
        RB__INC(w, timer_fires);
        if (conn_timer(w, c))
            continue;
        if (ndead == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *n = realloc(dead, cap * sizeof(*n));
            if (!n) {
                conn_arm_at(w, c, w->now_ms64 + tick_ms); /* try again next tick */
                continue;
            }
            dead = n;
        }
        dead[ndead++] = conn_id(w, c);
    }
    if (!ndead)
        return;
    for (unsigned i = 0; i < w->nrings; i++)
        io_uring_get_events(&w->rings[i].uring);
    /* What those completions carry arrived after the turn's clock was read: with the turn's
     * clock, a turn of seconds (1M connections near saturation) dated them seconds too early,
     * and a peer could later be judged dead that much before its timeout. */
    clock_update(w);
    reap_all(w);
    for (size_t i = 0; i < ndead; i++) {
        struct rb__conn *c = conn_lookup(w, dead[i]);
        if (!c || rb__timer_pending(&c->timer))
            continue;
        if (!(c->flags & RB__CF_RECV)) {
            /* Bytes may wait in the socket for a receive buffer: judge after the re-arm. */
            conn_arm_at(w, c, w->now_ms64 + tick_ms);
            continue;
        }
        if (conn_timer(w, c))
            continue;
        int32_t idle = (int32_t)(w->now_ms - c->last_rx_ms);
        rb__hist_add(&w->stats.lateness_ms, rb_lateness_bounds_ms, (uint64_t)idle - c->timeout_ms);
        conn_set_mark(w, c, RB_DEAD, 0);
        conn_release(w, c, RB_CLOSE_TIMEOUT, 0, RB_CLOSE_TIMEOUT);
    }
    free(dead);
}

static void drain_step(struct rb__worker *w)
{
    unsigned budget = RB__DRAIN_PER_TURN;
    while (w->drain_ring < w->nrings && budget) {
        struct rb__ring *r = &w->rings[w->drain_ring];
        for (; w->drain_slot < r->slots && budget; w->drain_slot++) {
            struct rb__conn *c = r->by_slot[w->drain_slot];
            if (c) {
                conn_release(w, c, RB_CLOSE_SHUTDOWN, 0, RB_CLOSE_SHUTDOWN);
                budget--;
            }
        }
        if (w->drain_slot == r->slots) {
            w->drain_ring++;
            w->drain_slot = 0;
        }
    }
}

/*
 * Stops listening before the drain: a connection that completes its handshake into the backlog of
 * a listener nobody accepts from any more is reset only when the process exits, after its client
 * may already have sent on it (and a client whose send consumed the reset sees a bare EOF). A
 * shut-down listener leaves the SO_REUSEPORT group at once: new SYNs go to a sibling process that
 * still listens, or are refused, so a reconnecting client retries at once. shutdown() also ends
 * the multishot accept (-EINVAL); the cancel covers a listener shutdown() could not stop.
 */
static void begin_stop(struct rb__worker *w)
{
    w->stopping = true;
    w->stop_deadline_ms = w->now_ms64 + w->e->cfg.drain_timeout_ms;
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++)
        if (w->listen_fd[i] >= 0 && shutdown(w->listen_fd[i], SHUT_RDWR) < 0)
            rb_log(RB_LOG_WARN, "listener_shutdown_failed", "worker=%u error=%s", w->index,
                   strerror(errno));
    for (unsigned i = 0; i < w->nrings; i++)
        if (w->rings[i].accept_armed)
            cancel_accept(w, &w->rings[i]);
}

/* Done when every connection is released and queued, and no accept is still in flight: an
 * accept that completes after the last reap would be closed by the ring teardown without its
 * CLOSE(5). */
static bool drained(struct rb__worker *w)
{
    for (unsigned i = 0; i < w->nrings; i++)
        if (w->rings[i].used || w->rings[i].accept_armed || io_uring_sq_ready(&w->rings[i].uring))
            return false;
    return true;
}

static int64_t wait_timeout_ns(struct rb__worker *w)
{
    if (w->stopping)
        return 1000000; /* drain in paced steps */
    uint32_t ticks = rb__wheel_next(&w->wheel);
    uint64_t tick_ms = w->e->cfg.tick_ms;
    /* At least once a second, so a watchdog that checks loop_turns sees an idle loop alive. */
    uint64_t at_ns = (w->now_ms64 + 1000) * 1000000;
    if (ticks != UINT32_MAX && (w->now_ms64 / tick_ms + ticks) * tick_ms * 1000000 < at_ns)
        at_ns = (w->now_ms64 / tick_ms + ticks) * tick_ms * 1000000;
    if (w->accept_resume_ms > w->now_ms64 && w->accept_resume_ms * 1000000 < at_ns)
        at_ns = w->accept_resume_ms * 1000000;
    uint64_t now_ns = rb__clock_ns() - w->e->epoch_ns;
    return at_ns > now_ns ? (int64_t)(at_ns - now_ns) : 0;
}

static void submit_siblings(struct rb__worker *w)
{
    for (unsigned i = 1; i < w->nrings; i++) {
        unsigned n = io_uring_sq_ready(&w->rings[i].uring);
        if (n && rb__ring_submit(&w->rings[i].uring) == 0) {
            RB__INC(w, submits);
            RB__ADD(w, sqes_submitted, n);
        }
    }
}

static int worker_loop(struct rb__worker *w)
{
    const struct rb_config *cfg = &w->e->cfg;
    for (;;) {
        submit_siblings(w);
        struct io_uring *ring0 = &w->rings[0].uring;
        unsigned n = io_uring_sq_ready(ring0);
        int64_t timeout_ns = wait_timeout_ns(w);
        int ret = rb__ring_enter(ring0, cfg->batch_size, timeout_ns,
                                 timeout_ns > 0 ? cfg->batch_window_us : 0);
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            return ret;
        RB__INC(w, submits);
        RB__ADD(w, sqes_submitted, n);
        RB__INC(w, loop_turns);

        w->turn++;
        if (w->overflow_hold)
            w->overflow_hold--;
        else
            out_reset(out_gen(w), w->now_ms64);
        clock_update(w);
        reap_all(w);
        mbox_drain(w);
        if (atomic_load_explicit(&w->e->stop, memory_order_acquire) && !w->stopping)
            begin_stop(w);
        run_timers(w);
        for (unsigned i = 0; i < w->nrings; i++) {
            struct rb__ring *r = &w->rings[i];
            if (r->rearm_len)
                ring_rearm(w, r);
            if (!w->stopping && i == w->accept_ring && w->now_ms64 >= w->accept_resume_ms)
                accept_keep_armed(w);
        }
        if (w->stopping) {
            drain_step(w);
            if ((drained(w) && w->drain_ring >= w->nrings) || w->now_ms64 >= w->stop_deadline_ms) {
                /* Push out the last CLOSE frames, then let ring teardown close what is left. */
                submit_siblings(w);
                rb__ring_submit(ring0);
                return 0;
            }
        }
    }
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int ring_open(struct rb__worker *w, unsigned idx)
{
    struct rb_engine *e = w->e;
    struct rb__ring *r = &w->rings[idx];
    memset(r, 0, sizeof(*r));
    r->w = w;
    r->index = (uint16_t)idx;
    r->gindex = (uint16_t)(w->index * e->rings_per_worker_max + idx);
    r->slots = e->slots_per_ring;
    int ret = rb__ring_init(&r->uring, e->cfg.ring_entries, idx == 0);
    if (ret < 0)
        return ret;
    ret = io_uring_register_files_sparse(&r->uring, r->slots);
    if (ret == 0)
        ret = rb__bufring_init(&r->uring, &r->bufs, RB__BGID, e->cfg.buffers, e->cfg.buffer_size);
    if (ret == 0 && idx > 0)
        ret = io_uring_register_eventfd(&r->uring, w->wake_fd);
    if (ret == 0 && !(r->by_slot = calloc(r->slots, sizeof(*r->by_slot))))
        ret = -ENOMEM;
    if (ret == 0 && e->cfg.max_conns_per_ip && !(r->ip_key = calloc(r->slots, sizeof(*r->ip_key))))
        ret = -ENOMEM;
    if (ret < 0) {
        rb__bufring_free(&r->uring, &r->bufs);
        io_uring_queue_exit(&r->uring);
        free(r->by_slot);
        free(r->ip_key);
        memset(r, 0, sizeof(*r));
        return ret;
    }
    __atomic_store_n(&e->ring_by_gindex[r->gindex], r, __ATOMIC_RELEASE);
    w->nrings = idx + 1;
    atomic_fetch_add(&e->nrings_total, 1);
    __atomic_store_n(&w->stats.rings, w->nrings, __ATOMIC_RELAXED);
    if (idx > 0)
        rb_log(RB_LOG_INFO, "ring_added", "worker=%u rings=%u slots=%u", w->index, w->nrings,
               r->slots);
    return 0;
}

int rb__worker_init(struct rb__worker *w, struct rb_engine *e, unsigned index)
{
    memset(w, 0, sizeof(*w));
    w->e = e;
    w->index = index;
    w->max_rings = e->rings_per_worker_max;
    w->wake_fd = -1;
    for (unsigned i = 0; i < RB_LISTEN_MAX; i++)
        w->listen_fd[i] = -1;
    w->rings = calloc(w->max_rings, sizeof(*w->rings));
    w->gen_counter = calloc(w->max_rings, sizeof(*w->gen_counter));
    uint32_t cells = 4096;
    w->mbox.cells = calloc(cells, sizeof(*w->mbox.cells));
    if (!w->rings || !w->gen_counter || !w->mbox.cells)
        return -ENOMEM;
    w->mbox.mask = cells - 1;
    for (uint32_t i = 0; i < cells; i++)
        atomic_init(&w->mbox.cells[i].seq, i);
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd < 0)
        return -errno;
    int ret = rb__slab_init(&w->slab, sizeof(struct rb__conn), 4096, 0);
    if (ret < 0)
        return ret;
    clock_update(w);
    w->accept_refill_ms = w->ping_refill_ms = w->now_ms64;
    rb__wheel_init(&w->wheel, (uint32_t)(w->now_ms64 / e->cfg.tick_ms));
    w->stats.workers = 1;
    return 0;
}

void rb__worker_destroy(struct rb__worker *w)
{
    for (unsigned i = 0; i < w->nrings; i++) {
        struct rb__ring *r = &w->rings[i];
        for (uint32_t s = 0; s < r->slots; s++) {
            struct rb__conn *c = r->by_slot[s];
            if (c && c->ext) {
                free(c->ext->part);
                if (!(c->flags & RB__CF_FLUSHING))
                    free(c->ext->out);
                free(c->ext);
            }
        }
        /* Exiting the ring closes every socket still in its table. */
        rb__bufring_free(&r->uring, &r->bufs);
        io_uring_queue_exit(&r->uring);
        free(r->by_slot);
        free(r->ip_key);
        free(r->rearm);
    }
    for (unsigned i = 0; i < RB_LISTEN_MAX; i++)
        if (w->listen_fd[i] >= 0)
            close(w->listen_fd[i]);
    for (int g = 0; g < 2; g++) {
        struct rb__out_chunk *k = w->out[g].head;
        while (k) {
            struct rb__out_chunk *next = k->next;
            free(k);
            k = next;
        }
        free(w->out[g].log);
    }
    if (w->mbox.cells) {
        while (w->mbox.head != atomic_load(&w->mbox.tail)) {
            struct rb__mbox_cell *cell = &w->mbox.cells[w->mbox.head & w->mbox.mask];
            free(cell->msg.data);
            w->mbox.head++;
        }
    }
    free(w->mbox.cells);
    free(w->rings);
    free(w->gen_counter);
    rb__slab_destroy(&w->slab);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    w->rings = NULL;
    w->nrings = 0;
}

void *rb__worker_main(void *arg)
{
    struct rb__worker *w = arg;
    struct rb_engine *e = w->e;
    rb__current_worker = w;
    int ret = ring_open(w, 0);
    if (ret == 0) {
        clock_update(w);
        arm_wake(w);
        accept_keep_armed(w);
        ret = rb__ring_submit(&w->rings[0].uring);
    }
    pthread_mutex_lock(&e->start_lock);
    if (ret < 0) {
        e->start_failed++;
        if (!e->start_error)
            e->start_error = ret;
    } else {
        e->started++;
    }
    pthread_cond_broadcast(&e->start_cond);
    pthread_mutex_unlock(&e->start_lock);
    if (ret == 0)
        ret = worker_loop(w);
    if (ret < 0)
        rb_log(RB_LOG_ERROR, "worker_failed", "worker=%u error=%s", w->index, strerror(-ret));
    __atomic_store_n(&w->error, ret, __ATOMIC_RELEASE);
    return NULL;
}
