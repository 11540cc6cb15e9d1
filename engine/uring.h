/* uring.h — the small io_uring backend: ring setup, buffer rings, batched enter, missing helpers.
 */
#ifndef RB_URING_H
#define RB_URING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

/* A provided-buffer ring: receive buffers belong to the ring, not to any connection. */
struct rb__bufring {
    struct io_uring_buf_ring *br;
    uint8_t *base;
    uint32_t count, size, mask;
    uint16_t bgid;
    uint16_t pending; /* buffers added but not yet published */
};

/*
 * Sets up a ring. The ring a worker sleeps on ("primary") uses SINGLE_ISSUER | DEFER_TASKRUN
 * (completions are run only when the worker asks, in one batch); its siblings use COOP_TASKRUN
 * so their completions are posted whenever the worker enters the kernel for any ring. Falls back
 * to plainer flags on kernels that refuse them.
 */
int rb__ring_init(struct io_uring *ring, unsigned entries, bool primary);
bool rb__ring_has_min_wait(const struct io_uring *ring);

int rb__bufring_init(struct io_uring *ring, struct rb__bufring *b, uint16_t bgid, uint32_t count,
                     uint32_t size);
void rb__bufring_free(struct io_uring *ring, struct rb__bufring *b);
static inline uint8_t *rb__bufring_addr(const struct rb__bufring *b, uint16_t bid)
{
    return b->base + (size_t)bid * b->size;
}
/* Gives a buffer back; rb__bufring_publish() makes the batch visible to the kernel at once. */
static inline void rb__bufring_recycle(struct rb__bufring *b, uint16_t bid)
{
    io_uring_buf_ring_add(b->br, rb__bufring_addr(b, bid), b->size, bid, b->mask, b->pending);
    b->pending++;
}
static inline void rb__bufring_publish(struct rb__bufring *b)
{
    if (b->pending) {
        io_uring_buf_ring_advance(b->br, b->pending);
        b->pending = 0;
    }
}

/*
 * Submits everything queued and waits for completions in one io_uring_enter: returns when
 * `wait_nr` completions are there, or `min_wait_us` has passed with at least one, or `timeout_ns`
 * has passed (the wheel's next deadline), whichever comes first. min_wait needs kernel 6.12
 * (IORING_FEAT_MIN_TIMEOUT); without it the call waits for one completion. 0 or -errno
 * (-ETIME and -EINTR are normal wake-ups).
 */
int rb__ring_enter(struct io_uring *ring, unsigned wait_nr, int64_t timeout_ns,
                   uint32_t min_wait_us);
/* Runs the ring's deferred task work, as much as its CQ has room for, without waiting. */
int rb__ring_run_work(struct io_uring *ring);
/* Submits without waiting (sibling rings, or a full SQ in the middle of a turn). */
int rb__ring_submit(struct io_uring *ring);

/* SQE preparation that liburing 2.3 has no helper for. */
void rb__prep_setsockopt_direct(struct io_uring_sqe *sqe, unsigned slot, int level, int optname,
                                const void *optval, unsigned optlen);
void rb__prep_fixed_fd_install(struct io_uring_sqe *sqe, unsigned slot);
/* The unread byte count of a direct descriptor's socket, as the completion's res. */
void rb__prep_siocinq_direct(struct io_uring_sqe *sqe, unsigned slot);

#endif
