/* out.c — output: the per-turn arena and send log, queued output for slow readers, close chains. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define RB__OUT_CHUNK (64 * 1024)
#define RB__LOG_MIN   1024u  /* send records kept however quiet the turns */
#define RB__TRIM_MS   10000u /* how often burst-sized buffers are given back */

static struct rb__out_gen *out_gen(struct rb__worker *w)
{
    return &w->out[w->turn & 1];
}

/*
 * Gives back what one burst needed and the turns since no longer do: a turn that sends 500,000
 * frames (a stall at 1M connections) grows the arena and the send log to tens of MB, which
 * would otherwise stay for the life of the process (the 1M soak's RSS "drift"). Every
 * RB__TRIM_MS, chunks past the most any turn used since are freed and the log shrinks to twice
 * that turn's length. The generation being reset holds nothing live (see rb__out_reset).
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
void rb__out_reset(struct rb__worker *w)
{
    struct rb__out_gen *g = out_gen(w);
    out_trim(g, w->now_ms64);
    g->cur = g->head;
    if (g->head)
        g->head->used = 0;
    g->log_len = 0;
    w->out_last = NULL;
}

void rb__out_free(struct rb__worker *w)
{
    for (int g = 0; g < 2; g++) {
        struct rb__out_chunk *k = w->out[g].head;
        while (k) {
            struct rb__out_chunk *next = k->next;
            free(k);
            k = next;
        }
        free(w->out[g].log);
        memset(&w->out[g], 0, sizeof(w->out[g]));
    }
}

uint8_t *rb__out_alloc(struct rb__worker *w, uint32_t len)
{
    rb__tls_seal_pending(w); /* a TLS record being filled ends where anything else begins */
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
    w->out_last = NULL;
    return p;
}

/*
 * Room for n SQEs in a row; when the SQ is too full, what is there is submitted mid-turn. A linked
 * chain asks for all its SQEs at once: a submit between two of them would end the batch on a
 * link flag, and the kernel hands such a dangling head to an io-wq thread, so the rest of the
 * chain, submitted next, could overtake it (a shutdown overtaking its CLOSE frame sent peers a
 * bare FIN at shutdown, under CPU contention).
 */
bool rb__out_resize_last(struct rb__worker *w, const uint8_t *end, const uint8_t *new_end)
{
    struct rb__out_chunk *k = out_gen(w)->cur;
    if (!k || k->data + k->used != end || new_end < k->data || new_end > k->data + k->cap)
        return false;
    k->used = (uint32_t)(new_end - k->data);
    w->out_last = NULL;
    return true;
}

bool rb__ring_reserve(struct rb__worker *w, struct rb__ring *r, unsigned n)
{
    /* Never a submit with a TLS record still unsealed in it (its SQE may come earlier). */
    rb__tls_seal_pending(w);
    if (io_uring_sq_space_left(&r->uring) >= n)
        return true;
    unsigned ready = io_uring_sq_ready(&r->uring);
    if (rb__ring_submit(&r->uring) == 0) {
        RB__INC(w, submits);
        RB__ADD(w, sqes_submitted, ready);
    }
    return io_uring_sq_space_left(&r->uring) >= n;
}

struct io_uring_sqe *rb__ring_sqe(struct rb__worker *w, struct rb__ring *r)
{
    return rb__ring_reserve(w, r, 1) ? io_uring_get_sqe(&r->uring) : NULL;
}

/* Appends to the connection's queued output, which goes out in order before any new frame. */
static int out_queue(struct rb__worker *w, struct rb__conn *c, const uint8_t *buf, uint32_t len)
{
    struct rb__conn_ext *x = rb__conn_ext(w, c);
    if (!x)
        return -ENOMEM;
    uint32_t cap = w->e->cfg.max_pending_out;
    struct rb__outq *q = x->out;
    if (!q) {
        if (!(q = malloc(sizeof(*q) + cap)))
            return -ENOMEM;
        q->id = rb__conn_id(w, c);
        q->len = q->off = 0;
        x->out = q;
    }
    if (q->len + len > cap)
        return -ENOBUFS;
    memcpy(q->data + q->len, buf, len);
    q->len += len;
    c->flags |= RB__CF_BLOCKED;
    return 0;
}

static void out_flush(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__outq *q = c->ext ? c->ext->out : NULL;
    if ((c->flags & RB__CF_FLUSHING) || !q || q->off == q->len)
        return;
    struct io_uring_sqe *sqe = rb__ring_sqe(w, rb__conn_ring(w, c));
    if (!sqe)
        return;
    /* No MSG_DONTWAIT: this one may wait for room in the socket, and reports with a CQE. */
    io_uring_prep_send(sqe, (int)c->slot, q->data + q->off, q->len - q->off, MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_FLUSH, (uint64_t)(uintptr_t)q));
    c->flags |= RB__CF_FLUSHING;
    RB__INC(w, send_retries);
}

uint8_t *rb__out_begin(struct rb__worker *w, struct rb__conn *c, uint32_t max_len)
{
    if (c->tls) /* room for the record header before the frame and its tail after it */
        return rb__tls_out_begin(w, c, max_len);
    uint8_t *p = rb__out_alloc(w, max_len);
    w->out_last = p;
    return p;
}

void rb__out_end(struct rb__worker *w, struct rb__conn *c, uint8_t *buf, uint32_t len)
{
    if (c->tls) {
        rb__tls_out_end(w, c, buf, len); /* sealed in place, or left open for the next frame */
        return;
    }
    if (buf == w->out_last) {
        /* The frame came last from the arena: give back the room it did not use. */
        struct rb__out_chunk *k = out_gen(w)->cur;
        k->used = (uint32_t)(buf - k->data) + len;
        w->out_last = NULL;
    }
    rb__out_send(w, c, buf, len);
}

/*
 * Sends bytes that live in this turn's output arena. MSG_DONTWAIT | MSG_WAITALL makes the send
 * finish inside the submitting io_uring_enter, and CQE_SKIP_SUCCESS makes a full send silent, so
 * a heartbeat reply costs one SQE and no completion. A refusal or short send posts a CQE, handled
 * by rb__on_send_failed(). Consecutive sends to one connection extend one SQE.
 */
bool rb__out_send(struct rb__worker *w, struct rb__conn *c, const uint8_t *buf, uint32_t len)
{
    rb__tls_seal_pending(w); /* its SQE first: nothing may be inserted between the log and ours */
    RB__ADD(w, bytes_out, len);
    if (c->flags & RB__CF_BLOCKED) {
        if (out_queue(w, c, buf, len) < 0) {
            if (!(c->flags & RB__CF_CLOSING)) /* (a close chain's own sealing, over TLS) */
                rb__conn_release(w, c, RB_CLOSE_SLOW_READER, 0);
            return false;
        }
        return true;
    }
    struct rb__ring *r = rb__conn_ring(w, c);
    struct rb__out_gen *g = out_gen(w);
    uint64_t id = rb__conn_id(w, c);
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
            return true;
        }
    }
    if (g->log_len == g->log_cap) {
        uint32_t cap = g->log_cap ? g->log_cap * 2 : RB__LOG_MIN;
        struct rb__send_rec *n = realloc(g->log, cap * sizeof(*n));
        if (!n) {
            if (!(c->flags & RB__CF_CLOSING))
                rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            return false;
        }
        g->log = n;
        g->log_cap = cap;
    }
    struct io_uring_sqe *sqe = rb__ring_sqe(w, r);
    if (!sqe)
        return true; /* no room even after a submit: the frame is lost, as a lost packet */
    uint32_t idx = g->log_len++;
    g->log[idx] = (struct rb__send_rec){.id = id, .buf = buf, .len = len};
    io_uring_prep_send(sqe, (int)c->slot, buf, len, MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL);
    sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_SEND, (uint64_t)(w->turn & 1) << 32 | idx));
    return true;
}

/* Queues the frame (when len > 0), then shutdown and close of the direct descriptor. The hard
 * links keep the order even when the frame cannot be sent. */
void rb__slot_close(struct rb__worker *w, struct rb__ring *r, uint32_t slot, const uint8_t *frame,
                    uint32_t len)
{
    struct io_uring_sqe *sqe;
    rb__ring_reserve(w, r, len ? 3 : 2); /* one chain, one submission */
    if (len && (sqe = rb__ring_sqe(w, r))) {
        io_uring_prep_send(sqe, (int)slot, frame, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_CLOSE_FRAME, slot));
        RB__ADD(w, bytes_out, len);
    }
    /* shutdown ends the multishot recv (it holds its own reference to the socket). */
    if ((sqe = rb__ring_sqe(w, r))) {
        io_uring_prep_shutdown(sqe, (int)slot, SHUT_RDWR);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_NONE, 0));
    }
    if ((sqe = rb__ring_sqe(w, r))) {
        io_uring_prep_close_direct(sqe, slot);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_NONE, 0));
    }
}

void rb__out_release(struct rb__conn *c, struct rb__conn_ext *x)
{
    struct rb__outq *q = x->out;
    x->out = NULL;
    if (q && (c->flags & RB__CF_FLUSHING))
        q->off = RB__OUTQ_ORPHAN; /* the kernel still reads it: the flush completion frees it */
    else
        free(q);
}

void rb__on_send_failed(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    uint64_t low = cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1);
    struct rb__out_gen *g = &w->out[(low >> 32) & 1];
    uint32_t idx = (uint32_t)low;
    if (idx >= g->log_len)
        return;
    struct rb__send_rec *rec = &g->log[idx];
    struct rb__conn *c = rb__conn_lookup(w, rec->id);
    if (!c)
        return;
    if (cqe->res < 0 && cqe->res != -EAGAIN) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    /* A later send of the same turn to this connection may have gone out ahead of these bytes:
     * the stream order is lost, so the connection is dropped rather than corrupted. */
    for (uint32_t j = idx + 1; j < g->log_len; j++) {
        if (g->log[j].id == rec->id) {
            rb__conn_release(w, c, RB_CLOSE_SLOW_READER, 0);
            return;
        }
    }
    uint32_t sent = cqe->res > 0 ? (uint32_t)cqe->res : 0;
    if (sent > rec->len)
        return;
    if (out_queue(w, c, rec->buf + sent, rec->len - sent) < 0) {
        rb__conn_release(w, c, RB_CLOSE_SLOW_READER, 0);
        return;
    }
    out_flush(w, c);
}

void rb__on_flush(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    struct rb__outq *q =
        (struct rb__outq *)(uintptr_t)(cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
    if (q->off == RB__OUTQ_ORPHAN) { /* its connection is gone */
        free(q);
        return;
    }
    struct rb__conn *c = rb__conn_lookup(w, q->id);
    if (!c || !c->ext || c->ext->out != q)
        return;
    c->flags &= (uint8_t)~RB__CF_FLUSHING;
    if (cqe->res < 0) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return;
    }
    q->off += (uint32_t)cqe->res;
    if (q->off < q->len) {
        memmove(q->data, q->data + q->off, q->len - q->off);
        q->len -= q->off;
        q->off = 0;
        out_flush(w, c);
        return;
    }
    free(q);
    c->ext->out = NULL;
    c->flags &= (uint8_t)~RB__CF_BLOCKED;
    rb__conn_ext_trim(c);
}
