/* loop.c — the loop turn: submit and wait, reap completions, run timers, drain on stop. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define RB__REAP_BATCH     256
#define RB__DRAIN_PER_TURN 8192
/* A death waits this long once for bytes SIOCINQ found unread. */
#define RB__DEATH_GRACE_TICKS 3
/* A turn later than this against its wheel deadline sheds new work (accepts, PINGs). */
#define RB__LAG_SHED_TICKS     5
#define RB__ACCEPT_PAUSE_TICKS 10

static void on_inq(struct rb__worker *w, struct io_uring_cqe *cqe);

static void handle_cqe(struct rb__worker *w, struct rb__ring *r, struct io_uring_cqe *cqe)
{
    switch ((enum rb__op)(cqe->user_data >> RB__OP_SHIFT)) {
    case RB__OP_RECV:
        rb__on_recv(w, r, cqe);
        break;
    case RB__OP_SEND:
        rb__on_send_failed(w, cqe);
        break;
    case RB__OP_FLUSH:
        rb__on_flush(w, cqe);
        break;
    case RB__OP_ACCEPT:
        rb__on_accept(w, r, cqe);
        break;
    case RB__OP_WAKE:
        rb__mbox_arm_wake(w);
        break;
    case RB__OP_PEER:
        rb__on_peer(w, cqe);
        break;
    case RB__OP_KEEPALIVE: {
        struct rb__conn *c = rb__conn_lookup(w, cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
        if (c)
            rb__kernel_mode_failed(w, c, cqe->res);
        break;
    }
    case RB__OP_INQ:
        on_inq(w, cqe);
        break;
    case RB__OP_CLOSE_FRAME:
        rb_log(RB_LOG_DEBUG, "close_frame_failed", "worker=%u slot=%u error=%s", w->index,
               (unsigned)(cqe->user_data & 0xfffff), strerror(cqe->res < 0 ? -cqe->res : EIO));
        break;
    default:
        break;
    }
}

static unsigned reap_ring(struct rb__worker *w, struct rb__ring *r)
{
    struct io_uring_cqe *cqes[RB__REAP_BATCH];
    unsigned total = 0, n;
    do {
        n = io_uring_peek_batch_cqe(&r->uring, cqes, RB__REAP_BATCH);
        for (unsigned i = 0; i < n; i++)
            handle_cqe(w, r, cqes[i]);
        io_uring_cq_advance(&r->uring, n);
        rb__bufring_publish(&r->bufs);
        total += n;
    } while (n == RB__REAP_BATCH);
    if (IO_URING_READ_ONCE(*r->uring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
        /* Overflowed completions may still name this turn's output: keep it a while. */
        RB__INC(w, cq_overflow);
        w->overflow_hold = 3;
        io_uring_get_events(&r->uring);
        rb__worker_clock(w); /* what they carry is newer than the turn's clock (see run_timers) */
        total += reap_ring(w, r);
    }
    return total;
}

static void reap_all(struct rb__worker *w)
{
    for (unsigned i = 0; i < w->nrings; i++)
        reap_ring(w, &w->rings[i]);
}

/*
 * Everything the kernel holds for us, before a death: io_uring_get_events runs only a bounded
 * batch of the ring's deferred task work per call (the kernel caps local task work per run when
 * no completion is asked for), so one call left most of a backlog of receives unrun, and with
 * the server starved of CPU their PONGs sat in the sockets while their peers were judged
 * (14,547-15,542 false deaths of 20,000, docs/reliability.md). So: run as much task work as the
 * CQ has room for, reap, again, until two rounds in a row bring nothing (bounded). Each round's
 * buffers go back before the next, so the receives it runs find buffers.
 */
#define RB__DRAIN_ROUNDS 4096
static void reap_everything(struct rb__worker *w)
{
    for (unsigned k = 0, empty = 0; k < RB__DRAIN_ROUNDS && empty < 2; k++) {
        for (unsigned i = 0; i < w->nrings; i++)
            rb__ring_run_work(&w->rings[i].uring);
        /* What those completions carry arrived after the turn's clock was read: with the
         * turn's clock, a turn of seconds (1M connections near saturation) dated them seconds
         * too early, and a peer could later be judged dead that much before its timeout. */
        rb__worker_clock(w);
        unsigned n = 0;
        for (unsigned i = 0; i < w->nrings; i++)
            n += reap_ring(w, &w->rings[i]);
        empty = n ? 0 : empty + 1; /* (a run may bring nothing: a wake-up with no data) */
    }
}

/* A fired timer: false when the connection is dead (the caller decides after a last look). */
static bool timer_fire(struct rb__worker *w, struct rb__conn *c)
{
    if (rb__conn_mode(c) == RB_MODE_KERNEL) {
        /* The kernel judges, and its verdict can only reach us as a receive's error: the
         * backstop makes sure a receive is armed (one that could not get an SQE, say). */
        if (!(c->flags & (RB__CF_RECV | RB__CF_REARM)))
            rb__recv_arm(w, c);
        rb__live_schedule(w, c);
        return true;
    }
    switch (rb__live_timer(w, c)) {
    case RB__LIVE_DEAD:
        return false;
    case RB__LIVE_PING:
        if (rb__sess_send_ping(w, c) == 0)
            rb__live_schedule(w, c);
        break;
    case RB__LIVE_OK:
        break;
    }
    c->death_looked = 0; /* alive again: a later death gets its own look */
    return true;
}

static void declare_dead(struct rb__worker *w, struct rb__conn *c)
{
    int32_t idle = (int32_t)(w->now_ms - c->last_rx_ms);
    rb__hist_add(&w->stats.lateness_ms, rb_lateness_bounds_ms, (uint64_t)idle - c->timeout_ms);
    rb__live_set_mark(w, c, RB_DEAD, 0);
    rb__conn_release(w, c, RB_CLOSE_TIMEOUT, 0);
}

/* The last look before a death, once per death: are bytes unread in the socket? The answer
 * (on_inq) judges; the timer armed here judges if it never comes. false: no SQE. */
static bool look_inq(struct rb__worker *w, struct rb__conn *c)
{
    struct io_uring_sqe *sqe = rb__ring_sqe(w, rb__conn_ring(w, c));
    if (!sqe)
        return false;
    rb__prep_siocinq_direct(sqe, c->slot);
    io_uring_sqe_set_data64(sqe, rb__ud(RB__OP_INQ, rb__conn_id(w, c)));
    c->death_looked = 1;
    rb__live_arm_at(w, c, w->now_ms64 + RB__DEATH_GRACE_TICKS * (uint64_t)w->e->cfg.tick_ms);
    return true;
}

/* Unread bytes (res > 0): our own backlog, not the peer's silence: the receive gets them in the
 * grace (re-armed if it is not), and the timer judges again after it. None, or no answer to
 * SIOCINQ (res < 0): dead now. */
static void on_inq(struct rb__worker *w, struct io_uring_cqe *cqe)
{
    struct rb__conn *c = rb__conn_lookup(w, cqe->user_data & ((1ULL << RB__OP_SHIFT) - 1));
    if (!c || !c->death_looked || !rb__timer_pending(&c->timer))
        return; /* gone, or judged already */
    if (cqe->res > 0) {
        RB__INC(w, deaths_postponed);
        rb_log(RB_LOG_DEBUG, "death_postponed", "worker=%u conn=%llu unread=%d", w->index,
               (unsigned long long)rb__conn_id(w, c), cqe->res);
        if (!(c->flags & RB__CF_RECV)) {
            c->flags &= (uint8_t)~RB__CF_REARM;
            rb__recv_arm(w, c);
        }
        return;
    }
    rb__wheel_del(&w->wheel, &c->timer);
    if (!timer_fire(w, c))
        declare_dead(w, c);
}

/*
 * Expires due timers. Before a connection is declared dead, none of its bytes may wait in our
 * own queues: completions already there are reaped (DEFER_TASKRUN keeps them queued until
 * asked), a receive disarmed by ENOBUFS is re-armed ahead of the re-arm queue and judged after
 * it, and the socket's unread byte count is asked once (SIOCINQ). All of it only in turns where
 * someone dies, never per heartbeat.
 */
static void run_timers(struct rb__worker *w)
{
    uint32_t tick_ms = w->e->cfg.tick_ms;
    rb__live_refill(w);
    if (w->shedding) {
        /* Overloaded: PINGs due now reserve places at least the lag ahead (pacing holds them,
         * never past a quarter of the answer's grace), so reading comes first. */
        double cap = -(double)w->lag_ms * w->ping_per_ms;
        if (w->ping_tokens > cap)
            w->ping_tokens = cap;
    }
    rb__wheel_update(&w->wheel, (uint32_t)(w->now_ms64 / tick_ms));
    struct rb__timer *t;
    uint64_t *dead = NULL;
    size_t ndead = 0, cap = 0;
    while ((t = rb__wheel_get(&w->wheel))) {
        struct rb__conn *c =
            (struct rb__conn *)(void *)((char *)t - offsetof(struct rb__conn, timer));
        RB__INC(w, timer_fires);
        if (timer_fire(w, c))
            continue;
        if (ndead == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *n = realloc(dead, cap * sizeof(*n));
            if (!n) {
                rb__live_arm_at(w, c, w->now_ms64 + tick_ms); /* try again next tick */
                continue;
            }
            dead = n;
        }
        dead[ndead++] = rb__conn_id(w, c);
    }
    if (!ndead)
        return;
    reap_everything(w);
    /* Receives re-armed ahead of the queue, bounded like the queue's own batches. */
    uint32_t ahead = w->rings[0].bufs.count / 2 + 1;
    size_t looks = 0;
    for (size_t i = 0; i < ndead; i++) {
        struct rb__conn *c = rb__conn_lookup(w, dead[i]);
        if (!c || rb__timer_pending(&c->timer))
            continue;
        if (!(c->flags & RB__CF_RECV)) {
            /* Bytes may wait in the socket for a receive buffer: judge after the re-arm. */
            if (ahead) {
                ahead--;
                c->flags &= (uint8_t)~RB__CF_REARM;
                rb__recv_arm(w, c);
            }
            rb__live_arm_at(w, c, w->now_ms64 + tick_ms);
            continue;
        }
        if (timer_fire(w, c))
            continue;
        if (!c->death_looked && w->late_ms && w->now_ms64 - w->late_ms < c->timeout_ms) {
            /* A turn ran late within this peer's timeout: a PING point of its may have passed
             * unsent (a timer that fires past the first half of an interval is a step of the
             * mark, not a PING), or its answer waited: the server's own backlog, not the peer's
             * silence. It gets a PING now and half an interval to answer, once. */
            c->death_looked = 1;
            RB__INC(w, deaths_postponed);
            uint64_t id = dead[i];
            if (rb__conn_mode(c) == RB_MODE_SERVER && rb__sess_send_ping(w, c) < 0)
                continue;
            if ((c = rb__conn_lookup(w, id)))
                rb__live_arm_at(w, c, w->now_ms64 + c->interval_ms / 2);
            continue;
        }
        if (!c->death_looked && look_inq(w, c)) {
            looks++;
            continue;
        }
        declare_dead(w, c);
    }
    free(dead);
    if (!looks)
        return;
    /* A socket command runs inside the submit: its answer is there at once. */
    for (unsigned i = 0; i < w->nrings; i++) {
        unsigned n = io_uring_sq_ready(&w->rings[i].uring);
        if (n && io_uring_submit_and_get_events(&w->rings[i].uring) >= 0) {
            RB__INC(w, submits);
            RB__ADD(w, sqes_submitted, n);
        }
    }
    reap_everything(w);
}

static void drain_step(struct rb__worker *w)
{
    unsigned budget = RB__DRAIN_PER_TURN;
    while (w->drain_ring < w->nrings && budget) {
        struct rb__ring *r = &w->rings[w->drain_ring];
        for (; w->drain_slot < r->slots && budget; w->drain_slot++) {
            struct rb__conn *c = r->by_slot[w->drain_slot];
            if (c) {
                rb__conn_release(w, c, RB_CLOSE_SHUTDOWN, 0);
                budget--;
            }
        }
        if (w->drain_slot == r->slots) {
            w->drain_ring++;
            w->drain_slot = 0;
        }
    }
}

/*
 * Stops listening before the drain: a connection that completes its handshake into the backlog of
 * a listener nobody accepts from any more is reset only when the process exits, after its client
 * may already have sent on it (and a client whose send consumed the reset sees a bare EOF). A
 * shut-down listener leaves the SO_REUSEPORT group at once: new SYNs go to a sibling process that
 * still listens, or are refused, so a reconnecting client retries at once. shutdown() also ends
 * the multishot accept (-EINVAL); the cancel covers a listener shutdown() could not stop.
 */
static void begin_stop(struct rb__worker *w)
{
    w->stopping = true;
    w->stop_deadline_ms = w->now_ms64 + w->e->cfg.drain_timeout_ms;
    for (unsigned i = 0; i < w->e->cfg.listen_count; i++)
        if (w->listen_fd[i] >= 0 && shutdown(w->listen_fd[i], SHUT_RDWR) < 0)
            rb_log(RB_LOG_WARN, "listener_shutdown_failed", "worker=%u error=%s", w->index,
                   strerror(errno));
    for (unsigned i = 0; i < w->nrings; i++)
        if (w->rings[i].accept_armed)
            rb__accept_cancel(w, &w->rings[i]);
}

/* Done when every connection is released and queued, and no accept is still in flight: an
 * accept that completes after the last reap would be closed by the ring teardown without its
 * CLOSE(5). */
static bool drained(struct rb__worker *w)
{
    for (unsigned i = 0; i < w->nrings; i++)
        if (w->rings[i].used || w->rings[i].accept_armed || io_uring_sq_ready(&w->rings[i].uring))
            return false;
    return true;
}

static int64_t wait_timeout_ns(struct rb__worker *w)
{
    uint32_t ticks = rb__wheel_next(&w->wheel);
    uint64_t tick_ms = w->e->cfg.tick_ms;
    /* At least once a second, so a watchdog that checks loop_turns sees an idle loop alive. */
    uint64_t at_ns = (w->now_ms64 + 1000) * 1000000;
    if (ticks != UINT32_MAX && (w->now_ms64 / tick_ms + ticks) * tick_ms * 1000000 < at_ns)
        at_ns = (w->now_ms64 / tick_ms + ticks) * tick_ms * 1000000;
    /* The lag is against the wheel's deadline, whatever else makes this turn come early. */
    w->planned_ms = at_ns / 1000000;
    if (rb__tls_pending(w))
        return 0; /* handshake work left by the budget: the next turn comes at once */
    if (w->stopping)
        return 1000000; /* drain in paced steps */
    if (w->accept_resume_ms > w->now_ms64 && w->accept_resume_ms * 1000000 < at_ns)
        at_ns = w->accept_resume_ms * 1000000;
    uint64_t now_ns = rb_clock_ns() - w->e->epoch_ns;
    return at_ns > now_ns ? (int64_t)(at_ns - now_ns) : 0;
}

/*
 * Loop lag: how late this turn starts against the wheel deadline it slept for (0 when woken
 * early by completions). Past RB__LAG_SHED_TICKS the worker sheds new work before it can fail
 * old work: accepting pauses (arrivals wait in the listen backlog) and due PINGs are held back
 * (run_timers), so the turn's time goes to reading what peers sent.
 */
static void measure_lag(struct rb__worker *w)
{
    uint32_t tick_ms = w->e->cfg.tick_ms;
    uint64_t lag = w->now_ms64 > w->planned_ms ? w->now_ms64 - w->planned_ms : 0;
    w->lag_ms = lag > 60000 ? 60000 : (uint32_t)lag;
    rb__hist_add(&w->stats.loop_lag_ms, rb_lateness_bounds_ms, w->lag_ms);
    bool late = w->lag_ms > RB__LAG_SHED_TICKS * tick_ms;
    if (late) {
        RB__INC(w, lag_turns);
        w->late_ms = w->now_ms64;
        struct rb__ring *r = &w->rings[w->accept_ring];
        if (!w->shedding && !w->stopping && r->accept_armed) {
            rb_log(RB_LOG_DEBUG, "loop_late", "worker=%u lag_ms=%u", w->index, w->lag_ms);
            rb__accept_cancel(w, r);
        }
        uint64_t resume = w->now_ms64 + RB__ACCEPT_PAUSE_TICKS * (uint64_t)tick_ms;
        if (w->accept_resume_ms < resume)
            w->accept_resume_ms = resume;
    }
    w->shedding = late;
}

static void submit_siblings(struct rb__worker *w)
{
    for (unsigned i = 1; i < w->nrings; i++) {
        unsigned n = io_uring_sq_ready(&w->rings[i].uring);
        if (n && rb__ring_submit(&w->rings[i].uring) == 0) {
            RB__INC(w, submits);
            RB__ADD(w, sqes_submitted, n);
        }
    }
}

int rb__worker_loop(struct rb__worker *w)
{
    const struct rb_config *cfg = &w->e->cfg;
    for (;;) {
        rb__tls_seal_pending(w); /* (a TLS record is never left open past its batch) */
        submit_siblings(w);
        struct io_uring *ring0 = &w->rings[0].uring;
        unsigned n = io_uring_sq_ready(ring0);
        int64_t timeout_ns = wait_timeout_ns(w);
        int ret = rb__ring_enter(ring0, cfg->batch_size, timeout_ns,
                                 timeout_ns > 0 ? cfg->batch_window_us : 0);
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            return ret;
        RB__INC(w, submits);
        RB__ADD(w, sqes_submitted, n);
        RB__INC(w, loop_turns);

        w->turn++;
        if (w->overflow_hold)
            w->overflow_hold--;
        else
            rb__out_reset(w);
        rb__worker_clock(w);
        measure_lag(w);
        reap_all(w);
        rb__mbox_drain(w);
        if (atomic_load_explicit(&w->e->stop, memory_order_acquire) && !w->stopping)
            begin_stop(w);
        run_timers(w);
        if (w->e->tls) {
            /* After everything else of the turn, whose replies it submits first. */
            rb__tls_handshakes(w);
            rb__tls_tick(w);
        }
        for (unsigned i = 0; i < w->nrings; i++) {
            struct rb__ring *r = &w->rings[i];
            if (r->rearm_len)
                rb__recv_rearm(w, r);
            if (!w->stopping && i == w->accept_ring && w->now_ms64 >= w->accept_resume_ms)
                rb__accept_keep_armed(w);
        }
        if (w->stopping) {
            drain_step(w);
            if ((drained(w) && w->drain_ring >= w->nrings) || w->now_ms64 >= w->stop_deadline_ms) {
                /* Push out the last CLOSE frames, then let ring teardown close what is left. */
                submit_siblings(w);
                rb__ring_submit(ring0);
                return 0;
            }
        }
    }
}
