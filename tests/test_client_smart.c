/* test_client_smart.c — the smart heartbeat (client/smart.c) on a fake clock: every state change,
 * the foreground pin, persistence, re-probing, server bounds, and whole searches against a
 * simulated NAT. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smart.h"

#define S 1000u
#define M (60u * S)

static struct rbc__smart mars(void)
{
    struct rbc__smart_params p;
    assert_int_equal(rbc__smart_params(NULL, &p), 0);
    struct rbc__smart s;
    rbc__smart_init(&s, &p);
    return s;
}

/* Heartbeats after the warm-up of a fresh connection, each at the interval the algorithm asks. */
static void warm(struct rbc__smart *s)
{
    rbc__smart_connected(s);
    while (rbc__smart_phase(s) == RBC_PHASE_WARMUP)
        rbc__smart_result(s, true, rbc__smart_interval(s));
}

static void test_defaults_are_the_mars_constants(void **state)
{
    (void)state;
    struct rbc__smart_params p;
    assert_int_equal(rbc__smart_params(NULL, &p), 0);
    assert_int_equal(p.min_ms, 3 * M + 30 * S); /* MinHeartInterval */
    assert_int_equal(p.max_ms, 10 * M);         /* MaxHeartInterval */
    assert_int_equal(p.step_ms, 60 * S);        /* HeartStep */
    assert_int_equal(p.margin_ms, 20 * S);      /* SuccessStep */
    assert_int_equal(p.warmup, 3);              /* NetStableTestCount */
    assert_int_equal(p.to_step, 5);             /* BaseSuccCount */
    assert_int_equal(p.to_settle, 2);           /* MaxHeartFailCount */
    assert_int_equal(p.reprobe_ms, 7u * 24 * 3600 * S);
    struct rbc_smart_config bad = {.min_interval_ms = 10 * M, .max_interval_ms = 5 * M};
    assert_int_equal(rbc__smart_params(&bad, &p), -EINVAL);
    struct rbc_smart_config small = {.min_interval_ms = 2 * S};
    assert_int_equal(rbc__smart_params(&small, &p), 0);
    assert_int_equal(p.max_ms, 10 * M); /* the default maximum stays when above the minimum */
}

static void test_warmup_then_learned_interval(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 5 * M; /* as if learned before */
    s.n.stable = 1;
    rbc__smart_connected(&s);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_WARMUP);
        assert_int_equal(rbc__smart_interval(&s), s.p.min_ms);
        assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms),
                         -1); /* not at the learned value */
    }
    assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), -1);
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_STABLE);
    assert_int_equal(rbc__smart_interval(&s), 5 * M);
    /* A failure during the warm-up teaches nothing either. */
    rbc__smart_connected(&s);
    assert_int_equal(rbc__smart_result(&s, false, 5 * M), -1);
    assert_int_equal(s.n.failures, 0);
}

static void test_steps_up_after_successes(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    rbc__smart_connected(&s);
    /* At the minimum the warm-up heartbeats are at the learned value: the third counts. */
    assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), -1);
    assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), -1);
    for (int i = 1; i <= 4; i++) {
        assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), 0);
        assert_int_equal(s.n.successes, i);
        assert_int_equal(s.n.interval_ms, s.p.min_ms);
    }
    assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), 1); /* the fifth: a step */
    assert_int_equal(s.n.interval_ms, s.p.min_ms + s.p.step_ms);
    assert_int_equal(s.n.successes, 0);
    assert_int_equal(s.n.fallback_ms, s.p.min_ms); /* min - margin, never below the minimum */
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_PROBING);
    /* A result at another interval (e.g. a heartbeat cut short by traffic) does not count. */
    assert_int_equal(rbc__smart_result(&s, true, s.p.min_ms), -1);
    assert_int_equal(s.n.successes, 0);
}

static void test_failures_settle_a_margin_below_the_last_success(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 5 * M + 30 * S; /* probing 330 s after 270 s held */
    s.n.fallback_ms = 4 * M + 10 * S;
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, false, 5 * M + 30 * S), 1);
    assert_int_equal(s.n.failures, 1);
    assert_int_equal(s.n.interval_ms, 5 * M + 30 * S); /* one failure is not the edge yet */
    warm(&s); /* the connection died: a new one warms up at the minimum first */
    assert_int_equal(rbc__smart_result(&s, false, 5 * M + 30 * S), 1);
    assert_int_equal(s.n.interval_ms, 4 * M + 10 * S); /* 330 - 60 - 20, as Mars */
    assert_true(s.n.stable);
    assert_int_equal(s.n.failures, 0);
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_STABLE);
}

static void test_success_between_failures_clears_them(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 6 * M;
    s.n.stable = 1;
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, false, 6 * M), 1);
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, true, 6 * M), 1); /* stored: failures back to 0 */
    assert_int_equal(s.n.failures, 0);
    assert_int_equal(rbc__smart_result(&s, false, 6 * M), 1);
    assert_int_equal(s.n.interval_ms, 6 * M); /* still one failure only */
    assert_true(s.n.stable);
}

static void test_stable_value_that_fails_restarts_the_search(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 6 * M;
    s.n.fallback_ms = 6 * M;
    s.n.stable = 1;
    warm(&s);
    rbc__smart_result(&s, false, 6 * M);
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, false, 6 * M), 1);
    assert_int_equal(s.n.interval_ms, s.p.min_ms);
    assert_false(s.n.stable);
    assert_int_equal(s.n.failures, 0);
}

static void test_failure_at_the_minimum_is_ignored(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, false, s.p.min_ms), -1);
    assert_int_equal(s.n.failures, 0);
    assert_int_equal(s.n.interval_ms, s.p.min_ms);
}

static void test_maximum_settles_a_margin_below_it(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 10 * M;
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, true, 10 * M), 1);
    assert_int_equal(s.n.interval_ms, 9 * M + 40 * S);
    assert_true(s.n.stable);
    /* A step never overshoots the maximum. */
    s = mars();
    s.n.interval_ms = 9 * M + 30 * S;
    warm(&s);
    for (int i = 0; i < 5; i++)
        rbc__smart_result(&s, true, 9 * M + 30 * S);
    assert_int_equal(s.n.interval_ms, 10 * M);
}

static void test_foreground_pins_the_minimum(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 6 * M;
    s.n.stable = 1;
    warm(&s);
    assert_true(rbc__smart_foreground(&s, true));
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_FOREGROUND);
    assert_int_equal(rbc__smart_interval(&s), s.p.min_ms);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rbc__smart_result(&s, i % 2, s.p.min_ms), -1);
    assert_int_equal(s.n.interval_ms, 6 * M); /* the learned value is untouched */
    assert_false(rbc__smart_foreground(&s, true));
    assert_true(rbc__smart_foreground(&s, false));
    assert_int_equal(rbc__smart_interval(&s), 6 * M);
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_STABLE);
}

static void test_persistence_round_trip_and_bad_records(void **state)
{
    (void)state;
    struct rbc__smart a = mars(), b = mars();
    a.n.interval_ms = 5 * M;
    a.n.fallback_ms = 4 * M;
    a.n.stable = 0;
    a.n.successes = 3;
    a.n.failures = 1;
    a.n.stable_ms = 123456;
    uint8_t rec[RBC__SMART_REC_LEN];
    assert_int_equal(rbc__smart_save(&a, rec), RBC__SMART_REC_LEN);
    assert_true(RBC__SMART_REC_LEN <= RBC_STATE_MAX);
    assert_int_equal(rbc__smart_load(&b, rec, sizeof(rec)), 0);
    assert_int_equal(b.n.interval_ms, 5 * M);
    assert_int_equal(b.n.fallback_ms, 4 * M);
    assert_int_equal(b.n.stable_ms, 123456);
    assert_int_equal(b.n.stable, 0);
    assert_int_equal(b.n.successes, 3);
    assert_int_equal(b.n.failures, 1);
    /* Not a record: refused, and the state is fresh (the minimum, probing). */
    assert_int_equal(rbc__smart_load(&b, rec, sizeof(rec) - 1), -EINVAL);
    assert_int_equal(b.n.interval_ms, b.p.min_ms);
    uint8_t bad[RBC__SMART_REC_LEN];
    memcpy(bad, rec, sizeof(bad));
    bad[0] = 2; /* version */
    assert_int_equal(rbc__smart_load(&b, bad, sizeof(bad)), -EINVAL);
    memcpy(bad, rec, sizeof(bad));
    bad[1] = 4; /* unknown flag */
    assert_int_equal(rbc__smart_load(&b, bad, sizeof(bad)), -EINVAL);
    assert_int_equal(rbc__smart_load(&b, NULL, 0), -EINVAL);
    /* Out of today's range (the app's parameters changed): clamped, not thrown away. */
    memcpy(bad, rec, sizeof(bad));
    bad[2] = 200, bad[3] = 200;                           /* counters beyond the thresholds */
    bad[4] = 0xff, bad[5] = 0xff, bad[6] = 0, bad[7] = 0; /* 4294901760 ms */
    assert_int_equal(rbc__smart_load(&b, bad, sizeof(bad)), 0);
    assert_int_equal(b.n.interval_ms, b.p.max_ms);
    assert_int_equal(b.n.fallback_ms, 4 * M);
    assert_int_equal(b.n.successes, 0);
    assert_int_equal(b.n.failures, 0);
}

static void test_reprobe_after_the_period(void **state)
{
    (void)state;
    struct rbc_smart_config cfg = {.reprobe_ms = 60 * M};
    struct rbc__smart_params p;
    assert_int_equal(rbc__smart_params(&cfg, &p), 0);
    struct rbc__smart s;
    rbc__smart_init(&s, &p);
    s.n.interval_ms = s.n.fallback_ms = 6 * M;
    s.n.stable = 1;
    warm(&s);
    for (int i = 0; i < 9; i++) /* 54 min of heartbeats at the stable value */
        assert_int_equal(rbc__smart_result(&s, true, 6 * M), 0);
    assert_true(s.n.stable);
    assert_int_equal(rbc__smart_result(&s, true, 6 * M), 1); /* 60 min: probe +margin */
    assert_false(s.n.stable);
    assert_int_equal(s.n.interval_ms, 6 * M + 20 * S);
    assert_int_equal(s.n.fallback_ms, 6 * M);
    assert_int_equal(s.n.stable_ms, 0);
    /* The probe fails twice: back to the value that held, not below it (Mars would go 80 s
     * below the probe). */
    warm(&s);
    rbc__smart_result(&s, false, 6 * M + 20 * S);
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, false, 6 * M + 20 * S), 1);
    assert_true(s.n.stable);
    assert_int_equal(s.n.interval_ms, 6 * M);
    /* At the top there is nothing to probe. */
    s.n.interval_ms = s.p.max_ms - s.p.margin_ms;
    s.n.stable_ms = 0;
    warm(&s);
    for (int i = 0; i < 40; i++)
        rbc__smart_result(&s, true, s.n.interval_ms);
    assert_true(s.n.stable);
    assert_int_equal(s.n.interval_ms, s.p.max_ms - s.p.margin_ms);
}

static void test_server_bounds(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    s.n.interval_ms = 8 * M;
    s.n.fallback_ms = 7 * M;
    assert_true(rbc__smart_bound(&s, s.p.min_ms, 5 * M)); /* the server's maximum is 5 min */
    assert_int_equal(s.n.interval_ms, 5 * M);
    assert_int_equal(s.n.fallback_ms, 5 * M);
    warm(&s);
    assert_int_equal(rbc__smart_result(&s, true, 5 * M), 1);
    assert_int_equal(s.n.interval_ms, 4 * M + 40 * S); /* at the ceiling: a margin below */
    assert_true(s.n.stable);
    /* A server minimum above ours is the floor: warm-up uses it. */
    assert_false(rbc__smart_bound(&s, 4 * M, 5 * M));
    rbc__smart_connected(&s);
    assert_int_equal(rbc__smart_interval(&s), 4 * M);
    /* Bounds never leave the configured range. */
    rbc__smart_bound(&s, 1, UINT32_MAX);
    assert_int_equal(s.floor_ms, s.p.min_ms);
    assert_int_equal(s.cap_ms, s.p.max_ms);
}

static void test_fixed_never_learns(void **state)
{
    (void)state;
    struct rbc_smart_config cfg = {.fixed = true, .min_interval_ms = 30 * S};
    struct rbc__smart_params p;
    assert_int_equal(rbc__smart_params(&cfg, &p), 0);
    struct rbc__smart s;
    rbc__smart_init(&s, &p);
    for (int i = 0; i < 50; i++)
        assert_int_equal(rbc__smart_result(&s, i % 3 != 0, 30 * S), -1);
    assert_int_equal(rbc__smart_phase(&s), RBC_PHASE_FIXED);
    assert_int_equal(rbc__smart_interval(&s), 30 * S);
}

/*
 * A NAT that forgets a mapping idle for nat_ms, on a fake clock: a heartbeat after an idle
 * interval below it is answered; at or above it the connection is dead (the failure costs the
 * answer timeout, and a reconnect warms up again).
 */
struct sim {
    uint64_t t_ms, beats, failures, converged_ms;
};

static void run_nat(struct rbc__smart *s, struct sim *sim, uint32_t nat_ms, uint64_t until_ms)
{
    rbc__smart_connected(s);
    while (sim->t_ms < until_ms) {
        uint32_t iv = rbc__smart_interval(s);
        bool ok = iv < nat_ms;
        sim->t_ms += iv + (ok ? 0 : 10 * S);
        sim->beats++;
        bool was_stable = s->n.stable;
        rbc__smart_result(s, ok, iv);
        if (!ok) {
            sim->failures++;
            rbc__smart_connected(s);
        }
        if (s->n.stable && !was_stable)
            sim->converged_ms = sim->t_ms;
    }
}

static void test_search_finds_a_five_minute_nat(void **state)
{
    (void)state;
    struct rbc__smart s = mars();
    struct sim sim = {0};
    run_nat(&s, &sim, 5 * M, 6 * 3600 * S);
    /* 210 s held, 270 s held, 330 s failed twice: settled at 250 s. */
    assert_true(s.n.stable);
    assert_int_equal(s.n.interval_ms, 4 * M + 10 * S);
    assert_int_equal(sim.failures, 2);
    assert_true(sim.converged_ms < 2 * 3600 * S);
    /* Against a fixed 210 s over the same six hours: fewer heartbeats. */
    assert_true(sim.beats < 6 * 3600 * S / s.p.min_ms);
    /* The NAT shortens to 4 min: the stable value fails twice, the search restarts and
     * settles below it. */
    sim.failures = 0;
    run_nat(&s, &sim, 4 * M, 12 * 3600 * S);
    assert_true(s.n.stable);
    assert_true(s.n.interval_ms < 4 * M);
    assert_int_equal(s.n.interval_ms, s.p.min_ms);
    assert_int_equal(sim.failures, 4); /* two at 250 s, two at 270 s */
}

static void test_search_scaled_like_the_nat_test(void **state)
{
    (void)state;
    /* The parameters of tests/integration/test_client_nat.py: min 2 s, step 2 s, margin 1 s. */
    struct rbc_smart_config cfg = {
        .min_interval_ms = 2 * S, .max_interval_ms = 60 * S, .step_ms = 2 * S, .margin_ms = 1 * S};
    struct rbc__smart_params p;
    assert_int_equal(rbc__smart_params(&cfg, &p), 0);
    struct rbc__smart s;
    rbc__smart_init(&s, &p);
    struct sim sim = {0};
    run_nat(&s, &sim, 12 * S, 3600 * S);
    assert_true(s.n.stable);
    assert_int_equal(s.n.interval_ms, 9 * S); /* 12 s is the edge itself: 10 s held, 10 - 1 */
    run_nat(&s, &sim, 7 * S, 2 * 3600 * S);
    assert_true(s.n.stable);
    assert_int_equal(s.n.interval_ms, 5 * S); /* 6 s held, 8 s failed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_mars_constants),
        cmocka_unit_test(test_warmup_then_learned_interval),
        cmocka_unit_test(test_steps_up_after_successes),
        cmocka_unit_test(test_failures_settle_a_margin_below_the_last_success),
        cmocka_unit_test(test_success_between_failures_clears_them),
        cmocka_unit_test(test_stable_value_that_fails_restarts_the_search),
        cmocka_unit_test(test_failure_at_the_minimum_is_ignored),
        cmocka_unit_test(test_maximum_settles_a_margin_below_it),
        cmocka_unit_test(test_foreground_pins_the_minimum),
        cmocka_unit_test(test_persistence_round_trip_and_bad_records),
        cmocka_unit_test(test_reprobe_after_the_period),
        cmocka_unit_test(test_server_bounds),
        cmocka_unit_test(test_fixed_never_learns),
        cmocka_unit_test(test_search_finds_a_five_minute_nat),
        cmocka_unit_test(test_search_scaled_like_the_nat_test),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
