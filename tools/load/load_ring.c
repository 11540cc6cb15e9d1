/* load_ring.c — ringbeat-load rings: submission, the send log, ring and buffer-ring setup. */
#include "load_int.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- submission helpers ---- */

/*
 * The frames of the submit that just returned left inside it: their send time is the time just
 * before the io_uring_enter (t), and a PONG's lateness is measured to it. Taken before, not
 * after: a frame never looks sent later than it was, so the server can never look early (a
 * clock read after the enter counted a preempted thread's pause, up to 5 ms on a busy box, as
 * the frame's flight time).
 */
static void stamp_sent(struct lworker *w, struct lring *r, uint64_t t)
{
    if (!r->nsent)
        return;
    for (uint32_t i = 0; i < r->nsent; i++) {
        const struct sent_ent *e = &r->sent[i];
        struct lconn *c = &r->c[e->slot];
        if (c->gen != e->gen)
            continue;
        c->last_sent_us = t;
        if (!e->pong_read_us)
            continue;
        uint64_t d = t > e->pong_read_us ? t - e->pong_read_us : 0;
        lh_record(&w->answer_us, d);
        if (d > LOAD_LATE_ANSWER_US) {
            CADD(w, late_answers, 1);
            c->flags |= CF_LATE;
        } else {
            c->flags &= (uint8_t)~CF_LATE;
        }
    }
    r->nsent = 0;
}

int ld_ring_flush(struct lworker *w, struct lring *r)
{
    uint64_t t = r->nsent ? ld_now_us(w->L) : 0;
    while (io_uring_sq_ready(&r->ring) > 0) {
        int ret = io_uring_submit(&r->ring);
        CADD(w, submits, 1);
        if (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) {
            /* completions backed up: let the loop reap them first */
            return ret;
        }
        if (ret < 0)
            return ret;
        if (ret == 0)
            return -EAGAIN;
    }
    /* MSG_DONTWAIT sends finished inside that enter: their bytes may be reused */
    r->tx_used = 0;
    stamp_sent(w, r, t);
    return 0;
}

/*
 * liburing 2.3 has no helper for IORING_OP_URING_CMD socket commands (kernel 6.7+), so the
 * SETSOCKOPT SQE is written by hand with the kernel's field layout: cmd_op at off[0:31], level at
 * addr[0:31], optname at addr[32:63], optlen in splice_fd_in, optval in addr3.
 */
#define RB_SOCKET_URING_OP_SETSOCKOPT 3u
void ld_prep_setsockopt(struct io_uring_sqe *sqe, int fd, int level, int optname,
                        const void *optval, uint32_t optlen)
{
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
    sqe->cmd_op = RB_SOCKET_URING_OP_SETSOCKOPT;
    sqe->addr = U64((uint32_t)level) | U64((uint32_t)optname) << 32;
    sqe->splice_fd_in = (int32_t)optlen;
    sqe->addr3 = (uint64_t)(uintptr_t)optval;
}

const int ld_one_int = 1;
const struct linger ld_linger_rst = {.l_onoff = 1, .l_linger = 0};

/* ---- setup ---- */

int ld_ring_setup(struct load *L, struct lworker *w, struct lring *r, uint32_t ridx)
{
    const struct load_cfg *cfg = L->cfg;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    /*
     * SINGLE_ISSUER | DEFER_TASKRUN: completions wait for the worker to ask (no interruption
     * of its sleep per completion); the ring is enabled by the worker thread, its one issuer.
     * Older kernels: COOP_TASKRUN, then plain rings.
     */
    static const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                         IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED,
                                     IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0};
    int ret = -EINVAL;
    for (unsigned k = 0; k < sizeof(tries) / sizeof(tries[0]) && ret == -EINVAL; k++) {
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | tries[k];
        p.cq_entries = CQ_ENTRIES;
        ret = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
        r->disabled = ret == 0 && (tries[k] & IORING_SETUP_R_DISABLED);
    }
    if (ret < 0)
        return ret;
    r->ring_ok = true;
    ret = io_uring_register_files_sparse(&r->ring, r->nslots);
    if (ret < 0)
        return ret;
    ret = io_uring_register_eventfd(&r->ring, w->efd);
    if (ret < 0)
        return ret;

    r->br_bytes = (size_t)cfg->buffers * sizeof(struct io_uring_buf);
    r->br = mmap(NULL, r->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->br == MAP_FAILED) {
        r->br = NULL;
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)r->br, .ring_entries = cfg->buffers, .bgid = 0};
    ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (ret < 0)
        return ret;
    r->br_ok = true;
    io_uring_buf_ring_init(r->br);
    r->bufs = malloc((size_t)cfg->buffers * cfg->buffer_size);
    if (!r->bufs)
        return -ENOMEM;
    int mask = io_uring_buf_ring_mask(cfg->buffers);
    for (uint32_t i = 0; i < cfg->buffers; i++)
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * cfg->buffer_size, cfg->buffer_size,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(r->br, (int)cfg->buffers);

    r->c = calloc(r->nslots, sizeof(*r->c));
    r->order = malloc(sizeof(uint32_t) * r->nslots);
    r->rearm = malloc(sizeof(uint32_t) * r->nslots);
    r->sent = malloc(sizeof(*r->sent) * RING_ENTRIES);
    r->tx_cap = RING_ENTRIES * TX_FRAME_MAX;
    r->tx = malloc(r->tx_cap);
    if (cfg->reconnect)
        r->heap = malloc(sizeof(*r->heap) * r->nslots);
    if (!r->c || !r->order || !r->rearm || !r->sent || !r->tx || (cfg->reconnect && !r->heap))
        return -ENOMEM;
    r->rng = cfg->seed ^ (U64(w->idx) << 32 | ridx) * 0x9e3779b97f4a7c15ull;
    for (uint32_t s = 0; s < r->nslots; s++) {
        uint32_t j = s * w->nrings + ridx;
        r->c[s].id = j * cfg->workers + w->idx;
        r->order[s] = s;
        w->silent_members += ld_is_silenced_member(L, r->c[s].id);
        w->reset_members += ld_is_reset_member(L, r->c[s].id);
    }
    /* shuffled phase order: neighbours in the table do not ping together */
    for (uint32_t s = r->nslots; s > 1; s--) {
        uint32_t k = (uint32_t)(ld_rng_next(&r->rng) % s);
        uint32_t t = r->order[s - 1];
        r->order[s - 1] = r->order[k];
        r->order[k] = t;
    }
    r->ridx = ridx;
    if (L->tls && (ret = ltls_ring_new(L->tls, r->nslots, &r->tls)) < 0)
        return ret;
    r->connect_ts.tv_sec = (long long)(cfg->connect_timeout_us / 1000000);
    r->connect_ts.tv_nsec = (long long)(cfg->connect_timeout_us % 1000000) * 1000;
    return 0;
}

void ld_ring_teardown(struct lring *r)
{
    if (r->br_ok)
        io_uring_unregister_buf_ring(&r->ring, 0);
    if (r->ring_ok)
        io_uring_queue_exit(&r->ring);
    if (r->br)
        munmap(r->br, r->br_bytes);
    free(r->bufs);
    for (uint32_t i = 0; r->c && i < r->nslots; i++)
        ld_rx_reset(&r->c[i]);
    free(r->c);
    free(r->order);
    free(r->rearm);
    free(r->sent);
    free(r->tx);
    free(r->heap);
    ltls_ring_free(r->tls);
}

/* Is SO_LINGER through IORING_OP_URING_CMD available (kernel 6.7+)? */
bool ld_probe_setsockopt_cmd(void)
{
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) < 0)
        return false;
    bool ok = false;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        ld_prep_setsockopt(sqe, fd, SOL_SOCKET, SO_LINGER, &ld_linger_rst, sizeof(ld_linger_rst));
        struct io_uring_cqe *cqe;
        if (io_uring_submit(&ring) == 1 && io_uring_wait_cqe(&ring, &cqe) == 0) {
            if (cqe->res == 0) {
                struct linger lg;
                socklen_t len = sizeof(lg);
                ok = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff == 1 &&
                     lg.l_linger == 0;
            }
            io_uring_cqe_seen(&ring, cqe);
        }
        close(fd);
    }
    io_uring_queue_exit(&ring);
    return ok;
}
