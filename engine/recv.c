/* recv.c — receive: multishot recv on the ring's provided buffers, ENOBUFS re-arm in batches. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RB__REARM_KEEP 1024u /* re-arm queue entries kept once the queue has drained */

void rb__recv_arm(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__ring *r = rb__conn_ring(w, c);
    struct io_uring_sqe *sqe = rb__ring_sqe(w, r);
    if (!sqe)
        return;
    io_uring_prep_recv_multishot(sqe, (int)c->slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    sqe->buf_group = RB__BGID;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_RECV, rb__conn_id(w, c)));
    c->flags |= RB__CF_RECV;
}

/* Waits for buffers to come back; re-armed in bounded batches, never all at once (an immediate
 * re-arm of every connection that hit ENOBUFS is a storm of ENOBUFS completions). */
static void rearm_queue(struct rb__worker *w, struct rb__ring *r, struct rb__conn *c, uint64_t id)
{
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
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            return;
        }
        r->rearm = n;
        r->rearm_cap = cap;
    }
    r->rearm[r->rearm_len++] = id;
    c->flags |= RB__CF_REARM;
}

/*
 * --proxy-protocol: the stage before the transport and the codec. Until the PROXY header is
 * complete every byte goes to proxy.c; a header split across reads waits in ext->codec (no byte
 * has reached the codec yet, so its slot is free; conn.c frees it as such while proxy_pending).
 * Then the header's address becomes the peer (per-IP limit, on_open) and the bytes after it go
 * on. *p and *n are advanced past what the stage took. -1: the connection was released.
 */
struct proxy_part {
    uint32_t len;
    uint8_t data[RB__PROXY_MAX];
};

static int proxy_stage(struct rb__worker *w, struct rb__conn *c, uint8_t **p, size_t *n)
{
    struct rb__conn_ext *x = rb__conn_ext(w, c);
    struct proxy_part *pp = x ? x->codec : NULL;
    struct rb__proxy_hdr h;
    size_t held = pp ? pp->len : 0, used;
    int r;
    if (!x) {
        r = -ENOMEM;
    } else if (!pp) {
        r = rb__proxy_parse(*p, *n, &h); /* the usual case: the whole header in one read */
        if (r == 0 && !(pp = x->codec = malloc(sizeof(*pp))))
            r = -ENOMEM;
        if (r == 0) {
            memcpy(pp->data, *p, *n); /* shorter than RB__PROXY_MAX, or parse had refused it */
            pp->len = (uint32_t)*n;
            *n = 0;
            return 0;
        }
    } else {
        size_t take = *n < RB__PROXY_MAX - held ? *n : RB__PROXY_MAX - held;
        memcpy(pp->data + held, *p, take);
        pp->len += (uint32_t)take;
        r = rb__proxy_parse(pp->data, pp->len, &h);
        if (r == 0) {
            *n = 0;
            return 0;
        }
    }
    if (r < 0) {
        if (r == -EPROTO)
            RB__INC(w, proxy_bad);
        rb__conn_release(w, c, r == -EPROTO ? RB_CLOSE_PROTOCOL : RB_CLOSE_RESET, 0);
        return -1;
    }
    used = (size_t)r - held;
    free(pp);
    x->codec = NULL;
    c->proxy_pending = 0;
    c->proxy_local = h.local;
    /* rb__on_peer kept the connection's own address in ext: it stands for a LOCAL header. */
    struct sockaddr_storage peer = h.local && x->peer ? *x->peer : h.src;
    free(x->peer);
    x->peer = NULL;
    if (rb__peer_apply(w, c, &peer) < 0)
        return -1;
    rb__conn_ext_trim(c);
    *p += used;
    *n -= used;
    return 0;
}

/*
 * Bytes go to the connection's transport: plain, straight to its codec; TLS, to the handshake or
 * the record layer, whose plaintext goes to the codec. This file never sees a frame or a record.
 * IORING_CQE_F_MORE is checked on every completion: without it the request has ended.
 */
void rb__on_recv(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    uint64_t id = cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1);
    struct rb__conn *c = rb__conn_lookup(w, id);
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (c && cqe->res > 0) {
            uint8_t *p = rb__bufring_addr(&r->bufs, bid);
            size_t n = (size_t)cqe->res;
            RB__ADD(w, bytes_in, (uint64_t)cqe->res);
            if (c->proxy_pending && proxy_stage(w, c, &p, &n) < 0)
                c = NULL;
            else if (n && (c->tls ? rb__tls_input(w, c, p, n)
                                  : rb__conn_codec(w, c)->input(w, c, p, n)) < 0)
                c = NULL;
        }
        rb__bufring_recycle(&r->bufs, bid);
    }
    if (more || !c)
        return;
    c->flags &= (uint8_t)~RB__CF_RECV;
    if (cqe->res == -ENOBUFS)
        rearm_queue(w, r, c, id);
    else if (cqe->res > 0)
        rb__recv_arm(w, c); /* the kernel ended the multishot (e.g. CQ pressure): go on */
    else if (cqe->res == -ETIMEDOUT && rb__conn_mode(c) == RB_MODE_KERNEL) {
        /* The kernel's keepalive verdict (TCP_USER_TIMEOUT passed with probes unanswered). */
        RB__INC(w, keepalive_timeouts);
        rb__live_set_mark(w, c, RB_DEAD, 0);
        rb__conn_release(w, c, RB_CLOSE_TIMEOUT, 0);
    } else if (c->tls && rb__tls_eof(c, cqe->res == 0 ? RB_CLOSE_EOF : RB_CLOSE_RESET))
        return; /* the handshake step releases it once it has judged what came before */
    else if (cqe->res == 0)
        rb__conn_release(w, c, RB_CLOSE_EOF, 0);
    else
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
}

void rb__recv_rearm(struct rb__worker *w, struct rb__ring *r)
{
    uint32_t budget = r->bufs.count / 2, i = r->rearm_head;
    for (; i < r->rearm_len && budget; i++) {
        struct rb__conn *c = rb__conn_lookup(w, r->rearm[i]);
        if (!c || !(c->flags & RB__CF_REARM))
            continue; /* gone, or re-armed ahead of the queue by the death check (loop.c) */
        c->flags &= (uint8_t)~RB__CF_REARM;
        rb__recv_arm(w, c);
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
