/* test_util.c — unit tests of engine/util.c: durations, names, histogram bounds, memory stats. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "ringbeat.h"

static uint64_t dur(const char *s)
{
    uint64_t us = 12345;
    assert_int_equal(rb_parse_duration_us(s, &us), 0);
    return us;
}

/* A failed parse must leave the output alone. */
static int dur_err(const char *s)
{
    uint64_t us = 777;
    int rc = rb_parse_duration_us(s, &us);
    assert_int_equal(us, 777);
    return rc;
}

static void test_duration_units(void **state)
{
    (void)state;
    assert_int_equal(dur("250"), 250000); /* a bare number is milliseconds */
    assert_int_equal(dur("250ms"), 250000);
    assert_int_equal(dur("500us"), 500);
    assert_int_equal(dur("30s"), 30000000);
    assert_int_equal(dur("2m"), 120000000);
    assert_int_equal(dur("1h"), 3600000000ull);
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("0s"), 0);
}

static void test_duration_fractions(void **state)
{
    (void)state;
    assert_int_equal(dur("1.5s"), 1500000);
    assert_int_equal(dur("0.25ms"), 250);
    assert_int_equal(dur("0.001ms"), 1);
    assert_int_equal(dur("2.500"), 2500);
    /* Below a microsecond cannot be represented: refused rather than rounded to 0. */
    assert_int_equal(dur_err("0.5us"), -EINVAL);
    assert_int_equal(dur_err("0.0001ms"), -EINVAL);
}

static void test_duration_rejects_garbage(void **state)
{
    (void)state;
    const char *bad[] = {"",    "ms",   "-1",  "+1",   "10x", "1.",    ".5s",  "10 s",
                         " 10", "10s ", "1e3", "0x10", "5S",  "10mss", "1..2s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dur_err(bad[i]), -EINVAL);
    assert_int_equal(rb_parse_duration_us(NULL, &(uint64_t){0}), -EINVAL);
    assert_int_equal(rb_parse_duration_us("1s", NULL), -EINVAL);
}

static void test_duration_overflow(void **state)
{
    (void)state;
    assert_int_equal(dur_err("99999999999999999999"), -ERANGE);
    assert_int_equal(dur_err("18446744073709551s"), -ERANGE);
    assert_int_equal(dur_err("18446744073709551615ms"), -ERANGE);
    assert_int_equal(dur("18446744073709551615us"), UINT64_MAX);
}

static void test_names(void **state)
{
    (void)state;
    const struct {
        int code;
        const char *name;
    } codes[] = {
        {RB_CLOSE_NORMAL, "normal"},
        {RB_CLOSE_TIMEOUT, "timeout"},
        {RB_CLOSE_PROTOCOL, "protocol"},
        {RB_CLOSE_FULL, "full"},
        {RB_CLOSE_SHUTDOWN, "shutdown"},
        {RB_CLOSE_TOO_BIG, "too_big"},
        {RB_CLOSE_SLOW_READER, "slow_reader"},
        {RB_CLOSE_PEER, "peer"},
        {RB_CLOSE_EOF, "eof"},
        {RB_CLOSE_RESET, "reset"},
        {0, "unknown"},
        {RB_CLOSE_REPLACED, "replaced"},
        {RB_CLOSE_UNAUTHORIZED, "unauthorized"},
        {-1, "unknown"},
        {RB_CLOSE_REASON_MAX, "unknown"},
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_string_equal(rb_close_code_name(codes[i].code), codes[i].name);
    assert_string_equal(rb_mode_name(RB_MODE_SERVER), "server");
    assert_string_equal(rb_mode_name(RB_MODE_CLIENT), "client");
    assert_string_equal(rb_mode_name(RB_MODE_SILENT), "silent");
    assert_string_equal(rb_mode_name(RB_MODE_KERNEL), "kernel");
    assert_string_equal(rb_mode_name((enum rb_mode)9), "unknown");
    assert_string_equal(rb_liveness_name(RB_ALIVE), "alive");
    assert_string_equal(rb_liveness_name(RB_SUSPECT), "suspect");
    assert_string_equal(rb_liveness_name(RB_DEAD), "dead");
    assert_string_equal(rb_liveness_name((enum rb_liveness)9), "unknown");
}

static void test_histogram_bounds_increase(void **state)
{
    (void)state;
    for (int i = 1; i < RB_HIST_BUCKETS - 1; i++) {
        assert_true(rb_rtt_bounds_us[i] > rb_rtt_bounds_us[i - 1]);
        assert_true(rb_lateness_bounds_ms[i] > rb_lateness_bounds_ms[i - 1]);
    }
    /* Loopback RTTs need sub-100us resolution; a whole second must still be a finite bucket. */
    assert_true(rb_rtt_bounds_us[0] <= 50);
    assert_true(rb_rtt_bounds_us[RB_HIST_BUCKETS - 2] >= 1000000);
    /* On-time detection (within a 10 ms tick) must be distinguishable from late. */
    assert_int_equal(rb_lateness_bounds_ms[0], 0);
    int has10 = 0;
    for (int i = 0; i < RB_HIST_BUCKETS - 1; i++)
        has10 |= rb_lateness_bounds_ms[i] == 10;
    assert_true(has10);
    /* Finer where detection lands (0-50 ms): 1 ms steps to 15 ms, no bucket wider than 10 ms. */
    for (int i = 1; i < RB_HIST_BUCKETS - 1 && rb_lateness_bounds_ms[i] <= 50; i++) {
        uint32_t width = rb_lateness_bounds_ms[i] - rb_lateness_bounds_ms[i - 1];
        assert_true(width <= (rb_lateness_bounds_ms[i] <= 15 ? 1u : 10u));
    }
    assert_int_equal(rb_lateness_bounds_ms[15], 15);
    assert_true(rb_lateness_bounds_ms[RB_HIST_BUCKETS - 2] >= 60000);
}

static void test_parse_mode(void **state)
{
    (void)state;
    enum rb_mode m = RB_MODE_SILENT;
    assert_int_equal(rb_parse_mode("server", &m), 0);
    assert_int_equal(m, RB_MODE_SERVER);
    assert_int_equal(rb_parse_mode("client", &m), 0);
    assert_int_equal(m, RB_MODE_CLIENT);
    assert_int_equal(rb_parse_mode("silent", &m), 0);
    assert_int_equal(m, RB_MODE_SILENT);
    assert_int_equal(rb_parse_mode("kernel", &m), 0);
    assert_int_equal(m, RB_MODE_KERNEL);
    assert_int_equal(rb_parse_mode("Server", &m), -EINVAL);
    assert_int_equal(rb_parse_mode("", &m), -EINVAL);
    assert_int_equal(rb_parse_mode(NULL, &m), -EINVAL);
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The one address grammar: what ringbeatd accepts on its command line is what the engine binds. */
static void test_parse_addr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(rb_parse_addr("127.0.0.1:7600", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(port_of(&ss), 7600);
    /* ":PORT" and "*:PORT" mean every IPv4 address, like the default 0.0.0.0:7600. */
    assert_int_equal(rb_parse_addr(":7600", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(rb_parse_addr("*:0", &ss, &len), 0);
    assert_int_equal(port_of(&ss), 0);
    assert_int_equal(rb_parse_addr("[::1]:65535", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(port_of(&ss), 65535);
    static const char *const bad[] = {
        "127.0.0.1",    "127.0.0.1:",     "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:7a", "localhost:7600", "::1:7600",        "[::1:7600",
        "1.2.3.4.5:80", "127.0.0.1: 80",  "[127.0.0.1]:80",  "127.0.0.1:0000080",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rb_parse_addr(bad[i], &ss, &len), -EINVAL);
}

/* The formatter is the parser's inverse: what a log line prints, --listen accepts. */
static void test_format_addr(void **state)
{
    (void)state;
    static const char *const good[] = {"127.0.0.1:7600", "0.0.0.0:0", "[::1]:65535",
                                       "[2001:db8::ff00:42:8329]:443"};
    char out[RB_ADDR_STRLEN];
    struct sockaddr_storage ss;
    socklen_t len;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(rb_parse_addr(good[i], &ss, &len), 0);
        assert_int_equal(rb_format_addr(&ss, out, sizeof(out)), 0);
        assert_string_equal(out, good[i]);
    }
    assert_int_equal(rb_format_addr(&ss, out, 8), -ENOSPC);
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    assert_int_equal(rb_format_addr(&ss, out, sizeof(out)), -EAFNOSUPPORT);
    assert_string_equal(out, "-");
}

static void test_parse_listen(void **state)
{
    (void)state;
    struct rb_listen_addr la;
    assert_int_equal(rb_parse_listen("127.0.0.1:7600", &la), 0);
    assert_int_equal(la.protocol, RB_PROTOCOL_V1);
    assert_int_equal(rb_parse_listen("tcp://:7600", &la), 0);
    assert_int_equal(la.protocol, RB_PROTOCOL_V1);
    assert_int_equal(port_of(&la.addr), 7600);
    assert_int_equal(rb_parse_listen("gopher://1.2.3.4:70", &la), -EPROTONOSUPPORT);
    assert_int_equal(rb_parse_listen("tcp://nonsense", &la), -EINVAL);
}

static void test_memory_stats(void **state)
{
    (void)state;
    uint64_t a = 1, r = 1;
    size_t big = 8u << 20;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 1, big);
    rb_memory_stats(&a, &r);
#ifdef RB_HAVE_JEMALLOC
    assert_true(a >= big);
    assert_true(r >= big);
#else
    assert_int_equal(a, 0);
    assert_int_equal(r, 0);
#endif
    free(p);
    rb_memory_stats(NULL, NULL); /* either output may be omitted */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_fractions),
        cmocka_unit_test(test_duration_rejects_garbage),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_histogram_bounds_increase),
        cmocka_unit_test(test_parse_mode),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_format_addr),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_memory_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
