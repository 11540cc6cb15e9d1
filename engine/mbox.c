/* mbox.c — the cross-thread mailbox: rb_send/rb_close from other threads, and wake-ups. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

int rb__mbox_init(struct rb__mbox *q, uint32_t cells)
{
    q->cells = calloc(cells, sizeof(*q->cells));
    if (!q->cells)
        return -ENOMEM;
    q->mask = cells - 1;
    for (uint32_t i = 0; i < cells; i++)
        atomic_init(&q->cells[i].seq, i);
    return 0;
}

void rb__mbox_free(struct rb__mbox *q)
{
    if (!q->cells)
        return;
    while (q->head != atomic_load(&q->tail)) {
        struct rb__mbox_cell *cell = &q->cells[q->head & q->mask];
        free(cell->msg.data);
        q->head++;
    }
    free(q->cells);
    q->cells = NULL;
}

/* Ring 0 keeps a read of the eventfd in flight: a post, a stop or a sibling ring's completion
 * completes it and wakes the one sleeping thread. */
void rb__mbox_arm_wake(struct rb__worker *w)
{
    struct io_uring_sqe *sqe = rb__ring_sqe(w, &w->rings[0]);
    if (!sqe)
        return;
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_WAKE, 0));
}

/* Bounded MPSC queue (Vyukov): one CAS per message, no lock. */
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

void rb__mbox_drain(struct rb__worker *w)
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
        /* The owner learns here that an id closed meanwhile: the message is dropped. */
        struct rb__conn *c = rb__conn_lookup(w, m.id);
        if (m.data) {
            if (c)
                rb__sess_send(w, c, (enum rb_data_kind)m.kind, m.data, m.len);
            free(m.data);
        } else if (c) {
            rb__conn_release(w, c, m.code ? m.code : RB_CLOSE_NORMAL, 0);
        }
    }
}
