/* heap.h — binary min-heap of timers: the baseline the timer wheel is benchmarked against. */
#ifndef RB_BENCH_HEAP_H
#define RB_BENCH_HEAP_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Intrusive like the wheel: the timer records its array index so cancel is O(log n). Keys sit
 * in the array next to the pointer, so sifting compares without touching the timers; only the
 * index write-back touches them. Deadlines are uint32 ticks compared by signed difference.
 */
#define RB__HEAP_NONE UINT32_MAX

struct rb__heap_timer {
    uint32_t expires; /* tick */
    uint32_t index;   /* position in the heap array, RB__HEAP_NONE while not pending */
};

struct rb__heap_entry {
    uint32_t expires;
    struct rb__heap_timer *t;
};

struct rb__heap {
    struct rb__heap_entry *e;
    uint32_t len;
    uint32_t cap;
};

/* Reserves room for cap_timers (it grows on demand); 0 or -ENOMEM. */
int rb__heap_init(struct rb__heap *h, uint32_t cap_timers);
void rb__heap_free(struct rb__heap *h);
static inline void rb__heap_timer_init(struct rb__heap_timer *t)
{
    t->expires = 0;
    t->index = RB__HEAP_NONE;
}
static inline bool rb__heap_timer_pending(const struct rb__heap_timer *t)
{
    return t->index != RB__HEAP_NONE;
}
/* Arms t for `expires`; a pending t has its key changed in place. 0, or -ENOMEM if growing fails.
 */
int rb__heap_add(struct rb__heap *h, struct rb__heap_timer *t, uint32_t expires);
/* Disarms t; harmless when t is not pending. */
void rb__heap_del(struct rb__heap *h, struct rb__heap_timer *t);
/* Removes and returns the earliest timer if its deadline is not after `now`, else NULL. */
struct rb__heap_timer *rb__heap_pop_expired(struct rb__heap *h, uint32_t now);

#ifdef __cplusplus
}
#endif

#endif
