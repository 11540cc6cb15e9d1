/* test_wheel.c — unit tests of the timer wheel: exact expiry, cascades, wrap, and a model check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wheel.h"

/* Tick offsets around the start of every level (1, 2^8, 2^14, 2^20, 2^26) and the far limit. */
static const uint32_t boundary_offsets[] = {
    1,          2,          254,        255,     256,     257,      511,      512,      16383,
    16384,      16385,      1048575,    1048576, 1048577, 67108863, 67108864, 67108865, 134217728,
    0x40000000, 0x7ffffffe, 0x7fffffff, 30000,   3000000, 300,      12345678, 999,
};
#define N_BOUNDARY (sizeof(boundary_offsets) / sizeof(boundary_offsets[0]))

/* Start ticks: zero, unaligned, just below a level-4 boundary, and just below the 2^32 wrap. */
static const uint32_t start_ticks[] = {0,          123457,     0x03ffff80, 0x7fffff00,
                                       0xfffffff0, 0xffffff00, 0xfc000001};
#define N_START (sizeof(start_ticks) / sizeof(start_ticks[0]))

static struct rb__wheel *new_wheel(uint32_t now)
{
    struct rb__wheel *w = malloc(sizeof(*w));
    assert_non_null(w);
    rb__wheel_init(w, now);
    assert_int_equal(rb__wheel_check(w), 0);
    return w;
}

static void test_add_del_pending(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(1000);
    struct rb__timer a, b;
    rb__timer_init(&a);
    rb__timer_init(&b);
    assert_false(rb__timer_pending(&a));

    rb__wheel_add(w, &a, 1010);
    assert_true(rb__timer_pending(&a));
    assert_int_equal(a.expires, 1010);
    assert_int_equal(w->pending, 1);
    rb__wheel_add(w, &b, 1010);
    assert_int_equal(w->pending, 2);
    assert_int_equal(rb__wheel_check(w), 0);

    rb__wheel_del(w, &a);
    assert_false(rb__timer_pending(&a));
    assert_true(rb__timer_pending(&b));
    assert_int_equal(w->pending, 1);
    assert_int_equal(rb__wheel_check(w), 0);

    /* The deleted timer never comes back; the other one does. */
    rb__wheel_update(w, 2000);
    assert_ptr_equal(rb__wheel_get(w), &b);
    assert_null(rb__wheel_get(w));
    assert_false(rb__timer_pending(&b));
    assert_int_equal(w->pending, 0);
    assert_int_equal(rb__wheel_next(w), UINT32_MAX);
    assert_int_equal(rb__wheel_check(w), 0);
    free(w);
}

static void test_add_past_deadline_expires_at_once(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(500);
    struct rb__timer now_t, past_t;
    rb__timer_init(&now_t);
    rb__timer_init(&past_t);
    rb__wheel_add(w, &now_t, 500);
    rb__wheel_add(w, &past_t, 100);
    assert_int_equal(rb__wheel_next(w), 0);
    assert_int_equal(rb__wheel_check(w), 0);
    struct rb__timer *x = rb__wheel_get(w), *y = rb__wheel_get(w);
    assert_true((x == &now_t && y == &past_t) || (x == &past_t && y == &now_t));
    assert_null(rb__wheel_get(w));
    assert_int_equal(w->pending, 0);
    free(w);
}

/* One timer per offset: not returned one tick early, returned on its exact tick. */
static void test_expiry_exact_single(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_START; s++) {
        for (size_t i = 0; i < N_BOUNDARY; i++) {
            uint32_t start = start_ticks[s], deadline = start + boundary_offsets[i];
            struct rb__wheel *w = new_wheel(start);
            struct rb__timer t;
            rb__timer_init(&t);
            rb__wheel_add(w, &t, deadline);
            assert_int_equal(rb__wheel_check(w), 0);
            rb__wheel_update(w, deadline - 1);
            assert_int_equal(rb__wheel_check(w), 0);
            assert_null(rb__wheel_get(w));
            assert_true(rb__timer_pending(&t));
            assert_int_not_equal(rb__wheel_next(w), 0);
            rb__wheel_update(w, deadline);
            assert_int_equal(rb__wheel_check(w), 0);
            assert_ptr_equal(rb__wheel_get(w), &t);
            assert_null(rb__wheel_get(w));
            assert_true(w->relinked <= RB__WHEEL_LEVELS - 1);
            free(w);
        }
    }
}

/*
 * All boundary offsets in one wheel, advanced one event at a time with rb__wheel_next(): each
 * timer must come out when now equals its deadline, and a step one tick short finds nothing.
 */
static void test_expiry_exact_stepping_by_next(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_START; s++) {
        uint32_t start = start_ticks[s];
        struct rb__wheel *w = new_wheel(start);
        struct rb__timer t[N_BOUNDARY];
        for (size_t i = 0; i < N_BOUNDARY; i++) {
            rb__timer_init(&t[i]);
            rb__wheel_add(w, &t[i], start + boundary_offsets[i]);
        }
        size_t got = 0;
        unsigned steps = 0;
        while (w->pending) {
            assert_true(++steps < 1000);
            uint32_t n = rb__wheel_next(w);
            assert_true(n > 0 && n != UINT32_MAX);
            if (n > 1) {
                rb__wheel_update(w, w->now + n - 1);
                assert_null(rb__wheel_get(w));
            }
            rb__wheel_update(w, w->now + 1);
            assert_int_equal(rb__wheel_check(w), 0);
            for (struct rb__timer *e; (e = rb__wheel_get(w));) {
                assert_int_equal(e->expires, w->now);
                got++;
            }
        }
        assert_int_equal(got, N_BOUNDARY);
        assert_int_equal(rb__wheel_next(w), UINT32_MAX);
        /* At most one move per level for each timer. */
        assert_true(w->relinked <= N_BOUNDARY * (RB__WHEEL_LEVELS - 1));
        free(w);
    }
}

/* Tick by tick over several level-1 and level-2 slots: each timer comes out on its own tick. */
static void test_expiry_exact_tick_by_tick(void **state)
{
    (void)state;
    enum { N = 3000, SPAN = 40000 };
    uint32_t start = 0xffffc000; /* the walk crosses the 2^32 wrap too */
    struct rb__wheel *w = new_wheel(start);
    struct rb__timer *t = calloc(N, sizeof(*t));
    assert_non_null(t);
    srand(7);
    for (int i = 0; i < N; i++)
        rb__wheel_add(w, &t[i], start + 1 + (uint32_t)(rand() % SPAN));
    int got = 0;
    for (uint32_t k = 1; k <= SPAN; k++) {
        rb__wheel_update(w, start + k);
        for (struct rb__timer *e; (e = rb__wheel_get(w));) {
            assert_int_equal(e->expires, start + k);
            got++;
        }
        if (k % 997 == 0)
            assert_int_equal(rb__wheel_check(w), 0);
    }
    assert_int_equal(got, N);
    assert_int_equal(w->pending, 0);
    free(t);
    free(w);
}

static void test_readd_moves_timer(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(0);
    struct rb__timer t;
    rb__timer_init(&t);

    rb__wheel_add(w, &t, 100000); /* level 2 */
    rb__wheel_add(w, &t, 50);     /* level 0 */
    assert_int_equal(w->pending, 1);
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 49);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, 50);
    assert_ptr_equal(rb__wheel_get(w), &t);
    assert_null(rb__wheel_get(w));

    /* Moving it later: the old deadline passes without it. */
    rb__wheel_add(w, &t, 1000);
    rb__wheel_add(w, &t, 5000);
    rb__wheel_update(w, 4999);
    assert_null(rb__wheel_get(w));
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 5000);
    assert_ptr_equal(rb__wheel_get(w), &t);

    /* Re-adding a timer that already sits on the expired list takes it back off. */
    struct rb__timer a, b;
    rb__timer_init(&a);
    rb__timer_init(&b);
    rb__wheel_add(w, &a, 5010);
    rb__wheel_add(w, &b, 5010);
    rb__wheel_update(w, 5010);
    rb__wheel_add(w, &b, 6000); /* b was last on the expired list: the tail must move back */
    assert_int_equal(rb__wheel_check(w), 0);
    assert_ptr_equal(rb__wheel_get(w), &a);
    assert_null(rb__wheel_get(w));
    assert_int_equal(w->pending, 1);
    rb__wheel_update(w, 6000);
    assert_ptr_equal(rb__wheel_get(w), &b);
    assert_int_equal(w->pending, 0);
    assert_int_equal(rb__wheel_check(w), 0);
    free(w);
}

/* A re-arm inside the slot the timer already occupies must still expire on the new tick. */
static void test_readd_within_same_slot(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(0);
    struct rb__timer t, other;
    rb__timer_init(&t);
    rb__timer_init(&other);
    rb__wheel_add(w, &other, 40000);
    rb__wheel_add(w, &t, 20000); /* level-2 slot 1 spans ticks 16384..32767 */
    rb__wheel_add(w, &t, 17000);
    assert_int_equal(w->pending, 2);
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 16999);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, 17000);
    assert_ptr_equal(rb__wheel_get(w), &t);

    rb__wheel_add(w, &t, 17100); /* level 0 */
    rb__wheel_add(w, &t, 17050); /* a different level-0 slot */
    rb__wheel_add(w, &t, 30000); /* level 2 */
    rb__wheel_add(w, &t, 32767); /* same level-2 slot, later */
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 32766);
    assert_null(rb__wheel_get(w));
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 32767);
    assert_ptr_equal(rb__wheel_get(w), &t);
    assert_null(rb__wheel_get(w));
    assert_int_equal(w->pending, 1);
    free(w);
}

static void test_del_not_pending_is_harmless(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(10);
    struct rb__timer idle, live;
    rb__timer_init(&idle);
    rb__timer_init(&live);
    rb__wheel_add(w, &live, 20);
    rb__wheel_del(w, &idle);
    rb__wheel_del(w, &idle);
    assert_int_equal(w->pending, 1);
    assert_int_equal(rb__wheel_check(w), 0);

    /* Deleting twice, and deleting after get(), change nothing either. */
    rb__wheel_del(w, &live);
    rb__wheel_del(w, &live);
    assert_int_equal(w->pending, 0);
    rb__wheel_add(w, &live, 20);
    rb__wheel_update(w, 20);
    assert_ptr_equal(rb__wheel_get(w), &live);
    rb__wheel_del(w, &live);
    assert_int_equal(w->pending, 0);
    assert_int_equal(rb__wheel_check(w), 0);

    /* Deleting from the middle and the end of the expired list keeps it consistent. */
    struct rb__timer e[3];
    for (int i = 0; i < 3; i++) {
        rb__timer_init(&e[i]);
        rb__wheel_add(w, &e[i], 5);
    }
    rb__wheel_del(w, &e[1]);
    rb__wheel_del(w, &e[2]);
    assert_int_equal(rb__wheel_check(w), 0);
    struct rb__timer f;
    rb__timer_init(&f);
    rb__wheel_add(w, &f, 0);
    assert_ptr_equal(rb__wheel_get(w), &e[0]);
    assert_ptr_equal(rb__wheel_get(w), &f);
    assert_null(rb__wheel_get(w));
    assert_int_equal(rb__wheel_check(w), 0);
    free(w);
}

static void test_wraparound(void **state)
{
    (void)state;
    uint32_t start = UINT32_MAX - 100;
    struct rb__wheel *w = new_wheel(start);
    struct rb__timer before, at_zero, after, far;
    rb__timer_init(&before);
    rb__timer_init(&at_zero);
    rb__timer_init(&after);
    rb__timer_init(&far);
    rb__wheel_add(w, &before, UINT32_MAX);
    rb__wheel_add(w, &at_zero, 0);
    rb__wheel_add(w, &after, 1000);
    rb__wheel_add(w, &far, 0x7fff0000); /* top level, across the wrap */
    assert_int_equal(rb__wheel_check(w), 0);
    /* Ticks after the wrap are numerically smaller, yet still in the future. */
    assert_true(rb__tick_before(start, 5));

    rb__wheel_update(w, UINT32_MAX - 1);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, UINT32_MAX);
    assert_ptr_equal(rb__wheel_get(w), &before);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, 0);
    assert_ptr_equal(rb__wheel_get(w), &at_zero);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, 999);
    assert_null(rb__wheel_get(w));
    rb__wheel_update(w, 1000);
    assert_ptr_equal(rb__wheel_get(w), &after);
    rb__wheel_update(w, 0x7ffeffff);
    assert_null(rb__wheel_get(w));
    assert_int_equal(rb__wheel_check(w), 0);
    rb__wheel_update(w, 0x7fff0000);
    assert_ptr_equal(rb__wheel_get(w), &far);
    assert_int_equal(w->pending, 0);

    /* An update "back in time" (negative signed difference) is a no-op. */
    rb__wheel_update(w, 0x7ffe0000);
    assert_int_equal(w->now, 0x7fff0000);
    free(w);
}

static void test_next(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(0);
    assert_int_equal(rb__wheel_next(w), UINT32_MAX);

    struct rb__timer a, b;
    rb__timer_init(&a);
    rb__timer_init(&b);
    rb__wheel_add(w, &a, 5);
    assert_int_equal(rb__wheel_next(w), 5);
    rb__wheel_del(w, &a);
    assert_int_equal(rb__wheel_next(w), UINT32_MAX);

    /* 300 sits in level-1 slot 1, which comes due at tick 256 and then needs 44 more ticks. */
    rb__wheel_add(w, &a, 300);
    assert_int_equal(rb__wheel_next(w), 256);
    rb__wheel_update(w, 255);
    assert_int_equal(rb__wheel_next(w), 1);
    rb__wheel_update(w, 256);
    assert_int_equal(rb__wheel_next(w), 44);
    assert_int_equal(w->relinked, 1);

    /* A nearer deadline wins. */
    rb__wheel_add(w, &b, 260);
    assert_int_equal(rb__wheel_next(w), 4);
    rb__wheel_update(w, 260);
    assert_int_equal(rb__wheel_next(w), 0); /* b waits on the expired list */
    assert_ptr_equal(rb__wheel_get(w), &b);
    assert_int_equal(rb__wheel_next(w), 40);

    /* Top level across the wrap: due at the start of its slot, tick 0 after the wrap. */
    rb__wheel_del(w, &a);
    rb__wheel_update(w, 0x60000000); /* steps below 2^31 each */
    rb__wheel_update(w, 0xc0000000);
    rb__wheel_update(w, 0xfffffff0);
    rb__wheel_add(w, &a, 0x10);
    assert_int_equal(rb__wheel_next(w), 0x10);
    rb__wheel_update(w, 0);
    assert_int_equal(rb__wheel_next(w), 0x10);
    assert_int_equal(rb__wheel_check(w), 0);
    free(w);
}

/* A huge jump with a few timers: exact set out, at most one relink per level each. */
static void test_long_jump(void **state)
{
    (void)state;
    struct rb__wheel *w = new_wheel(77);
    enum { N = 8 };
    static const uint32_t offs[N] = {3, 400, 70000, 999999, 1000000, 1000001, 5000000, 600000000};
    struct rb__timer t[N];
    for (int i = 0; i < N; i++) {
        rb__timer_init(&t[i]);
        rb__wheel_add(w, &t[i], 77 + offs[i]);
    }
    uint32_t jumps[] = {77 + 1000000, 77 + 2000000000u};
    bool seen[N] = {false};
    for (int j = 0; j < 2; j++) {
        rb__wheel_update(w, jumps[j]);
        assert_int_equal(w->now, jumps[j]);
        assert_int_equal(rb__wheel_check(w), 0);
        for (struct rb__timer *e; (e = rb__wheel_get(w));) {
            ptrdiff_t i = e - t;
            assert_true(i >= 0 && i < N && !seen[i]);
            seen[i] = true;
        }
        for (int i = 0; i < N; i++)
            assert_int_equal(seen[i], 77 + offs[i] <= jumps[j]);
    }
    assert_int_equal(w->pending, 0);
    assert_true(w->relinked <= N * (RB__WHEEL_LEVELS - 1));
    free(w);
}

/* xorshift64*: a fixed-seed generator, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A tick offset spread over every level: uniform within a random power of two. */
static uint32_t rng_offset(uint64_t *s)
{
    unsigned bits = (unsigned)(rng_next(s) % 32); /* 0..31: at most 2^31 - 1 */
    return (uint32_t)(rng_next(s) & ((UINT64_C(1) << bits) - 1));
}

enum model_state { M_IDLE, M_ARMED, M_DUE };

/* Drains the wheel's expired list; it must equal the model's due set exactly. */
static void drain_and_compare(struct rb__wheel *w, struct rb__timer *t, enum model_state *m, int n)
{
    int due = 0;
    for (int i = 0; i < n; i++)
        due += m[i] == M_DUE;
    int got = 0;
    for (struct rb__timer *e; (e = rb__wheel_get(w));) {
        ptrdiff_t i = e - t;
        assert_true(i >= 0 && i < n);
        assert_int_equal(m[i], M_DUE);
        assert_false(rb__timer_pending(e));
        m[i] = M_IDLE;
        got++;
    }
    assert_int_equal(got, due);
}

static void run_model(uint64_t seed, uint32_t start, int steps)
{
    enum { N = 256 };
    struct rb__wheel *w = new_wheel(start);
    struct rb__timer *t = calloc(N, sizeof(*t));
    enum model_state *m = calloc(N, sizeof(*m));
    uint32_t *deadline = calloc(N, sizeof(*deadline));
    assert_true(t && m && deadline);
    for (int i = 0; i < N; i++)
        rb__timer_init(&t[i]);
    uint64_t s = seed;
    uint32_t now = start;

    for (int step = 0; step < steps; step++) {
        unsigned op = (unsigned)(rng_next(&s) % 100);
        int i = (int)(rng_next(&s) % N);
        if (op < 45) { /* add or re-add; a few deadlines already passed */
            uint32_t d = now + rng_offset(&s);
            if (op < 3)
                d = now - rng_offset(&s);
            rb__wheel_add(w, &t[i], d);
            deadline[i] = d;
            m[i] = rb__tick_before(now, d) ? M_ARMED : M_DUE;
        } else if (op < 65) {
            rb__wheel_del(w, &t[i]);
            m[i] = M_IDLE;
        } else if (op < 97) { /* advance: mostly short steps, some across whole levels */
            uint32_t step_ticks = op < 80 ? (uint32_t)(rng_next(&s) % 300) : rng_offset(&s);
            uint32_t before = rb__wheel_next(w);
            now += step_ticks;
            rb__wheel_update(w, now);
            assert_int_equal(w->now, now);
            bool expired_any = false;
            for (int k = 0; k < N; k++) {
                if (m[k] == M_ARMED && !rb__tick_before(now, deadline[k])) {
                    m[k] = M_DUE;
                    expired_any = true;
                }
            }
            /* next() promised no work before its tick: nothing may expire short of it. */
            if (expired_any && before != 0)
                assert_true(step_ticks >= before);
        } else {
            drain_and_compare(w, t, m, N);
        }
        assert_int_equal(rb__wheel_check(w), 0);
        uint64_t live = 0;
        uint32_t nearest = UINT32_MAX;
        bool any_due = false;
        for (int k = 0; k < N; k++) {
            live += m[k] != M_IDLE;
            any_due |= m[k] == M_DUE;
            if (m[k] == M_ARMED && deadline[k] - now < nearest)
                nearest = deadline[k] - now;
            assert_int_equal(rb__timer_pending(&t[k]), m[k] != M_IDLE);
        }
        assert_int_equal(w->pending, live);
        uint32_t next = rb__wheel_next(w);
        if (any_due)
            assert_int_equal(next, 0);
        else
            assert_true(next > 0 && next <= nearest && (next == UINT32_MAX) == (live == 0));
        if (step % 8 == 0)
            drain_and_compare(w, t, m, N);
    }
    drain_and_compare(w, t, m, N);
    free(deadline);
    free(m);
    free(t);
    free(w);
}

/* The invariant checker walks every slot after every step; under ASan that is seven times slower,
 * so the sanitizer build takes a quarter of the steps (the same kinds of operation, the same
 * checks) and the release build the full count. */
#if defined(__SANITIZE_ADDRESS__)
#define MODEL_STEPS 50000
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MODEL_STEPS 50000
#endif
#endif
#ifndef MODEL_STEPS
#define MODEL_STEPS 200000
#endif

static void test_random_against_model(void **state)
{
    (void)state;
    static const struct {
        uint64_t seed;
        uint32_t start;
    } runs[] = {
        {0x9e3779b97f4a7c15ULL, 0},
        {12345, 0xfffff000},
        {0xdeadbeefULL, 0x7fffffff},
        {42, 0x12345678},
    };
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++)
        run_model(runs[r].seed, runs[r].start, MODEL_STEPS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_del_pending),
        cmocka_unit_test(test_add_past_deadline_expires_at_once),
        cmocka_unit_test(test_expiry_exact_single),
        cmocka_unit_test(test_expiry_exact_stepping_by_next),
        cmocka_unit_test(test_expiry_exact_tick_by_tick),
        cmocka_unit_test(test_readd_moves_timer),
        cmocka_unit_test(test_readd_within_same_slot),
        cmocka_unit_test(test_del_not_pending_is_harmless),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_long_jump),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
