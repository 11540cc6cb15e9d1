/* load_conn.c — ringbeat-load connection lifecycle: connect, close, reconnect backoff. */
#include "load_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

/* ---- connection lifecycle ---- */

void ld_arm_recv(struct lworker *w, struct lring *r, uint32_t slot)
{
    struct lconn *c = &r->c[slot];
    if (ld_ring_reserve(w, r, 1) < 0)
        return; /* retried through the re-arm queue below */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_recv_multishot(sqe, (int)slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    sqe->user_data = ld_ud_make(OP_RECV, c->gen, slot);
    c->flags |= CF_RECV;
}

void ld_rearm_enqueue(struct lring *r, uint32_t slot)
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
void ld_pending_leave(struct lworker *w, struct lring *r, struct lconn *c)
{
    if (c->flags & CF_WAS_PENDING) {
        c->flags &= (uint8_t)~CF_WAS_PENDING;
        CADD(w, pending_now, -1);
        if (r->tls)
            r->inflight--;
    }
}

/* Closes our side. rst: SO_LINGER 0 first, so close() sends RST. */
void ld_begin_close(struct lworker *w, struct lring *r, uint32_t slot, bool send_close1, bool rst,
                    uint64_t now)
{
    struct lconn *c = &r->c[slot];
    if (c->state == CS_CLOSING || c->state == CS_DONE || c->state == CS_BACKOFF ||
        c->state == CS_IDLE)
        return;
    if (c->state == CS_UP)
        CADD(w, up_now, -1);
    ld_pending_leave(w, r, c);
    c->state = CS_CLOSING;
    if (send_close1) {
        uint8_t f[LWS_FRAME_MAX];
        uint32_t n = ld_put_close(w->L->cfg, f, RB_CLOSE_NORMAL);
        ld_send_bytes(w, r, slot, f, n, now);
        uint8_t cn[32];
        int k = r->tls ? ltls_close_notify(r->tls, slot, cn) : 0;
        if (k > 0)
            ld_send_wire(w, r, slot, cn, (uint32_t)k, now);
    }
    if (ld_ring_reserve(w, r, 3) < 0) {
        /* cannot happen after a successful flush of an empty SQ; keep the slot closing */
        w->err = -EBUSY;
        return;
    }
    struct io_uring_sqe *sqe;
    if (rst) {
        if (w->L->linger_cmd) {
            sqe = io_uring_get_sqe(&r->ring);
            ld_prep_setsockopt(sqe, (int)slot, SOL_SOCKET, SO_LINGER, &ld_linger_rst,
                               sizeof(ld_linger_rst));
            sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
            sqe->user_data = ld_ud_make(OP_LINGER, c->gen, slot);
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
    io_uring_prep_cancel64(sqe, ld_ud_make(OP_RECV, c->gen, slot), 0);
    sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
    sqe->user_data = ld_ud_make(OP_CANCEL, c->gen, slot);
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_close_direct(sqe, slot);
    sqe->user_data = ld_ud_make(OP_CLOSE, c->gen, slot);
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

void ld_heap_pop(struct lring *r)
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
void ld_finish_close(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    const struct load_cfg *cfg = w->L->cfg;
    r->active--;
    c->gen++;
    c->flags &= (uint8_t)~CF_LIFETIME;
    ld_rx_reset(c);
    if (r->tls)
        ltls_reset(r->tls, slot);
    int phase = LD(&w->L->phase);
    if (cfg->reconnect && phase == PH_RUN && !(c->flags & CF_SILENT) && r->heap) {
        uint64_t d = BACKOFF_BASE_US << (c->attempts < 16 ? c->attempts : 16);
        if (d > BACKOFF_CAP_US)
            d = BACKOFF_CAP_US;
        /* jitter after the cap, so capped retries do not march in step */
        d += ld_rng_next(&r->rng) % (d / 2 + 1);
        if (c->attempts < 255)
            c->attempts++;
        c->state = CS_BACKOFF;
        c->t_us = now + d;
        heap_push(r, c->t_us, slot);
    } else {
        c->state = CS_DONE;
    }
}

void ld_launch(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
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
    sqe->user_data = ld_ud_make(OP_SOCKET, c->gen, slot);
    if (L->linger_cmd) {
        /* heartbeats are single small frames: Nagle would only delay them */
        sqe = io_uring_get_sqe(&r->ring);
        ld_prep_setsockopt(sqe, (int)slot, IPPROTO_TCP, TCP_NODELAY, &ld_one_int,
                           sizeof(ld_one_int));
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = ld_ud_make(OP_NODELAY, c->gen, slot);
    }
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_connect(sqe, (int)slot, (const struct sockaddr *)dst, sizeof(*dst));
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
    sqe->user_data = ld_ud_make(OP_CONNECT, c->gen, slot);
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_link_timeout(sqe, &r->connect_ts, 0);
    sqe->user_data = ld_ud_make(OP_LTIMEOUT, c->gen, slot);
}

/* The peer ended the connection (CLOSE frame, FIN or error). */
void ld_peer_closed(struct lworker *w, struct lring *r, uint32_t slot, int code, bool eof,
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
    ld_begin_close(w, r, slot, false, false, now);
}

void ld_protocol_error(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    CADD(w, protocol_errors, 1);
    struct lconn *c = &r->c[slot];
    if (c->state == CS_UP || c->state == CS_HELLO) {
        uint8_t f[LWS_FRAME_MAX];
        uint32_t n = ld_put_close(w->L->cfg, f, RB_CLOSE_PROTOCOL);
        ld_send_bytes(w, r, slot, f, n, now);
    }
    ld_begin_close(w, r, slot, false, false, now);
}
