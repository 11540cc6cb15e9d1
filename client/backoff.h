/* backoff.h — reconnect delays: exponential bounds with full jitter, from a per-handle PRNG. */
#ifndef RBC_BACKOFF_H
#define RBC_BACKOFF_H

#include <stdint.h>

/*
 * Attempt n (0 first) waits a uniform random time in [0, min(max_ms, min_ms * 2^n)] ("full
 * jitter"): a server restart under many clients comes back as a spread, not as one wave, and the
 * spread widens while the server stays away.
 */
struct rbc__backoff {
    uint32_t min_ms, max_ms;
    uint32_t attempt; /* failed attempts since the last success */
    uint64_t rng;     /* splitmix64 state */
};

void rbc__backoff_init(struct rbc__backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed);
/* The bound of the next delay, before jitter. */
uint32_t rbc__backoff_bound(const struct rbc__backoff *b);
/* The next delay (and one more attempt counted). */
uint32_t rbc__backoff_next(struct rbc__backoff *b);
/* A connection opened: the next failure starts from min_ms again. */
void rbc__backoff_reset(struct rbc__backoff *b);
uint64_t rbc__rand64(uint64_t *state);

#endif
