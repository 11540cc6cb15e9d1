/* test_client_backoff.c — reconnect backoff (client/backoff.c): exponential bounds, full jitter
 * inside them, reset, per-handle seeding; and the client's URL parser (client/url.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void test_bounds_double_up_to_the_maximum(void **state)
{
    (void)state;
    struct rbc__backoff b;
    rbc__backoff_init(&b, 1000, 60000, 1);
    const uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(rbc__backoff_bound(&b), want[i]);
        uint32_t d = rbc__backoff_next(&b);
        assert_true(d <= want[i]);
    }
    /* However many attempts, the bound neither overflows nor passes the maximum. */
    b.attempt = UINT32_MAX - 1;
    assert_int_equal(rbc__backoff_bound(&b), 60000);
    rbc__backoff_next(&b);
    rbc__backoff_next(&b);
    assert_int_equal(b.attempt, UINT32_MAX);
    assert_int_equal(rbc__backoff_bound(&b), 60000);
    rbc__backoff_reset(&b);
    assert_int_equal(rbc__backoff_bound(&b), 1000);
    /* A maximum below the minimum is the minimum. */
    rbc__backoff_init(&b, 5000, 10, 1);
    assert_int_equal(rbc__backoff_bound(&b), 5000);
}

static void test_full_jitter_covers_the_whole_range(void **state)
{
    (void)state;
    struct rbc__backoff b;
    rbc__backoff_init(&b, 10000, 10000, 42);
    uint64_t sum = 0;
    uint32_t lo = UINT32_MAX, hi = 0, buckets[10] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        uint32_t d = rbc__backoff_next(&b);
        assert_true(d <= 10000);
        sum += d;
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        buckets[d * 10 / 10001]++;
    }
    /* Uniform on [0, 10000]: the mean near 5000, both ends reached, every tenth populated
     * (each holds 2000 +- a few %: 1700 is far outside what a uniform source misses). */
    assert_true(sum / n > 4800 && sum / n < 5200);
    assert_true(lo < 50);
    assert_true(hi > 9950);
    for (int i = 0; i < 10; i++)
        assert_true(buckets[i] > 1700 && buckets[i] < 2300);
}

static void test_seeds_are_per_handle(void **state)
{
    (void)state;
    struct rbc__backoff a, b, c;
    rbc__backoff_init(&a, 1000, 1000, 7);
    rbc__backoff_init(&b, 1000, 1000, 7);
    rbc__backoff_init(&c, 1000, 1000, 8);
    int same = 0;
    for (int i = 0; i < 100; i++) {
        uint32_t x = rbc__backoff_next(&a), y = rbc__backoff_next(&b), z = rbc__backoff_next(&c);
        assert_int_equal(x, y); /* the same seed replays */
        same += x == z;
    }
    assert_true(same < 10); /* another seed: another spread of a million clients */
}

static void test_url_parser(void **state)
{
    (void)state;
    struct rbc__url u;
    assert_int_equal(rbc__url_parse("127.0.0.1:7600", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 7600);
    assert_int_equal(u.transport, RBC__TRANSPORT_V1);
    assert_int_equal(rbc__url_parse("tcp://push.example.com:443", &u), 0);
    assert_string_equal(u.host, "push.example.com");
    assert_int_equal(u.port, 443);
    assert_int_equal(rbc__url_parse("[::1]:65535", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 65535);
    /* Transports to come: recognised, refused for now. */
    assert_int_equal(rbc__url_parse("ws://h:80", &u), -EPROTONOSUPPORT);
    assert_int_equal(rbc__url_parse("wss://h:443", &u), -EPROTONOSUPPORT);
    assert_int_equal(rbc__url_parse("tls://h:443", &u), -EPROTONOSUPPORT);
    const char *bad[] = {NULL,      "",        "h",           "h:",     ":80",
                         "h:0",     "h:65536", "h:80x",       "h:-1",   "::1:80",
                         "[::1]80", "[::1",    "http://h:80", "h h:80", "h/x:80",
                         "u@h:80",  "tcp://",  "tcp://:80",   "[]:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rbc__url_parse(bad[i], &u), -EINVAL);
    char longhost[300];
    memset(longhost, 'a', sizeof(longhost));
    memcpy(longhost + 290, ":80", 4);
    assert_int_equal(rbc__url_parse(longhost, &u), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_double_up_to_the_maximum),
        cmocka_unit_test(test_full_jitter_covers_the_whole_range),
        cmocka_unit_test(test_seeds_are_per_handle),
        cmocka_unit_test(test_url_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
