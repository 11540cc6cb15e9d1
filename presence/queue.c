/* queue.c — the bounded event queue from the engine's workers to the Redis writer thread. */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/*
 * A bounded MPSC queue (Vyukov's, as the engine's mailbox): one CAS per event, no lock. A full
 * queue refuses at once: a worker never waits for Redis. The writer sleeps on an eventfd that a
 * producer writes only when the writer said it is going to sleep, so a busy writer costs the
 * workers no system call.
 */
int rbp_queue_init(struct rbp_queue *q, uint32_t cells)
{
    q->cells = calloc(cells, sizeof(*q->cells));
    if (!q->cells)
        return -ENOMEM;
    q->mask = cells - 1;
    for (uint32_t i = 0; i < cells; i++)
        atomic_init(&q->cells[i].seq, i);
    atomic_init(&q->tail, 0);
    q->head = 0;
    atomic_init(&q->sleeping, 0);
    q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->wake_fd < 0) {
        free(q->cells);
        q->cells = NULL;
        return -errno;
    }
    return 0;
}

void rbp_queue_free(struct rbp_queue *q)
{
    struct rbp_event ev;
    if (!q->cells)
        return;
    while (rbp_queue_pop(q, &ev))
        rbp_entry_unref(ev.entry);
    free(q->cells);
    q->cells = NULL;
    close(q->wake_fd);
}

int rbp_queue_push(struct rbp_queue *q, const struct rbp_event *ev)
{
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (;;) {
        struct rbp_cell *cell = &q->cells[pos & q->mask];
        uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (diff < 0) {
            return -EAGAIN;
        } else {
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
    struct rbp_cell *cell = &q->cells[pos & q->mask];
    cell->ev = *ev;
    atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
    if (atomic_load(&q->sleeping) && atomic_exchange(&q->sleeping, 0)) {
        uint64_t one = 1;
        ssize_t r = write(q->wake_fd, &one, sizeof(one));
        (void)r; /* a full counter already means "wake up" */
    }
    return 0;
}

bool rbp_queue_pop(struct rbp_queue *q, struct rbp_event *out)
{
    struct rbp_cell *cell = &q->cells[q->head & q->mask];
    uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
    if (seq != q->head + 1)
        return false;
    *out = cell->ev;
    atomic_store_explicit(&cell->seq, q->head + q->mask + 1, memory_order_release);
    __atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED); /* read by the metrics thread */
    return true;
}

uint64_t rbp_queue_depth(struct rbp_queue *q)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    return tail > head ? tail - head : 0;
}
