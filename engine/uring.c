/* uring.c — the small io_uring backend: ring setup, buffer rings, batched enter, missing helpers.
 */
#include "uring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Newer than liburing 2.3's headers; values from the kernel's uapi. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif
#define RB__OP_FIXED_FD_INSTALL        54
#define RB__SOCKET_URING_OP_SIOCINQ    0
#define RB__SOCKET_URING_OP_SETSOCKOPT 3

int rb__ring_init(struct io_uring *ring, unsigned entries, bool primary)
{
    struct io_uring_params p;
    /* A deep CQ absorbs bursts of multishot completions without overflowing. */
    const unsigned base = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
    const unsigned tries[3] = {
        base | IORING_SETUP_SINGLE_ISSUER |
            (primary ? IORING_SETUP_DEFER_TASKRUN : IORING_SETUP_COOP_TASKRUN),
        base | IORING_SETUP_COOP_TASKRUN,
        base,
    };
    int ret = -EINVAL;
    for (unsigned i = 0; i < 3; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        p.cq_entries = entries * 4;
        ret = io_uring_queue_init_params(entries, ring, &p);
        if (ret != -EINVAL)
            break;
    }
    return ret;
}

bool rb__ring_has_min_wait(const struct io_uring *ring)
{
    return ring->features & IORING_FEAT_MIN_TIMEOUT;
}

int rb__bufring_init(struct io_uring *ring, struct rb__bufring *b, uint16_t bgid, uint32_t count,
                     uint32_t size)
{
    /* The kernel wants a power-of-two count; io_uring_setup_buf_ring is newer than liburing 2.3. */
    if (count == 0 || (count & (count - 1)) || count > 32768 || size == 0)
        return -EINVAL;
    memset(b, 0, sizeof(*b));
    size_t ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    b->br = mem;
    io_uring_buf_ring_init(b->br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)mem, .ring_entries = count, .bgid = bgid};
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret) {
        munmap(mem, ring_bytes);
        return ret;
    }
    b->base = malloc((size_t)count * size);
    if (!b->base) {
        io_uring_unregister_buf_ring(ring, bgid);
        munmap(mem, ring_bytes);
        return -ENOMEM;
    }
    b->count = count;
    b->size = size;
    b->mask = io_uring_buf_ring_mask(count);
    b->bgid = bgid;
    for (uint32_t i = 0; i < count; i++)
        rb__bufring_recycle(b, (uint16_t)i);
    rb__bufring_publish(b);
    return 0;
}

void rb__bufring_free(struct io_uring *ring, struct rb__bufring *b)
{
    if (!b->br)
        return;
    io_uring_unregister_buf_ring(ring, b->bgid);
    munmap(b->br, (size_t)b->count * sizeof(struct io_uring_buf));
    free(b->base);
    memset(b, 0, sizeof(*b));
}

/* liburing 2.3 cannot pass min_wait_usec (it was `pad`), so the SQ is flushed and the enter made
 * here. */
struct rb__getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
};

static unsigned rb__flush_sq(struct io_uring *ring)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - *sq->khead;
}

int rb__ring_enter(struct io_uring *ring, unsigned wait_nr, int64_t timeout_ns,
                   uint32_t min_wait_us)
{
    unsigned to_submit = rb__flush_sq(ring);
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                   .tv_nsec = timeout_ns % 1000000000};
    struct rb__getevents_arg arg = {.sigmask_sz = _NSIG / 8,
                                    .min_wait_usec = rb__ring_has_min_wait(ring) ? min_wait_us : 0,
                                    .ts = timeout_ns >= 0 ? (uint64_t)(uintptr_t)&ts : 0};
    if (!arg.min_wait_usec)
        wait_nr = 1;
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    if (ring->int_flags & 1 /* INT_FLAG_REG_RING */)
        flags |= IORING_ENTER_REGISTERED_RING;
    int ret = (int)syscall(__NR_io_uring_enter, ring->enter_ring_fd, to_submit, wait_nr, flags,
                           &arg, sizeof(arg));
    return ret < 0 ? -errno : 0;
}

int rb__ring_run_work(struct io_uring *ring)
{
    /* io_uring_get_events asks for 0 completions, and a DEFER_TASKRUN ring then runs only a
     * small batch of its task work (the kernel's default cap); asking for as many completions as
     * the CQ has room for, with a timeout already expired, runs that many and returns. */
    unsigned room = *ring->cq.kring_entries - io_uring_cq_ready(ring);
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 0};
    struct rb__getevents_arg arg = {.sigmask_sz = _NSIG / 8, .ts = (uint64_t)(uintptr_t)&ts};
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    if (ring->int_flags & 1 /* INT_FLAG_REG_RING */)
        flags |= IORING_ENTER_REGISTERED_RING;
    int ret = (int)syscall(__NR_io_uring_enter, ring->enter_ring_fd, 0, room ? room : 1, flags,
                           &arg, sizeof(arg));
    return ret < 0 && errno != ETIME ? -errno : 0;
}

int rb__ring_submit(struct io_uring *ring)
{
    int ret = io_uring_submit(ring);
    return ret < 0 ? ret : 0;
}

void rb__prep_setsockopt_direct(struct io_uring_sqe *sqe, unsigned slot, int level, int optname,
                                const void *optval, unsigned optlen)
{
    /* IORING_OP_URING_CMD / SOCKET_URING_OP_SETSOCKOPT (kernel 6.7): cmd_op shares the `off`
     * word, level and optname the `addr` word, optlen the file_index word, optval addr3. */
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, (int)slot, NULL, 0, 0);
    sqe->off = RB__SOCKET_URING_OP_SETSOCKOPT;
    sqe->addr = (uint32_t)level | (uint64_t)(uint32_t)optname << 32;
    sqe->splice_fd_in = (int)optlen;
    sqe->addr3 = (uint64_t)(uintptr_t)optval;
    sqe->flags |= IOSQE_FIXED_FILE;
}

void rb__prep_siocinq_direct(struct io_uring_sqe *sqe, unsigned slot)
{
    /* IORING_OP_URING_CMD / SOCKET_URING_OP_SIOCINQ (kernel 6.7; liburing 2.3 has no helper): the
     * completion's res is the socket's unread byte count (ioctl SIOCINQ on a direct descriptor,
     * where ioctl(2) cannot reach). */
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, (int)slot, NULL, 0, 0);
    sqe->off = RB__SOCKET_URING_OP_SIOCINQ;
    sqe->flags |= IOSQE_FIXED_FILE;
}

void rb__prep_fixed_fd_install(struct io_uring_sqe *sqe, unsigned slot)
{
    /* IORING_OP_FIXED_FD_INSTALL (kernel 6.8): a regular fd for a direct descriptor, so the
     * peer address can be read with getpeername(). install_fd_flags 0 means O_CLOEXEC. */
    io_uring_prep_rw(RB__OP_FIXED_FD_INSTALL, sqe, (int)slot, NULL, 0, 0);
    sqe->flags |= IOSQE_FIXED_FILE;
}
