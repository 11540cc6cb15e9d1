/* wheel.h — hierarchical timer wheel with intrusive timers: O(1) add/cancel, exact to one tick. */
#ifndef RB_WHEEL_H
#define RB_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Time is counted in ticks (uint32_t, wraps; compared by signed difference as nginx does, so a
 * deadline may lie at most 2^31 - 1 ticks ahead, and rb__wheel_update() must be called at least
 * once every 2^31 - 1 ticks). A timer lives inside the caller's struct: adding one allocates
 * nothing. The wheel holds pointers into itself: do not move it after rb__wheel_init().
 *
 * Layout: level 0 holds RB__WHEEL_L0_SLOTS slots of one tick; each higher level has
 * RB__WHEEL_SLOTS slots, each covering RB__WHEEL_SLOTS times the span of the one below
 * (tick bits 0-7, 8-13, 14-19, 20-25, 26-31). A timer goes to the level of the highest bit in
 * which its deadline differs from `now`, in the slot given by the deadline's bits at that level;
 * so a level-k slot only ever holds deadlines inside one span of 2^shift(k) ticks, and the slot
 * comes due exactly when `now` reaches the start of that span. Then its timers are relinked
 * relative to the new `now`, which puts each on a strictly lower level (or on the expired list
 * if the deadline is that very tick).
 *
 * Precision: exact. A timer with deadline d is handed out by rb__wheel_get() after the first
 * rb__wheel_update(w, now) with now >= d, never earlier; order within one tick is unspecified.
 *
 * Complexity: add, del, get O(1), allocation-free (del scans the slot's lane heads when it
 * empties a lane). A timer is relinked at most once per level
 * (at most RB__WHEEL_LEVELS - 1 = 4 times, typically 2 for a deadline 30 000 ticks ahead).
 * Per-level occupancy bitmaps find the next non-empty slot with a few ctz over 8 words, so
 * rb__wheel_next is O(1) and rb__wheel_update costs O(slots that come due + timers relinked or
 * expired), independent of how many ticks it skips.
 */
#define RB__WHEEL_L0_BITS  8
#define RB__WHEEL_L0_SLOTS (1u << RB__WHEEL_L0_BITS)
#define RB__WHEEL_BITS     6
#define RB__WHEEL_SLOTS    (1u << RB__WHEEL_BITS)
#define RB__WHEEL_LEVELS   5 /* 8 + 4 * 6 = 32 bits: every deadline fits */
/* All slots in one array: level 0 first, then each higher level; one bitmap bit per slot. */
#define RB__WHEEL_NSLOTS (RB__WHEEL_L0_SLOTS + (RB__WHEEL_LEVELS - 1) * RB__WHEEL_SLOTS)
/*
 * Each slot is RB__WHEEL_LANES independent lists, filled in turn. Walking a slot (to cascade or
 * expire it) then follows that many pointer chains side by side, so their cache misses overlap
 * instead of queueing one behind the other: at 1M timers a miss costs ~280 ns on the test VM,
 * and expiry fell from ~710 ns per timer (1 lane) to ~100 (8) and ~60 (16). The wheel is then
 * 64 KiB.
 */
#define RB__WHEEL_LANES 16

struct rb__timer {
    struct rb__timer *next;
    struct rb__timer **pprev; /* NULL while not pending */
    uint32_t expires;         /* tick */
};

struct rb__wheel {
    uint32_t now;              /* ticks processed so far */
    uint32_t lane;             /* lane the next linked timer goes to */
    uint64_t pending;          /* timers in the wheel or on the expired list */
    uint64_t relinked;         /* timers moved down a level so far (statistics, benchmarks) */
    struct rb__timer *expired; /* due timers, handed out by rb__wheel_get() */
    struct rb__timer **expired_tail;
    uint64_t occupied[RB__WHEEL_NSLOTS / 64]; /* bit i set iff a lane of slot[i] is non-empty */
    struct rb__timer *slot[RB__WHEEL_NSLOTS][RB__WHEEL_LANES];
};

static inline bool rb__tick_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

void rb__wheel_init(struct rb__wheel *w, uint32_t now);
static inline void rb__timer_init(struct rb__timer *t)
{
    t->next = 0;
    t->pprev = 0;
    t->expires = 0;
}
static inline bool rb__timer_pending(const struct rb__timer *t)
{
    return t->pprev != 0;
}
/* Arms (or re-arms) t for tick `expires`; a deadline not after w->now goes to the expired list. */
void rb__wheel_add(struct rb__wheel *w, struct rb__timer *t, uint32_t expires);
/* Disarms t; harmless when t is not pending. */
void rb__wheel_del(struct rb__wheel *w, struct rb__timer *t);
/*
 * Advances to `now`, moving every timer whose deadline is <= now onto the expired list. A `now`
 * not after w->now (by signed difference) changes nothing.
 */
void rb__wheel_update(struct rb__wheel *w, uint32_t now);
/* Pops one expired timer (no longer pending), or NULL. */
struct rb__timer *rb__wheel_get(struct rb__wheel *w);
/*
 * Ticks from w->now until the wheel next needs rb__wheel_update() (a deadline or a level's slot
 * that must move down); 0 if timers are already expired, UINT32_MAX if the wheel is empty. Never
 * more than the ticks to the earliest deadline; an update to any earlier tick does no work.
 */
uint32_t rb__wheel_next(const struct rb__wheel *w);
/* Verifies every invariant (links, bitmaps, slot placement, counts); 0 or -EFAULT. For tests. */
int rb__wheel_check(const struct rb__wheel *w);

#endif
