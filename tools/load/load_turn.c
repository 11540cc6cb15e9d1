/* load_turn.c — ringbeat-load worker thread: per-turn work (walk, timers, re-arms, sleep). */
#define _GNU_SOURCE /* ppoll */
#include "load_int.h"

#include <poll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- per-turn work ---- */

/* Does the generator send the PINGs in this mode (client, silent), or only answer them? */
static bool load_pings(const struct load_cfg *cfg)
{
    return cfg->mode == RB_MODE_CLIENT || cfg->mode == RB_MODE_SILENT;
}

static void visit(struct lworker *w, struct lring *r, uint32_t slot, uint64_t sched, uint64_t now)
{
    struct load *L = w->L;
    const struct load_cfg *cfg = L->cfg;
    struct lconn *c = &r->c[slot];
    int phase = LD(&L->phase);
    if (c->state == CS_HELLO && now - c->t_us > cfg->connect_timeout_us) {
        CADD(w, welcome_timeouts, 1);
        CADD(w, connect_failures, 1);
        ld_begin_close(w, r, slot, false, false, now);
        return;
    }
    /*
     * A connection waiting for its WELCOME already PINGs: the server's liveness clock runs from
     * our HELLO, so a WELCOME we read late must not push the first PING past its timeout.
     */
    if ((c->state != CS_UP && c->state != CS_HELLO) || (c->flags & CF_SILENT))
        return;
    if (c->state == CS_UP && phase == PH_RUN && ld_is_silenced_member(L, c->id) &&
        now >= c->t_us + cfg->silent_after_us) {
        c->flags |= CF_SILENT;
        CADD(w, silenced, 1);
        return;
    }
    if (c->state == CS_UP && phase == PH_RUN && !(c->flags & CF_RESET_DONE) &&
        ld_is_reset_member(L, c->id) && now >= c->t_us + cfg->reset_after_us) {
        c->flags |= CF_RESET_DONE;
        CADD(w, resets, 1);
        ld_begin_close(w, r, slot, false, true, now);
        return;
    }
    if (load_pings(cfg)) {
        uint8_t f[16];
        uint32_t n = ld_put_ping(cfg, f, RB_FRAME_PING, sched << 24 | slot);
        if (ld_send_bytes(w, r, slot, f, n, now) == 0) {
            CADD(w, pings_sent, 1);
            lh_record(&w->lag_us, now - sched);
        }
    }
}

static uint64_t phase_time(const struct lring *r, uint64_t interval_us, uint64_t cycle, uint32_t i)
{
    /* order[] was built so that phase(i) = i * share + jitter < (i + 1) * share */
    uint64_t base = cycle * interval_us + U64(i) * interval_us / r->nslots;
    uint64_t span = interval_us / r->nslots;
    return base + (span ? (U64(r->order[i]) * 2654435761u) % span : 0);
}

static uint64_t walk(struct lworker *w, struct lring *r, uint64_t now)
{
    uint64_t iv = w->L->interval_us;
    for (uint32_t budget = 4 * RING_ENTRIES; budget; budget--) {
        uint64_t t = phase_time(r, iv, r->cycle, r->cursor);
        if (t > now)
            return t;
        visit(w, r, r->order[r->cursor], t, now);
        if (++r->cursor == r->nslots) {
            r->cursor = 0;
            r->cycle++;
        }
    }
    return now; /* more due: come back at once */
}

static void do_rearms(struct lworker *w, struct lring *r)
{
    uint32_t budget = r->bufs_back > REARM_MIN ? r->bufs_back : REARM_MIN;
    r->bufs_back = 0;
    while (r->rearm_len && budget) {
        uint32_t slot = r->rearm[r->rearm_head];
        r->rearm_head = (r->rearm_head + 1) % r->nslots;
        r->rearm_len--;
        struct lconn *c = &r->c[slot];
        c->flags &= (uint8_t)~CF_REARM_Q;
        if ((c->state == CS_UP || c->state == CS_HELLO) && !(c->flags & CF_RECV)) {
            ld_arm_recv(w, r, slot);
            CADD(w, rearms, 1);
            budget--;
        }
    }
}

static uint64_t do_backoffs(struct lworker *w, struct lring *r, uint64_t now)
{
    while (r->heap_len) {
        struct heap_ent top = r->heap[0];
        if (top.due_us > now)
            return top.due_us;
        if (r->inflight >= w->L->cfg->inflight_per_ring || ld_ring_reserve(w, r, 4) < 0)
            return now + 1000;
        ld_heap_pop(r);
        struct lconn *c = &r->c[top.slot];
        if (c->state != CS_BACKOFF || c->t_us != top.due_us)
            continue;
        ld_launch(w, r, top.slot, now);
    }
    return UINT64_MAX;
}

/* Initial connects, paced to this worker's share of --rate. */
static uint64_t do_ramp(struct lworker *w, uint64_t now)
{
    const struct load_cfg *cfg = w->L->cfg;
    if (w->launched >= w->nconns)
        return UINT64_MAX;
    double rate = cfg->rate_per_s / cfg->workers;
    uint64_t target = (uint64_t)((double)now * rate / 1e6) + 1;
    if (target > w->nconns)
        target = w->nconns;
    while (w->launched < target) {
        uint32_t j = w->launched;
        struct lring *r = &w->rings[j % w->nrings];
        if (r->inflight >= cfg->inflight_per_ring || ld_ring_reserve(w, r, 4) < 0)
            return now + 1000;
        ld_launch(w, r, j / w->nrings, now);
        w->launched++;
    }
    if (w->launched >= w->nconns)
        return UINT64_MAX;
    uint64_t next = (uint64_t)((double)(w->launched) * 1e6 / rate);
    return next > now ? next : now + 100;
}

/* Shutdown: close everything open, a bounded batch per ring per turn. */
static void do_close_all(struct lworker *w, struct lring *r, uint64_t now)
{
    uint32_t budget = CLOSE_BATCH;
    while (r->close_cursor < r->nslots && budget) {
        uint32_t slot = r->close_cursor;
        struct lconn *c = &r->c[slot];
        if (c->state == CS_UP || c->state == CS_HELLO) {
            ld_begin_close(w, r, slot,
                           w->L->cfg->close_frame && c->state == CS_UP && !(c->flags & CF_SILENT),
                           false, now);
            budget--;
        } else if (c->state == CS_BACKOFF || c->state == CS_IDLE) {
            c->state = CS_DONE;
        }
        r->close_cursor++;
    }
    r->heap_len = 0;
}

/* Completions to post (deferred work, an overflow) or to reap on this ring? */
static bool ring_has_work(struct lring *r)
{
    unsigned f = IO_URING_READ_ONCE(*r->ring.sq.kflags);
    return (f & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) || io_uring_cq_ready(&r->ring) > 0;
}

/* A mode where nobody waits for our PINGs (server mode: the server PINGs) walks the
 * connections only for its own events (WELCOME timeouts, silencing, resets): once none is
 * left, a heartbeat costs the generator no visit at all. */
static bool walk_needed(const struct lworker *w)
{
    const struct load_cfg *cfg = w->L->cfg;
    if (load_pings(cfg) || cfg->reconnect || w->launched < w->nconns)
        return true;
    return w->cnt.pending_now > 0 || w->cnt.silenced < w->silent_members ||
           w->cnt.resets < w->reset_members;
}

static void sleep_us(uint64_t d)
{
    struct timespec ts = {.tv_sec = (time_t)(d / 1000000), .tv_nsec = (long)(d % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* liburing 2.3 declares io_uring_enable_rings but its library lacks it: the register call. */
static int ring_enable(struct io_uring *ring)
{
    long ret =
        syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return ret < 0 ? -errno : 0;
}

void *ld_worker_main(void *arg)
{
    struct lworker *w = arg;
    struct load *L = w->L;
    const uint64_t turn_us = L->cfg->turn_us;
    uint64_t stop_at = 0, due = 0; /* due: when this turn should have begun, at the latest */
    for (unsigned i = 0; i < w->nrings; i++) {
        int er = w->rings[i].disabled ? ring_enable(&w->rings[i].ring) : 0;
        if (er < 0) {
            w->err = er;
            goto out;
        }
    }
    for (;;) {
        uint64_t start = ld_now_us(L);
        if (due)
            lh_record(&w->loop_us, start > due ? start - due : 0);
        CADD(w, turns, 1);
        for (unsigned i = 0; i < w->nrings; i++) {
            struct lring *r = &w->rings[i];
            /* DEFER_TASKRUN: the kernel posts this ring's completions when we ask, here */
            if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN) {
                io_uring_get_events(&r->ring);
                CADD(w, submits, 1);
            }
            ld_reap(w, r);
        }
        uint64_t now = ld_now_us(L);
        int phase = LD(&L->phase);
        uint64_t next = now + 50000; /* re-check the phase at least this often */
        if (phase == PH_STOP) {
            if (!stop_at)
                stop_at = now;
            next = now + 5000;
        } else {
            uint64_t t = do_ramp(w, now);
            if (t < next)
                next = t;
        }
        bool walking = phase != PH_STOP && walk_needed(w);
        uint32_t open = 0;
        for (unsigned i = 0; i < w->nrings; i++) {
            struct lring *r = &w->rings[i];
            do_rearms(w, r);
            if (phase == PH_STOP) {
                do_close_all(w, r, now);
            } else {
                uint64_t t = walking ? walk(w, r, now) : UINT64_MAX;
                if (t < next)
                    next = t;
                t = do_backoffs(w, r, now);
                if (t < next)
                    next = t;
            }
            if (r->rearm_len && now + 1000 < next)
                next = now + 1000;
            int ret = ld_ring_flush(w, r);
            if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) {
                w->err = ret;
                goto out;
            }
            if (ret < 0)
                next = now;
            open += r->active;
        }
        if (w->launched >= w->nconns && LD(&w->cnt.pending_now) == 0)
            __atomic_store_n(&w->ramp_done, 1, __ATOMIC_RELAXED);
        if (phase == PH_STOP) {
            bool closed_all = true;
            for (unsigned i = 0; i < w->nrings && closed_all; i++)
                closed_all = w->rings[i].close_cursor >= w->rings[i].nslots;
            if ((closed_all && open == 0) ||
                now - stop_at > DRAIN_BASE_US + DRAIN_PER_CONN_US * w->nconns)
                break;
        }
        /*
         * The next turn begins no earlier than --turn after this one began, so completions
         * gather into batches; when nothing is due it waits for the first completion (the
         * eventfd) or the next deadline, whichever comes first.
         */
        uint64_t earliest = start + turn_us;
        now = ld_now_us(L);
        if (earliest > now)
            sleep_us(earliest - now);
        bool ready = next <= earliest;
        for (unsigned i = 0; i < w->nrings && !ready; i++)
            ready = ring_has_work(&w->rings[i]);
        if (ready) {
            due = earliest;
            continue;
        }
        uint64_t v;
        if (read(w->efd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
            break;
        for (unsigned i = 0; i < w->nrings && !ready; i++)
            ready = ring_has_work(&w->rings[i]);
        now = ld_now_us(L);
        if (ready || next <= now) {
            due = ready ? earliest : next;
            continue;
        }
        uint64_t d = next - now;
        struct timespec ts = {.tv_sec = (time_t)(d / 1000000),
                              .tv_nsec = (long)(d % 1000000) * 1000};
        struct pollfd pfd = {.fd = w->efd, .events = POLLIN};
        ppoll(&pfd, 1, &ts, NULL);
        due = next; /* due by then at the latest: woken earlier by I/O counts as no lag */
    }
out:
    __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}
