/* test_live.c — the liveness logic (engine/live.c) on a fake clock, with no sockets: the mark,
 * PING points, death at the timeout, pacing and tokens, with the wheel checked after every step. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define TICK_MS 10
#define NCONN   1000

struct fx {
    struct rb_engine e;
    struct rb__ring ring;
    struct rb__worker *w;
    struct rb__conn *c; /* NCONN records */
    uint64_t pings[NCONN][8];
    unsigned npings[NCONN];
    uint64_t dead_ms[NCONN];
    uint64_t answer_at[NCONN]; /* a PONG arrives then (0: none on its way) */
    uint32_t rtt_ms;           /* answering peers: PONG this long after each PING (0: silent) */
    unsigned transitions;      /* on_liveness calls */
    enum rb_liveness last_to;
};

static void cb_liveness(struct rb_engine *e, uint64_t id, enum rb_liveness from,
                        enum rb_liveness to, void *user)
{
    (void)e, (void)id, (void)from;
    struct fx *f = user;
    f->transitions++;
    f->last_to = to;
}

static struct fx *fx_new(enum rb_mode mode, uint32_t interval_ms, uint32_t timeout_ms)
{
    struct fx *f = calloc(1, sizeof(*f));
    memset(&f->e.cfg, 0, sizeof(f->e.cfg)); /* live.c reads only what is set below */
    f->e.cfg.tick_ms = TICK_MS;
    f->e.cfg.interval_ms = interval_ms;
    f->e.cfg.timeout_ms = timeout_ms;
    f->e.cfg.cb.on_liveness = cb_liveness;
    f->e.cfg.user = f;
    f->e.token_key = 0x1234567890abcdefULL;
    f->w = calloc(1, sizeof(*f->w));
    f->w->e = &f->e;
    f->w->rings = &f->ring;
    f->w->nrings = 1;
    f->ring.w = f->w;
    f->w->now_ms64 = 1000; /* the engine clock never starts at 0 */
    f->w->now_ms = 1000;
    f->w->ping_refill_ms = f->w->now_ms64;
    rb__wheel_init(&f->w->wheel, (uint32_t)(f->w->now_ms64 / TICK_MS));
    f->c = calloc(NCONN, sizeof(*f->c));
    for (unsigned i = 0; i < NCONN; i++) {
        struct rb__conn *c = &f->c[i];
        rb__timer_init(&c->timer);
        c->gen = 1;
        c->slot = i;
        c->interval_ms = interval_ms;
        c->timeout_ms = timeout_ms;
        c->last_rx_ms = f->w->now_ms + 1;
        rb__conn_set_mode(c, mode);
        c->flags = RB__CF_OPEN; /* opened: a frame from here on is not the opening one */
        c->state = (uint8_t)((c->state & 0x0c) | RB_ALIVE | rb__live_weight_max(c) << 4);
    }
    return f;
}

static void fx_free(struct fx *f)
{
    free(f->c);
    free(f->w);
    free(f);
}

/* One loop turn at `now`: the timers that are due, handled as the loop does (PING, dead). */
static void turn(struct fx *f, uint64_t now)
{
    struct rb__worker *w = f->w;
    w->now_ms64 = now;
    w->now_ms = (uint32_t)now;
    rb__live_refill(w);
    for (unsigned i = 0; i < NCONN; i++) {
        if (f->answer_at[i] && f->answer_at[i] <= now) {
            f->answer_at[i] = 0;
            rb__live_touch(w, &f->c[i]);
        }
    }
    rb__wheel_update(&w->wheel, (uint32_t)(now / TICK_MS));
    struct rb__timer *t;
    while ((t = rb__wheel_get(&w->wheel))) {
        struct rb__conn *c =
            (struct rb__conn *)(void *)((char *)t - offsetof(struct rb__conn, timer));
        unsigned i = (unsigned)(c - f->c);
        switch (rb__live_timer(w, c)) {
        case RB__LIVE_PING:
            if (f->npings[i] < 8)
                f->pings[i][f->npings[i]] = now;
            f->npings[i]++;
            if (f->rtt_ms)
                f->answer_at[i] = now + f->rtt_ms;
            rb__live_schedule(w, c);
            break;
        case RB__LIVE_DEAD:
            f->dead_ms[i] = now;
            break;
        case RB__LIVE_OK:
            break;
        }
    }
    assert_int_equal(rb__wheel_check(&w->wheel), 0);
}

static void run_until(struct fx *f, uint64_t end_ms)
{
    for (uint64_t t = f->w->now_ms64 + 1; t <= end_ms; t++)
        turn(f, t);
}

/* Server mode, a peer that never answers: the first PING at its grid point one to two intervals
 * after the opening frame, then every interval; suspect once an answer is overdue; dead at the
 * timeout, within one tick. */
static void test_server_mode_silent_peer(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 3000);
    struct rb__conn *c = &f->c[0];
    uint64_t start = f->w->now_ms64 + 1; /* last_rx, rounded up */
    rb__live_start(f->w, c);
    assert_true(c->flags & RB__CF_FIRST_PING);
    run_until(f, start + 3000 + 2 * TICK_MS);
    assert_true(f->npings[0] >= 2);
    uint64_t first = f->pings[0][0];
    assert_true(first >= start + 1000 && first < start + 2000 + TICK_MS); /* phase in [0, 1000) */
    for (unsigned k = 1; k < f->npings[0] && k < 8; k++) {
        uint64_t gap = f->pings[0][k] - f->pings[0][k - 1];
        assert_true(gap >= 1000 - TICK_MS && gap <= 1000 + TICK_MS);
    }
    assert_true(c->flags & RB__CF_FIRST_PING); /* no frame since the opening one: still set */
    assert_int_equal(rb__conn_liveness(c), RB_SUSPECT);
    assert_true(f->transitions >= 1);
    assert_int_not_equal(f->dead_ms[0], 0);
    assert_true(f->dead_ms[0] >= start + 3000);          /* never early */
    assert_true(f->dead_ms[0] < start + 3000 + TICK_MS); /* within the tick */
    fx_free(f);
}

/* The opening frame (HELLO, before the connection is open) leaves the first-PING rule in force:
 * a HELLO that changes nothing restarts no timer, and its first PING must still wait a full
 * interval and land on the grid; any later frame ends it. */
static void test_opening_frame_keeps_first_ping(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 3000);
    struct rb__conn *c = &f->c[0];
    c->flags = 0;
    rb__live_start(f->w, c); /* at accept */
    rb__live_touch(f->w, c); /* the HELLO */
    assert_true(c->flags & RB__CF_FIRST_PING);
    c->flags |= RB__CF_OPEN;
    uint64_t hello = f->w->now_ms64 + 1;
    run_until(f, hello + 2000 + TICK_MS);
    assert_int_equal(f->npings[0], 1);
    assert_true(f->pings[0][0] >= hello + 1000 && f->pings[0][0] < hello + 2000 + TICK_MS);
    rb__live_touch(f->w, c); /* its PONG */
    assert_false(c->flags & RB__CF_FIRST_PING);
    fx_free(f);
}

/* A frame restores the mark at once and postpones everything, without touching the timer. */
static void test_touch_restores_and_postpones(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_CLIENT, 1000, 3000);
    struct rb__conn *c = &f->c[0];
    rb__live_start(f->w, c);
    run_until(f, 2700); /* 1.5 intervals past the last frame: suspect */
    assert_int_equal(rb__conn_liveness(c), RB_SUSPECT);
    assert_int_equal(f->last_to, RB_SUSPECT);
    rb__live_touch(f->w, c);
    assert_int_equal(rb__conn_liveness(c), RB_ALIVE);
    assert_int_equal(f->last_to, RB_ALIVE);
    assert_int_equal(rb__conn_weight(c), rb__live_weight_max(c));
    uint64_t touched = f->w->now_ms64 + 1;
    run_until(f, touched + 3000 + 2 * TICK_MS);
    assert_int_equal(f->npings[0], 0); /* client mode: the server never pings */
    assert_true(f->dead_ms[0] >= touched + 3000 && f->dead_ms[0] < touched + 3000 + TICK_MS);
    fx_free(f);
}

/* Weights step down one per interval without a frame: 3 -> 2 -> 1, then dead. */
static void test_mark_decays_in_steps(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_CLIENT, 1000, 3000);
    struct rb__conn *c = &f->c[0];
    uint64_t start = f->w->now_ms64 + 1;
    rb__live_start(f->w, c);
    assert_int_equal(rb__conn_weight(c), 3);
    run_until(f, start + 1499);
    assert_int_equal(rb__conn_weight(c), 3);
    run_until(f, start + 1500 + TICK_MS);
    assert_int_equal(rb__conn_weight(c), 2);
    assert_int_equal(rb__conn_liveness(c), RB_SUSPECT);
    run_until(f, start + 2500 + TICK_MS);
    assert_int_equal(rb__conn_weight(c), 1);
    assert_int_equal(f->dead_ms[0], 0);
    run_until(f, start + 3000 + TICK_MS);
    assert_int_not_equal(f->dead_ms[0], 0);
    fx_free(f);
}

/* PINGs per 100 ms of one interval (by PING time modulo the interval), for a uniformity check. */
static unsigned max_per_100ms(const struct fx *f, unsigned k, uint64_t iv)
{
    unsigned bins[10] = {0}, m = 0;
    for (unsigned i = 0; i < NCONN; i++)
        if (f->npings[i] > k)
            bins[(f->pings[i][k] % iv) * 10 / iv]++;
    for (unsigned b = 0; b < 10; b++)
        m = bins[b] > m ? bins[b] : m;
    return m;
}

/*
 * The grid: a thousand connections opened in the same millisecond (a ramp's burst) are pinged
 * spread over the whole interval, and every connection keeps its own point of the interval
 * from one PING to the next: a stall that delivers all their answers in one tick does not
 * bunch the next PINGs (with the old last-frame + jitter points it would, within 63 ms).
 */
static void test_ping_grid_spreads_a_burst(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 3000);
    f->w->stats.conns = NCONN; /* pacing at 2 PINGs per ms: above the 1 per ms asked here */
    f->rtt_ms = 5;
    for (unsigned i = 0; i < NCONN; i++)
        rb__live_start(f->w, &f->c[i]);
    uint64_t start = f->w->now_ms64 + 1;
    run_until(f, start + 2050); /* every first PING is out and answered */
    /* A stall of 300 ms: every answer of those 300 ms is read in the one turn at its end, so
     * about 300 connections have their last frame in the same millisecond. */
    uint64_t stall_end = start + 2350;
    for (uint64_t t = start + 2051; t <= stall_end; t++) {
        for (unsigned i = 0; i < NCONN; i++)
            if (f->answer_at[i] && f->answer_at[i] < stall_end)
                f->answer_at[i] = stall_end;
        turn(f, t);
    }
    run_until(f, start + 9500);
    for (unsigned i = 0; i < NCONN; i++) {
        assert_int_equal(f->dead_ms[i], 0);
        assert_false(f->c[i].flags & RB__CF_FIRST_PING); /* its answers cleared it */
        assert_true(f->npings[i] >= 8);
        assert_true(f->pings[i][0] >= start + 1000 && f->pings[i][0] < start + 2000 + TICK_MS);
        /* Its point of the interval, PING after PING (a paced one may go a little later); the
         * stall's bunch moved back to it within three intervals. */
        for (unsigned k = 5; k < 8; k++) {
            uint64_t d = (f->pings[i][k] - f->pings[i][0]) % 1000;
            assert_true(d <= 3 * TICK_MS || d >= 1000 - 3 * TICK_MS);
        }
    }
    /* 1000 PINGs per interval, 100 per 100 ms if uniform: the burst left none of the interval
     * crowded in the first round, the stall none once its bunch is back on the grid. */
    for (unsigned k = 0; k < 8; k += k ? 1 : 5)
        assert_true(max_per_100ms(f, k, 1000) < 150);
    fx_free(f);
}

/*
 * Pacing: the loop stalls for 300 ms, so the PINGs of 300 connections fall due in one turn.
 * PINGs past the bucket reserve a place at twice the average rate and fire once there; a PING
 * whose place lies beyond a quarter of the grace goes at once (the debt stays). So the held ones
 * trickle out at the paced rate after the stall, none waits past that quarter, none goes twice.
 */
static void test_pacing_spreads_a_burst(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 3000);
    f->w->stats.conns = NCONN; /* the rate pacing allows: 2 x 1000 / 1000 ms = 2 per ms */
    for (unsigned i = 0; i < NCONN; i++)
        rb__live_start(f->w, &f->c[i]);
    uint64_t start = f->w->now_ms64 + 1;
    run_until(f, start + 1400);
    unsigned before[NCONN];
    memcpy(before, f->npings, sizeof(before));
    uint64_t stall_end = start + 1700;
    turn(f, stall_end); /* no turn in between: whatever fell due meanwhile is due now */
    run_until(f, stall_end + 400);
    unsigned due = 0, after = 0;
    for (unsigned i = 0; i < NCONN; i++) {
        if (before[i] || f->npings[i] == 0 || f->pings[i][0] > stall_end)
            continue;
        due++;
        assert_int_equal(f->npings[i], 1); /* one PING each: a held PING is not sent twice */
        /* Nobody waits past a quarter of the grace (125 ms) beyond the stall's end. */
        assert_true(f->pings[i][0] <= stall_end + 125 + TICK_MS);
    }
    for (unsigned i = 0; i < NCONN; i++)
        after += f->npings[i] && !before[i] && f->pings[i][0] > stall_end;
    assert_true(due > 200);                        /* the stall's 300 ms of PING points */
    assert_true(f->w->stats.pings_deferred > 100); /* the burst was really held back */
    /* After the stall's turn PINGs go at the paced rate (2 per ms) plus, while the debt is
     * beyond a quarter of the grace, the new grid points (1 per ms): never the whole burst. */
    for (uint64_t t0 = stall_end + 1; t0 < stall_end + 300; t0 += TICK_MS) {
        unsigned in_window = 0;
        for (unsigned i = 0; i < NCONN; i++)
            if (f->npings[i] && !before[i] && f->pings[i][0] >= t0 && f->pings[i][0] < t0 + TICK_MS)
                in_window++;
        assert_true(in_window <= 3 * TICK_MS + 5);
    }
    assert_true(after > 0);
    fx_free(f);
}

static void test_tokens(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 3000);
    struct rb__conn *c = &f->c[5];
    uint64_t id = rb__conn_id(f->w, c);
    uint64_t t = rb__live_token(f->w, id, 123456789);
    uint64_t rtt;
    assert_int_equal(rb__live_pong(f->w, c, t, 123456789 + 250, &rtt), 0);
    assert_int_equal(rtt, 250);
    assert_int_equal(rb__live_pong(f->w, c, t ^ 1, 123456789 + 250, &rtt), -EINVAL); /* forged */
    assert_int_equal(rb__live_pong(f->w, &f->c[6], t, 123456789 + 250, &rtt), -EINVAL);
    assert_int_equal(rb__live_pong(f->w, c, t, 123456789 - 1, &rtt), -EINVAL); /* future */
    fx_free(f);
}

/* The spread first PING always leaves the answer half an interval before the timeout: with
 * timeout = 2 x interval, every one of NCONN phases puts the first PING at most 1.5 intervals
 * after the last frame (a phase near a whole interval used to put it in the tick of the death). */
static void test_first_ping_leaves_the_grace(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_SERVER, 1000, 2000);
    uint64_t start = f->w->now_ms64 + 1;
    for (unsigned i = 0; i < NCONN; i++)
        rb__live_start(f->w, &f->c[i]);
    run_until(f, start + 1500 + 2 * TICK_MS);
    uint64_t latest = 0, earliest = UINT64_MAX;
    for (unsigned i = 0; i < NCONN; i++) {
        /* (>= 1: a phase smaller than the later jitter brings a second PING within it) */
        assert_true(f->npings[i] >= 1);
        assert_int_equal(f->dead_ms[i], 0);
        latest = f->pings[i][0] > latest ? f->pings[i][0] : latest;
        earliest = f->pings[i][0] < earliest ? f->pings[i][0] : earliest;
    }
    assert_true(earliest >= start + 1000);
    assert_true(latest <= start + 1500 + TICK_MS);
    assert_true(latest - earliest >= 400); /* still spread over the room left */
    fx_free(f);
}

/* Kernel mode: no PING and no mark step from the wheel, whatever the silence; one backstop timer
 * per timeout + RB__KEEPALIVE_SLACK_MS, armed from now (the probes' answers are not seen here),
 * and the loop is never told to kill (the kernel judges). */
static void test_kernel_mode_backstop(void **state)
{
    (void)state;
    struct fx *f = fx_new(RB_MODE_KERNEL, 1000, 3000);
    struct rb__conn *c = &f->c[0];
    uint64_t start = f->w->now_ms64;
    rb__live_start(f->w, c);
    assert_false(c->flags & RB__CF_FIRST_PING);
    uint64_t due = start + 3000 + RB__KEEPALIVE_SLACK_MS;
    assert_true(rb__timer_pending(&c->timer));
    run_until(f, due - TICK_MS);
    assert_true(rb__timer_pending(&c->timer)); /* not fired yet */
    assert_int_equal(f->npings[0], 0);
    assert_int_equal(rb__conn_liveness(c), RB_ALIVE);
    assert_int_equal(f->transitions, 0);
    fx_free(f);
}

/* Kernel mode's keepalive timing: short intervals keep 1 s looks; long ones are split in two
 * hops of about half the interval, as long as the verdict stays within 1 s of the timeout. */
static void test_keepalive_plan(void **state)
{
    (void)state;
    static const struct {
        uint32_t interval_ms, timeout_ms, idle_s, intvl_s, cnt;
    } cases[] = {
        {1000, 3000, 1, 1, 3},      /* the smallest: unchanged */
        {2000, 6000, 2, 1, 5},      /* 1 s hops are already the shortest */
        {4000, 12000, 4, 2, 5},     /* looks at 6, 8, 10, 12 s: the verdict at the timeout */
        {30000, 90000, 30, 15, 5},  /* the 1M case: 15 s hops instead of 1 s + 29 s */
        {30000, 40000, 30, 10, 2},  /* one look 10 s after the first probe */
        {30000, 45500, 30, 16, 2},  /* one look at 46 s: 0.5 s late, within 1 s */
        {30000, 47000, 30, 17, 2},  /* one look, 17 s after the probe */
        {30000, 91500, 30, 2, 32},  /* 61.5 s: only 2 s looks land within 1 s (hop 28) */
        {60000, 180000, 60, 30, 5}, /* 30 s hops */
        {500, 1500, 1, 1, 2},       /* under a second: the idle time is 1 s */
        {30000, 20000, 30, 1, 2},   /* a timeout inside the idle time: the first look decides */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rb__keepalive_plan p;
        rb__live_keepalive_plan(cases[i].interval_ms, cases[i].timeout_ms, &p);
        assert_int_equal(p.idle_s, cases[i].idle_s);
        assert_int_equal(p.intvl_s, cases[i].intvl_s);
        assert_int_equal(p.cnt, cases[i].cnt);
        /* Whatever was chosen: probes at least every interval, the verdict in [timeout,
         * timeout + 1 s) of the last answer. */
        assert_true(p.intvl_s >= 1 && p.intvl_s <= p.idle_s);
        uint64_t idle_ms = p.idle_s * 1000ull, iv_ms = p.intvl_s * 1000ull, at = idle_ms + iv_ms;
        while (at < cases[i].timeout_ms)
            at += iv_ms;
        assert_true(at - cases[i].timeout_ms < 1000 || cases[i].timeout_ms < idle_ms + iv_ms);
    }
}

/* The plan's definition, by exhaustive scan: among the KEEPINTVL values whose last look lands
 * within 1 s after the timeout, the one with the shortest longer hop (ties: the longer). */
static uint32_t model_intvl_s(uint32_t idle_s, uint32_t timeout_ms)
{
    uint64_t span_ms = timeout_ms > idle_s * 1000ull ? timeout_ms - idle_s * 1000ull : 1;
    uint32_t best = 1, best_hop = idle_s > 1 ? idle_s - 1 : 1;
    for (uint32_t iv = 2; iv <= idle_s; iv++) {
        uint64_t iv_ms = iv * 1000ull, looks = (span_ms + iv_ms - 1) / iv_ms;
        uint32_t hop = iv > idle_s - iv ? iv : idle_s - iv;
        if (looks * iv_ms - span_ms < 1000 && hop <= best_hop) {
            best = iv;
            best_hop = hop;
        }
    }
    return best;
}

static void test_keepalive_plan_matches_model(void **state)
{
    (void)state;
    for (uint32_t idle_s = 1; idle_s <= 150; idle_s++)
        for (uint32_t timeout_ms = 500; timeout_ms <= 5 * idle_s * 1000 + 3000; timeout_ms += 250) {
            struct rb__keepalive_plan p;
            rb__live_keepalive_plan(idle_s * 1000, timeout_ms, &p);
            assert_int_equal(p.idle_s, idle_s);
            assert_int_equal(p.intvl_s, model_intvl_s(idle_s, timeout_ms));
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_mode_silent_peer),
        cmocka_unit_test(test_opening_frame_keeps_first_ping),
        cmocka_unit_test(test_touch_restores_and_postpones),
        cmocka_unit_test(test_mark_decays_in_steps),
        cmocka_unit_test(test_ping_grid_spreads_a_burst),
        cmocka_unit_test(test_pacing_spreads_a_burst),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_first_ping_leaves_the_grace),
        cmocka_unit_test(test_kernel_mode_backstop),
        cmocka_unit_test(test_keepalive_plan),
        cmocka_unit_test(test_keepalive_plan_matches_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
