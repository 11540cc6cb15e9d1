/* stats.c — per-worker counters and histograms, summed for readers on other threads. */
#include <stddef.h>

#include "internal.h"

void rb__hist_add(struct rb_hist *h, const uint32_t *bounds, uint64_t value)
{
    /* A linear search: common values sit in the first few buckets, where it stops at once. */
    unsigned i = 0;
    while (i < RB_HIST_BUCKETS - 1 && value > bounds[i])
        i++;
    __atomic_store_n(&h->bucket[i], h->bucket[i] + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum, h->sum + value, __ATOMIC_RELAXED);
}

/* Every field before `workers` is a uint64_t counter written by one thread: sum them as words. */
_Static_assert(offsetof(struct rb_stats, workers) % sizeof(uint64_t) == 0, "counters are words");

void rb__stats_add(struct rb_stats *sum, const struct rb_stats *w)
{
    const uint64_t *src = (const uint64_t *)w;
    uint64_t *dst = (uint64_t *)sum;
    for (size_t i = 0; i < offsetof(struct rb_stats, workers) / sizeof(uint64_t); i++)
        dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    sum->workers += __atomic_load_n(&w->workers, __ATOMIC_RELAXED);
    sum->rings += __atomic_load_n(&w->rings, __ATOMIC_RELAXED);
}
