/* backoff.c — reconnect delays: exponential bounds with full jitter, from a per-handle PRNG. */
#include "backoff.h"

uint64_t rbc__rand64(uint64_t *state)
{
    /* splitmix64 (Vigna): tiny, seedable per handle, good enough to spread reconnects. */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void rbc__backoff_init(struct rbc__backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed)
{
    b->min_ms = min_ms;
    b->max_ms = max_ms < min_ms ? min_ms : max_ms;
    b->attempt = 0;
    b->rng = seed;
}

uint32_t rbc__backoff_bound(const struct rbc__backoff *b)
{
    uint64_t bound = b->min_ms;
    for (uint32_t i = 0; i < b->attempt && bound < b->max_ms; i++)
        bound *= 2;
    return bound > b->max_ms ? b->max_ms : (uint32_t)bound;
}

uint32_t rbc__backoff_next(struct rbc__backoff *b)
{
    uint32_t bound = rbc__backoff_bound(b);
    if (b->attempt < UINT32_MAX)
        b->attempt++;
    return (uint32_t)(rbc__rand64(&b->rng) % ((uint64_t)bound + 1));
}

void rbc__backoff_reset(struct rbc__backoff *b)
{
    b->attempt = 0;
}
