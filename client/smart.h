/* smart.h — the smart heartbeat: learns a network's NAT idle timeout from heartbeat results. */
#ifndef RBC_SMART_H
#define RBC_SMART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ringbeat_client.h"

/* The record a network's learned state persists as (docs/client.md, "Persistence"). */
#define RBC__SMART_REC_LEN 16
#define RBC__SMART_REC_VER 1

/* Resolved parameters: every field set (rbc__smart_params fills the Mars defaults). */
struct rbc__smart_params {
    uint32_t min_ms, max_ms, step_ms, margin_ms;
    uint32_t warmup, to_step, to_settle;
    uint32_t reprobe_ms;
    bool fixed;
};

/* What is learned per network, and persisted. */
struct rbc__smart_net {
    uint32_t interval_ms; /* the value being probed, or the stable value */
    uint32_t fallback_ms; /* where a failing probe settles: a margin below the last success */
    uint32_t stable_ms;   /* heartbeat time proven at the stable value, towards a re-probe */
    uint8_t stable;
    uint8_t successes; /* at interval_ms, towards the next step */
    uint8_t failures;  /* at interval_ms, towards the end of the probe */
};

/*
 * Nothing here does I/O or reads a clock: the connection reports each heartbeat's result with
 * the interval it actually followed, so the algorithm is tested on a fake clock
 * (tests/test_client_smart.c) and fuzzed (tests/fuzz/fuzz_client.c).
 */
struct rbc__smart {
    struct rbc__smart_params p;
    struct rbc__smart_net n;
    uint32_t floor_ms, cap_ms; /* [min, max] narrowed by what the server allows */
    uint32_t conn_ok;          /* successes on this connection (the warm-up) */
    bool foreground;
};

/* Fills p from cfg, defaults for zero fields; -EINVAL for values that cannot work together. */
int rbc__smart_params(const struct rbc_smart_config *cfg, struct rbc__smart_params *p);
void rbc__smart_init(struct rbc__smart *s, const struct rbc__smart_params *p);
/* A network never seen: start the search at the minimum. */
void rbc__smart_forget(struct rbc__smart *s);
/* Restores a persisted record (clamped into the current parameters): -EINVAL when it is not one,
 * and the state is then left fresh. */
int rbc__smart_load(struct rbc__smart *s, const uint8_t *rec, size_t len);
size_t rbc__smart_save(const struct rbc__smart *s, uint8_t rec[RBC__SMART_REC_LEN]);

/* A new connection opened: its first `warmup` heartbeats use the minimum. */
void rbc__smart_connected(struct rbc__smart *s);
/* The interval the next heartbeat should follow. */
uint32_t rbc__smart_interval(const struct rbc__smart *s);
enum rbc_phase rbc__smart_phase(const struct rbc__smart *s);
/*
 * One heartbeat's result: ok, or failed (no answer in time, or the connection found dead while
 * waiting for one), after an idle interval of used_ms. Only results at the learned interval
 * teach anything. Returns -1 when the result did not count, 0 when it counted, 1 when it also
 * changed the learned state in a way worth storing.
 */
int rbc__smart_result(struct rbc__smart *s, bool ok, uint32_t used_ms);
/* The server's limits (from a WELCOME): the interval stays within [floor_ms, cap_ms] of them.
 * Returns true when that moved the learned interval. */
bool rbc__smart_bound(struct rbc__smart *s, uint32_t floor_ms, uint32_t cap_ms);
/* Foreground pins the minimum; true when the interval heartbeats use changed. */
bool rbc__smart_foreground(struct rbc__smart *s, bool fg);

#endif
