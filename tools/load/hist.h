/* hist.h — log-linear latency histogram (about 2 significant digits) for ringbeat-load. */
#ifndef RB_LOAD_HIST_H
#define RB_LOAD_HIST_H

#include <stdint.h>

/*
 * Values below 128 have a bucket each; above, every power of two is split into 64 linear
 * sub-buckets, so a recorded value is off by at most 1/64 (1.6%). Range: 0 .. 2^40 - 1
 * (12 days in microseconds); larger values land in the last bucket.
 */
#define LH_SUB_BITS 6
#define LH_SUB      (1u << LH_SUB_BITS)
#define LH_EXP_MAX  34
#define LH_BUCKETS  (2 * LH_SUB + LH_EXP_MAX * LH_SUB)

/*
 * One writer thread records; other threads may read a running histogram at any time with
 * lh_merge() (relaxed atomic accesses: each counter is exact, the set is not a snapshot).
 */
struct lhist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t bucket[LH_BUCKETS];
};

void lh_reset(struct lhist *h);
void lh_record(struct lhist *h, uint64_t value);
/* dst += src (src may be written concurrently by its owner). */
void lh_merge(struct lhist *dst, const struct lhist *src);
/* dst = a - b, for a window between two snapshots of the same cumulative histogram. */
void lh_diff(struct lhist *dst, const struct lhist *a, const struct lhist *b);
/* The value at percentile pct (0..100): the highest value equivalent to the bucket it falls in,
 * capped by the recorded max. 0 for an empty histogram. */
uint64_t lh_percentile(const struct lhist *h, double pct);
/* Bucket index of a value and the highest value in a bucket (exposed for tests). */
unsigned lh_index(uint64_t value);
uint64_t lh_bucket_high(unsigned index);

#endif
