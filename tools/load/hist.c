/* hist.c — log-linear latency histogram for ringbeat-load (single writer, relaxed readers). */
#include "hist.h"

#include <string.h>

#define LD(p)    __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

unsigned lh_index(uint64_t v)
{
    if (v < 2 * LH_SUB)
        return (unsigned)v;
    /* e >= 1: v >> e lies in [LH_SUB, 2 * LH_SUB). */
    unsigned e = (unsigned)(63 - __builtin_clzll(v)) - LH_SUB_BITS;
    if (e > LH_EXP_MAX)
        return LH_BUCKETS - 1;
    return 2 * LH_SUB + (e - 1) * LH_SUB + (unsigned)((v >> e) - LH_SUB);
}

uint64_t lh_bucket_high(unsigned i)
{
    if (i < 2 * LH_SUB)
        return i;
    unsigned e = (i - 2 * LH_SUB) / LH_SUB + 1;
    uint64_t sub = (i - 2 * LH_SUB) % LH_SUB + LH_SUB;
    return ((sub + 1) << e) - 1;
}

void lh_reset(struct lhist *h)
{
    memset(h, 0, sizeof(*h));
}

void lh_record(struct lhist *h, uint64_t v)
{
    unsigned i = lh_index(v);
    /* Only the owner writes, so load+store is exact; the stores are atomic for readers. */
    ST(&h->bucket[i], h->bucket[i] + 1);
    ST(&h->count, h->count + 1);
    ST(&h->sum, h->sum + v);
    if (v > h->max)
        ST(&h->max, v);
}

void lh_merge(struct lhist *dst, const struct lhist *src)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < LH_BUCKETS; i++) {
        uint64_t b = LD(&src->bucket[i]);
        dst->bucket[i] += b;
        n += b;
    }
    /* Count from the buckets read, so percentiles of a running histogram stay consistent. */
    dst->count += n;
    dst->sum += LD(&src->sum);
    uint64_t m = LD(&src->max);
    if (m > dst->max)
        dst->max = m;
}

void lh_diff(struct lhist *dst, const struct lhist *a, const struct lhist *b)
{
    dst->count = 0;
    dst->max = 0;
    for (unsigned i = 0; i < LH_BUCKETS; i++) {
        uint64_t d = a->bucket[i] >= b->bucket[i] ? a->bucket[i] - b->bucket[i] : 0;
        dst->bucket[i] = d;
        dst->count += d;
        if (d)
            dst->max = lh_bucket_high(i);
    }
    dst->sum = a->sum >= b->sum ? a->sum - b->sum : 0;
    if (dst->max > a->max)
        dst->max = a->max;
}

uint64_t lh_percentile(const struct lhist *h, double pct)
{
    if (h->count == 0)
        return 0;
    if (pct >= 100.0)
        return h->max;
    uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LH_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            uint64_t v = lh_bucket_high(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}
