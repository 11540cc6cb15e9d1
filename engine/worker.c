/* worker.c — a worker thread's setup and teardown: its rings, slab, wheel, mailbox and clock. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

__thread struct rb__worker *rb__current_worker;

void rb__worker_clock(struct rb__worker *w)
{
    w->now_ms64 = (rb_clock_ns() - w->e->epoch_ns) / 1000000;
    w->now_ms = (uint32_t)w->now_ms64;
}

static void ring_free(struct rb__ring *r)
{
    rb__bufring_free(&r->uring, &r->bufs);
    io_uring_queue_exit(&r->uring);
    free(r->by_slot);
    free(r->ip_key);
    free(r->rearm);
    memset(r, 0, sizeof(*r));
}

int rb__ring_open(struct rb__worker *w, unsigned idx)
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
        ring_free(r);
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
    if (!w->rings || !w->gen_counter || rb__mbox_init(&w->mbox, 4096) < 0)
        return -ENOMEM;
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd < 0)
        return -errno;
    int ret = rb__slab_init(&w->slab, sizeof(struct rb__conn), 4096, 0);
    if (ret < 0)
        return ret;
    if ((ret = rb__tls_worker_init(w)) < 0)
        return ret;
    rb__worker_clock(w);
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
            struct rb__conn_ext *x = c ? c->ext : NULL;
            if (!x)
                continue;
            if (x->codec && c->proxy_pending)
                free(x->codec); /* a split PROXY header (recv.c) */
            else if (x->codec)
                rb__conn_codec(w, c)->release(c, x->codec);
            if (!(c->flags & RB__CF_FLUSHING))
                free(x->out);
            free(x->peer);
            if (c->tls)
                rb__tls_release(w, c, RB_CLOSE_SHUTDOWN);
            else
                free(x);
        }
        /* Exiting the ring closes every socket still in its table. */
        ring_free(r);
    }
    for (unsigned i = 0; i < RB_LISTEN_MAX; i++)
        if (w->listen_fd[i] >= 0)
            close(w->listen_fd[i]);
    rb__out_free(w);
    rb__tls_worker_free(w);
    rb__mbox_free(&w->mbox);
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
    int ret = rb__ring_open(w, 0);
    if (ret == 0) {
        rb__worker_clock(w);
        rb__mbox_arm_wake(w);
        rb__accept_keep_armed(w);
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
        ret = rb__worker_loop(w);
    if (ret < 0)
        rb_log(RB_LOG_ERROR, "worker_failed", "worker=%u error=%s", w->index, strerror(-ret));
    __atomic_store_n(&w->error, ret, __ATOMIC_RELEASE);
    return NULL;
}
