/* util.c — small shared helpers: the clock, duration and mode parsing, names, histogram bounds. */
#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifdef RB_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "internal.h" /* (rb__mem_decay) */
#include "ringbeat.h"

/*
 * Heartbeat RTT spans loopback (tens of microseconds) to a congested mobile link or an overloaded
 * box (seconds); 1-1.5-2-3-5-7.5 per decade keeps the p99 estimate within a factor of about 1.5,
 * and the 10 s top shows how late a ramp's answers really are instead of piling them at 1 s.
 */
const uint32_t rb_rtt_bounds_us[RB_HIST_BUCKETS - 1] = {
    25,     50,     75,     100,    150,    200,     300,     500,     750,      1000,  1500,
    2000,   3000,   5000,   7500,   10000,  15000,   20000,   30000,   50000,    75000, 100000,
    150000, 200000, 300000, 500000, 750000, 1000000, 2000000, 5000000, 10000000,
};

/*
 * Lateness is counted in whole milliseconds. With a 10 ms tick, on-time detection is 0-10 ms and
 * a turn or two late is 10-30 ms: 1 ms steps to 15 ms and no step over 10 ms to 50 ms tell these
 * apart (and let the server's view be compared with a peer's); the tail shows a stalled loop, up
 * to the tens of seconds an overloaded box has been seen to reach.
 */
const uint32_t rb_lateness_bounds_ms[RB_HIST_BUCKETS - 1] = {
    0,  1,  2,  3,  4,  5,  6,   7,   8,   9,    10,   11,   12,    13,    14,    15,
    17, 20, 25, 30, 40, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000,
};

uint64_t rb_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int rb_parse_mode(const char *s, enum rb_mode *out)
{
    static const enum rb_mode modes[] = {RB_MODE_SERVER, RB_MODE_CLIENT, RB_MODE_SILENT,
                                         RB_MODE_KERNEL};
    for (size_t i = 0; s && i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(s, rb_mode_name(modes[i])) == 0) {
            *out = modes[i];
            return 0;
        }
    }
    return -EINVAL;
}

int rb_parse_duration_us(const char *s, uint64_t *out_us)
{
    if (s == NULL || out_us == NULL)
        return -EINVAL;

    const char *p = s;
    uint64_t whole = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return -ERANGE;
        whole = whole * 10 + d;
        digits++;
        p++;
    }

    /* A fraction is kept as micro-units so "1.5s" and "0.25ms" are exact; finer digits must be 0.
     */
    uint64_t frac_micro = 0;
    int frac_digits = 0;
    if (*p == '.') {
        p++;
        uint64_t scale = 100000;
        while (*p >= '0' && *p <= '9') {
            uint64_t d = (uint64_t)(*p - '0');
            if (scale == 0) {
                if (d != 0)
                    return -EINVAL;
            } else {
                frac_micro += d * scale;
                scale /= 10;
            }
            frac_digits++;
            p++;
        }
        if (frac_digits == 0)
            return -EINVAL;
    }
    if (digits == 0)
        return -EINVAL;

    uint64_t unit_us;
    if (*p == '\0' || strcmp(p, "ms") == 0)
        unit_us = 1000; /* a bare number is milliseconds (the contract) */
    else if (strcmp(p, "us") == 0)
        unit_us = 1;
    else if (strcmp(p, "s") == 0)
        unit_us = 1000000;
    else if (strcmp(p, "m") == 0)
        unit_us = 60ull * 1000000;
    else if (strcmp(p, "h") == 0)
        unit_us = 3600ull * 1000000;
    else
        return -EINVAL;

    if (whole > UINT64_MAX / unit_us)
        return -ERANGE;
    uint64_t us = whole * unit_us;
    /* frac_micro is in millionths of the unit; a sub-microsecond remainder is an error, not 0. */
    if (frac_micro != 0) {
        uint64_t num = frac_micro * unit_us;
        if (num % 1000000 != 0)
            return -EINVAL;
        if (us > UINT64_MAX - num / 1000000)
            return -ERANGE;
        us += num / 1000000;
    }
    *out_us = us;
    return 0;
}

const char *rb_close_code_name(int code)
{
    switch (code) {
    case RB_CLOSE_NORMAL:
        return "normal";
    case RB_CLOSE_TIMEOUT:
        return "timeout";
    case RB_CLOSE_PROTOCOL:
        return "protocol";
    case RB_CLOSE_FULL:
        return "full";
    case RB_CLOSE_SHUTDOWN:
        return "shutdown";
    case RB_CLOSE_TOO_BIG:
        return "too_big";
    case RB_CLOSE_SLOW_READER:
        return "slow_reader";
    case RB_CLOSE_REPLACED:
        return "replaced";
    case RB_CLOSE_UNAUTHORIZED:
        return "unauthorized";
    case RB_CLOSE_BAD_PAYLOAD:
        return "bad_payload";
    case RB_CLOSE_HANDSHAKE:
        return "handshake";
    case RB_CLOSE_PEER:
        return "peer";
    case RB_CLOSE_EOF:
        return "eof";
    case RB_CLOSE_RESET:
        return "reset";
    default:
        return "unknown";
    }
}

const char *rb_mode_name(enum rb_mode mode)
{
    switch (mode) {
    case RB_MODE_SERVER:
        return "server";
    case RB_MODE_CLIENT:
        return "client";
    case RB_MODE_SILENT:
        return "silent";
    case RB_MODE_KERNEL:
        return "kernel";
    }
    return "unknown";
}

const char *rb_protocol_name(enum rb_protocol p)
{
    switch (p) {
    case RB_PROTOCOL_V1:
        return "v1";
    case RB_PROTOCOL_WS:
        return "ws";
    }
    return "unknown";
}

const char *rb_transport_name(enum rb_transport t)
{
    switch (t) {
    case RB_TRANSPORT_TCP:
        return "tcp";
    case RB_TRANSPORT_TLS:
        return "tls";
    }
    return "unknown";
}

const char *rb_tls_alert_kind_name(enum rb_tls_alert_kind k)
{
    static const char *const names[RB_TLS_ALERT_KINDS] = {"close_notify",      "unexpected_message",
                                                          "bad_record_mac",    "record_overflow",
                                                          "handshake_failure", "decode_error",
                                                          "illegal_parameter", "protocol_version",
                                                          "internal_error",    "other"};
    return (unsigned)k < RB_TLS_ALERT_KINDS ? names[k] : "other";
}

const char *rb_liveness_name(enum rb_liveness l)
{
    switch (l) {
    case RB_ALIVE:
        return "alive";
    case RB_SUSPECT:
        return "suspect";
    case RB_DEAD:
        return "dead";
    }
    return "unknown";
}

void rb__mem_decay(void)
{
#ifdef RB_HAVE_JEMALLOC
    /* The thread's cache first (freed objects it still holds keep their pages busy), then the
     * arena's decay: purging runs only when an arena allocates, so an arena that went quiet
     * after a burst would keep its dirty pages resident for good. */
    unsigned arena = 0;
    size_t len = sizeof(arena);
    (void)mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    if (mallctl("thread.arena", &arena, &len, NULL, 0) == 0) {
        char name[48];
        snprintf(name, sizeof(name), "arena.%u.decay", arena);
        (void)mallctl(name, NULL, NULL, NULL, 0);
    }
#endif
}

void rb_memory_stats(uint64_t *allocated_bytes, uint64_t *resident_bytes)
{
    uint64_t allocated = 0, resident = 0;
#ifdef RB_HAVE_JEMALLOC
    /* jemalloc caches its statistics; bumping "epoch" refreshes them before the read. */
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    if (mallctl("epoch", &epoch, &len, &epoch, len) == 0) {
        size_t v = 0;
        len = sizeof(v);
        if (mallctl("stats.allocated", &v, &len, NULL, 0) == 0)
            allocated = v;
        len = sizeof(v);
        if (mallctl("stats.resident", &v, &len, NULL, 0) == 0)
            resident = v;
    }
#endif
    if (allocated_bytes != NULL)
        *allocated_bytes = allocated;
    if (resident_bytes != NULL)
        *resident_bytes = resident;
}
