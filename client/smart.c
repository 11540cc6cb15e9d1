/* smart.c — the smart heartbeat: step up after successes, settle a margin below the edge. */
#include "smart.h"

#include <errno.h>
#include <string.h>

/*
 * The algorithm of WeChat's smart heartbeat as Tencent Mars implements it
 * (mars/stn/src/smart_heartbeat.cc; constants from mars/stn/config.h), restated:
 *  - every connection first sends `warmup` heartbeats at the minimum; only then is the learned
 *    interval used, and only results at the learned interval count;
 *  - while probing, `to_step` successes add a step (up to the maximum; at the maximum it settles
 *    a margin below it); `to_settle` failures end the probe: it settles a margin below the last
 *    interval that held and is stable from then on;
 *  - a stable value that fails `to_settle` times restarts the search at the minimum;
 *  - a stable value is re-probed (+margin) now and then.
 * Where this differs from Mars, on purpose:
 *  - re-probing happens after `reprobe_ms` of successful heartbeats at the stable value (Mars: on
 *    one weekday if the value is a day old). The library reads no wall clock, and time spent on
 *    that network is what the question is about;
 *  - a re-probe that fails settles back on the stable value it started from (Mars subtracts a step
 *    and a margin from the probe, i.e. drops below a value that had held for a week);
 *  - a success at a stable value clears its failure count (Mars keeps it, so two failures weeks
 *    apart reset a good value);
 *  - the server may narrow the range (its clamps, seen in a WELCOME).
 */

#define DEF_MIN_MS     (3 * 60 * 1000 + 30 * 1000) /* Mars MinHeartInterval */
#define DEF_MAX_MS     (10 * 60 * 1000)            /* Mars MaxHeartInterval */
#define DEF_STEP_MS    (60 * 1000)                 /* Mars HeartStep */
#define DEF_MARGIN_MS  (20 * 1000)                 /* Mars SuccessStep */
#define DEF_WARMUP     3                           /* Mars NetStableTestCount */
#define DEF_TO_STEP    5                           /* Mars BaseSuccCount */
#define DEF_TO_SETTLE  2                           /* Mars MaxHeartFailCount */
#define DEF_REPROBE_MS (7u * 24 * 3600 * 1000)     /* Mars: about once a week */
#define COUNT_MAX      255                         /* counters persist as one byte */

int rbc__smart_params(const struct rbc_smart_config *cfg, struct rbc__smart_params *p)
{
    static const struct rbc_smart_config zero;
    if (!cfg)
        cfg = &zero;
    p->min_ms = cfg->min_interval_ms ? cfg->min_interval_ms : DEF_MIN_MS;
    p->max_ms = cfg->max_interval_ms ? cfg->max_interval_ms : DEF_MAX_MS;
    p->step_ms = cfg->step_ms ? cfg->step_ms : DEF_STEP_MS;
    p->margin_ms = cfg->margin_ms ? cfg->margin_ms : DEF_MARGIN_MS;
    p->warmup = cfg->warmup ? cfg->warmup : DEF_WARMUP;
    p->to_step = cfg->successes_to_step ? cfg->successes_to_step : DEF_TO_STEP;
    p->to_settle = cfg->failures_to_settle ? cfg->failures_to_settle : DEF_TO_SETTLE;
    p->reprobe_ms = cfg->reprobe_ms ? cfg->reprobe_ms : DEF_REPROBE_MS;
    p->fixed = cfg->fixed;
    /* A default maximum below a small configured minimum follows the minimum. */
    if (!cfg->max_interval_ms && p->max_ms < p->min_ms)
        p->max_ms = p->min_ms;
    if (p->max_ms < p->min_ms || p->max_ms > UINT32_MAX / 4)
        return -EINVAL;
    if (p->to_step > COUNT_MAX || p->to_settle > COUNT_MAX || p->warmup > 1000000)
        return -EINVAL;
    return 0;
}

static uint32_t clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A margin below v, never under the floor. */
static uint32_t below(const struct rbc__smart *s, uint32_t v)
{
    return v > s->floor_ms + s->p.margin_ms ? v - s->p.margin_ms : s->floor_ms;
}

void rbc__smart_forget(struct rbc__smart *s)
{
    memset(&s->n, 0, sizeof(s->n));
    s->n.interval_ms = s->floor_ms;
    s->n.fallback_ms = s->floor_ms;
}

void rbc__smart_init(struct rbc__smart *s, const struct rbc__smart_params *p)
{
    memset(s, 0, sizeof(*s));
    s->p = *p;
    s->floor_ms = p->min_ms;
    s->cap_ms = p->max_ms;
    rbc__smart_forget(s);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Layout: u8 version, u8 flags (bit 0: stable), u8 successes, u8 failures, u32 interval_ms,
 * u32 fallback_ms, u32 stable_ms; big-endian. */
size_t rbc__smart_save(const struct rbc__smart *s, uint8_t rec[RBC__SMART_REC_LEN])
{
    rec[0] = RBC__SMART_REC_VER;
    rec[1] = s->n.stable ? 1 : 0;
    rec[2] = s->n.successes;
    rec[3] = s->n.failures;
    put_u32(rec + 4, s->n.interval_ms);
    put_u32(rec + 8, s->n.fallback_ms);
    put_u32(rec + 12, s->n.stable_ms);
    return RBC__SMART_REC_LEN;
}

int rbc__smart_load(struct rbc__smart *s, const uint8_t *rec, size_t len)
{
    rbc__smart_forget(s);
    if (!rec || len != RBC__SMART_REC_LEN || rec[0] != RBC__SMART_REC_VER || rec[1] > 1)
        return -EINVAL;
    /* The parameters may have changed since the record was written (an app update): clamp it
     * into today's range rather than throw away what was learned. */
    s->n.stable = rec[1];
    s->n.interval_ms = clamp(get_u32(rec + 4), s->floor_ms, s->cap_ms);
    s->n.fallback_ms = clamp(get_u32(rec + 8), s->floor_ms, s->n.interval_ms);
    s->n.stable_ms = get_u32(rec + 12);
    s->n.successes = rec[2] < s->p.to_step ? rec[2] : 0;
    s->n.failures = rec[3] < s->p.to_settle ? rec[3] : 0;
    return 0;
}

void rbc__smart_connected(struct rbc__smart *s)
{
    s->conn_ok = 0;
}

static bool warming(const struct rbc__smart *s)
{
    return s->conn_ok < s->p.warmup;
}

uint32_t rbc__smart_interval(const struct rbc__smart *s)
{
    if (s->p.fixed || s->foreground || warming(s))
        return s->floor_ms;
    return s->n.interval_ms;
}

enum rbc_phase rbc__smart_phase(const struct rbc__smart *s)
{
    if (s->p.fixed)
        return RBC_PHASE_FIXED;
    if (s->foreground)
        return RBC_PHASE_FOREGROUND;
    if (warming(s))
        return RBC_PHASE_WARMUP;
    return s->n.stable ? RBC_PHASE_STABLE : RBC_PHASE_PROBING;
}

static void settle(struct rbc__smart *s, uint32_t interval_ms)
{
    s->n.interval_ms = interval_ms;
    s->n.fallback_ms = interval_ms;
    s->n.stable = 1;
    s->n.successes = 0;
    s->n.failures = 0;
    s->n.stable_ms = 0;
}

static bool success(struct rbc__smart *s, uint32_t used_ms)
{
    bool changed = s->n.failures != 0;
    s->n.failures = 0;
    if (s->n.stable) {
        uint64_t t = (uint64_t)s->n.stable_ms + used_ms;
        s->n.stable_ms = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
        if (s->n.stable_ms < s->p.reprobe_ms || s->n.interval_ms + s->p.margin_ms >= s->cap_ms)
            return changed;
        /* Re-probe: the network may have become more generous. If the probe fails, the value
         * that held all this time is where it returns. */
        s->n.fallback_ms = s->n.interval_ms;
        s->n.interval_ms += s->p.margin_ms;
        s->n.stable = 0;
        s->n.successes = 0;
        s->n.stable_ms = 0;
        return true;
    }
    if (s->n.successes < COUNT_MAX)
        s->n.successes++;
    if (s->n.interval_ms >= s->cap_ms) {
        settle(s, below(s, s->cap_ms)); /* as Mars: the maximum held, keep a margin below it */
        return true;
    }
    if (s->n.successes < s->p.to_step)
        return changed;
    s->n.fallback_ms = below(s, s->n.interval_ms);
    uint64_t next = (uint64_t)s->n.interval_ms + s->p.step_ms;
    s->n.interval_ms = next > s->cap_ms ? s->cap_ms : (uint32_t)next;
    s->n.successes = 0;
    return true;
}

static bool failure(struct rbc__smart *s)
{
    if (s->n.failures < COUNT_MAX)
        s->n.failures++;
    if (s->n.failures < s->p.to_settle)
        return true;
    if (s->n.stable) {
        /* A value that held stopped holding: the network changed under the same label. */
        rbc__smart_forget(s);
        return true;
    }
    settle(s, s->n.fallback_ms);
    return true;
}

int rbc__smart_result(struct rbc__smart *s, bool ok, uint32_t used_ms)
{
    if (ok && s->conn_ok < UINT32_MAX)
        s->conn_ok++;
    /* Only a heartbeat that followed the learned interval says anything about it: not one in
     * warm-up or in the foreground at the minimum (unless that is the learned value). The
     * success that ends the warm-up already counts (Mars counts the third one); a failure counts
     * once the warm-up is over. */
    if (s->p.fixed || used_ms != s->n.interval_ms || s->conn_ok < s->p.warmup)
        return -1;
    if (!ok && s->n.interval_ms <= s->floor_ms)
        return -1; /* nothing below the minimum to fall back to */
    return (ok ? success(s, used_ms) : failure(s)) ? 1 : 0;
}

bool rbc__smart_bound(struct rbc__smart *s, uint32_t floor_ms, uint32_t cap_ms)
{
    floor_ms = clamp(floor_ms, s->p.min_ms, s->p.max_ms);
    cap_ms = clamp(cap_ms, floor_ms, s->p.max_ms);
    uint32_t was = s->n.interval_ms;
    s->floor_ms = floor_ms;
    s->cap_ms = cap_ms;
    s->n.interval_ms = clamp(s->n.interval_ms, floor_ms, cap_ms);
    s->n.fallback_ms = clamp(s->n.fallback_ms, floor_ms, s->n.interval_ms);
    return s->n.interval_ms != was;
}

bool rbc__smart_foreground(struct rbc__smart *s, bool fg)
{
    uint32_t was = rbc__smart_interval(s);
    s->foreground = fg;
    return rbc__smart_interval(s) != was;
}
