/* accept.c — accepting: multishot accepts into fixed-file tables, --accept-rate, ring rotation. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Multishot accepts, one per listener not yet armed on this ring. */
static void arm_accept(struct rb__worker *w, struct rb__ring *r)
{
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++) {
        struct io_uring_sqe *sqe;
        if ((r->accept_multishot & (1u << i)) || !(sqe = rb__ring_sqe(w, r)))
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
        struct io_uring_sqe *sqe = rb__ring_sqe(w, r);
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
void rb__accept_cancel(struct rb__worker *w, struct rb__ring *r)
{
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++) {
        struct io_uring_sqe *sqe = rb__ring_sqe(w, r);
        if (!sqe)
            return;
        io_uring_prep_cancel64(sqe, rb__ud(RB__OP_ACCEPT, i), IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_CANCEL, 0));
    }
}

/* --accept-rate: a token bucket per worker, spent by arming that many single-shot accepts. Out
 * of tokens, arrivals wait in the listen backlog: a reconnect storm is slowed, not refused. */
void rb__accept_keep_armed(struct rb__worker *w)
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
    if (best == w->accept_ring && w->nrings < w->max_rings && rb__ring_open(w, w->nrings) == 0)
        best = w->nrings - 1;
    if (best == w->accept_ring)
        return; /* every table is nearly full: the margin absorbs what still arrives */
    rb__accept_cancel(w, cur);
    w->accept_ring = best;
    rb__accept_keep_armed(w);
}

/* Turns away a socket that has no record: the listener's codec says why, if it can (not over
 * TLS: no handshake, no keys, so the socket just closes). */
static void accept_refuse(struct rb__worker *w, struct rb__ring *r, uint32_t slot,
                          unsigned listener)
{
    const struct rb__codec *codec = w->e->listeners[listener].codec;
    int reason = w->stopping ? RB_CLOSE_SHUTDOWN : RB_CLOSE_FULL;
    bool plain = w->e->listeners[listener].spec.transport == RB_TRANSPORT_TCP;
    uint8_t *frame = plain ? rb__out_alloc(w, codec->control_max) : NULL;
    uint32_t len = frame ? codec->put_close(frame, NULL, reason, 0) : 0;
    if (len)
        RB__INC(w, proto[codec->protocol].closes_out);
    RB__INC(w, rejected_full);
    rb__slot_close(w, r, slot, frame, len);
}

void rb__on_accept(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    unsigned listener = (unsigned)(cqe->user_data & 0xffff);
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        /* Re-armed by this turn's housekeeping if this is still the accepting ring. */
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
    if (n >= cfg->max_conns || w->stopping || slot >= r->slots ||
        !(c = rb__conn_new(w, r, slot, listener))) {
        atomic_fetch_sub_explicit(&w->e->conns, 1, memory_order_relaxed);
        accept_refuse(w, r, slot, listener);
        return;
    }
    if (c->tls && rb__tls_start(w, c) < 0) { /* the handshake object and its deadline */
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    if (cfg->peer_addr || cfg->max_conns_per_ip || cfg->proxy_protocol) {
        /* Queued before the receive, so the address is known before the first frame. */
        struct io_uring_sqe *sqe = rb__ring_sqe(w, r);
        if (sqe) {
            rb__prep_fixed_fd_install(sqe, slot);
            io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_PEER, rb__conn_id(w, c)));
        } else if (cfg->proxy_protocol) {
            rb__conn_release(w, c, RB_CLOSE_RESET, 0); /* the source cannot be checked */
            return;
        }
    }
    /* With the PROXY protocol the receive waits for the source check (rb__on_peer): a header
     * from a source outside --proxy-from must never be read, let alone believed. */
    if (!cfg->proxy_protocol)
        rb__recv_arm(w, c);
    rb__live_start(w, c);
    accept_rotate(w);
}

int rb__peer_apply(struct rb__worker *w, struct rb__conn *c, const struct sockaddr_storage *peer)
{
    struct rb__ring *r = rb__conn_ring(w, c);
    if (r->ip_key && !r->ip_key[c->slot]) {
        uint64_t key = rb__ip_key(peer);
        if (key && rb__ip_acquire(w->e, key) < 0) {
            RB__INC(w, rejected_per_ip);
            rb__conn_release(w, c, RB_CLOSE_FULL, 0);
            return -1;
        }
        r->ip_key[c->slot] = key;
    }
    /* Kept behind a pointer of the ext, only until on_open has it. */
    struct rb__conn_ext *x;
    if (w->e->cfg.peer_addr && !(c->flags & RB__CF_OPEN) && (x = rb__conn_ext(w, c)) &&
        (x->peer || (x->peer = malloc(sizeof(*x->peer)))))
        *x->peer = *peer;
    return 0;
}

static bool proxy_source_ok(const struct rb_config *cfg, const struct sockaddr_storage *peer)
{
    for (unsigned i = 0; i < cfg->proxy_from_count; i++)
        if (rb_cidr_match(&cfg->proxy_from[i], peer))
            return true;
    return false;
}

void rb__on_peer(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    struct rb__conn *c = rb__conn_lookup(w, cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
    const struct rb_config *cfg = &w->e->cfg;
    if (cqe->res < 0) {
        if (c && cfg->proxy_protocol)
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    int fd = cqe->res;
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    bool ok = c && getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
    close(fd);
    if (!c)
        return;
    if (!ok) {
        if (cfg->proxy_protocol)
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    if (!cfg->proxy_protocol) {
        rb__peer_apply(w, c, &peer);
        return;
    }
    if (!proxy_source_ok(cfg, &peer)) {
        RB__INC(w, proxy_refused);
        rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
        return;
    }
    /* Kept until the header says otherwise: a LOCAL header leaves the proxy's address. */
    struct rb__conn_ext *x = rb__conn_ext(w, c);
    if (!x) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    if (!x->peer && !(x->peer = malloc(sizeof(*x->peer)))) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    *x->peer = peer;
    rb__recv_arm(w, c);
}
