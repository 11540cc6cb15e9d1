/* wheel.c — hierarchical timer wheel: exact expiry, each timer relinked at most once per level. */
#include "wheel.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define L0_BITS    RB__WHEEL_L0_BITS
#define L0_SLOTS   RB__WHEEL_L0_SLOTS
#define LN_BITS    RB__WHEEL_BITS
#define LN_SLOTS   RB__WHEEL_SLOTS
#define TOP        (RB__WHEEL_LEVELS - 1)
#define WORD_BITS  64u
#define L0_WORDS   (L0_SLOTS / WORD_BITS)
#define TOP_SHIFT  (L0_BITS + (TOP - 1) * LN_BITS)
#define LEVEL_MASK (LN_SLOTS - 1)
#define LANES      RB__WHEEL_LANES

_Static_assert(L0_BITS + TOP * LN_BITS == 32, "the levels must cover a 32-bit tick exactly");
_Static_assert(LN_SLOTS == WORD_BITS, "one bitmap word per higher level");
_Static_assert(L0_SLOTS % WORD_BITS == 0, "level 0 fills whole bitmap words");
_Static_assert((LANES & (LANES - 1)) == 0, "lanes are picked with a mask");

/* Tick bit where level `lvl` (>= 1) starts. */
static inline unsigned level_shift(unsigned lvl)
{
    return L0_BITS + (lvl - 1) * LN_BITS;
}

/* Index in w->slot of the first slot of level `lvl` (>= 1). */
static inline unsigned level_base(unsigned lvl)
{
    return L0_SLOTS + (lvl - 1) * LN_SLOTS;
}

/*
 * Slot for a deadline strictly after `now`: the level of the highest bit in which they differ.
 * Below the top level this slot is always ahead of now's own slot on that level, so no level
 * but the top one ever wraps around, and the top one spans exactly the 2^32 tick ring.
 */
static inline unsigned slot_for(uint32_t now, uint32_t expires)
{
    uint32_t diff = now ^ expires;
    if (diff < L0_SLOTS)
        return expires & (L0_SLOTS - 1);
    unsigned bit = 31u - (unsigned)__builtin_clz(diff);
    unsigned lvl = (bit - L0_BITS) / LN_BITS + 1;
    return level_base(lvl) + ((expires >> level_shift(lvl)) & LEVEL_MASK);
}

static inline void set_bit(struct rb__wheel *w, unsigned idx)
{
    w->occupied[idx / WORD_BITS] |= UINT64_C(1) << (idx % WORD_BITS);
}

static inline void clear_bit(struct rb__wheel *w, unsigned idx)
{
    w->occupied[idx / WORD_BITS] &= ~(UINT64_C(1) << (idx % WORD_BITS));
}

static inline void append_expired(struct rb__wheel *w, struct rb__timer *t)
{
    t->next = NULL;
    t->pprev = w->expired_tail;
    *w->expired_tail = t;
    w->expired_tail = &t->next;
}

/* Links an unlinked timer whose t->expires is set, relative to w->now. */
static inline void place(struct rb__wheel *w, struct rb__timer *t)
{
    uint32_t expires = t->expires;
    if (!rb__tick_before(w->now, expires)) {
        append_expired(w, t);
        return;
    }
    unsigned idx = slot_for(w->now, expires);
    struct rb__timer **head = &w->slot[idx][w->lane++ & (LANES - 1)];
    struct rb__timer *first = *head;
    t->next = first;
    if (first)
        first->pprev = &t->next;
    *head = t;
    t->pprev = head;
    set_bit(w, idx);
}

static inline bool slot_empty(const struct rb__wheel *w, unsigned idx)
{
    for (unsigned k = 0; k < LANES; k++)
        if (w->slot[idx][k])
            return false;
    return true;
}

/* Empties slot idx into lanes[], clearing its bit. */
static inline void take_slot(struct rb__wheel *w, unsigned idx, struct rb__timer **lanes)
{
    for (unsigned k = 0; k < LANES; k++) {
        lanes[k] = w->slot[idx][k];
        w->slot[idx][k] = NULL;
    }
    clear_bit(w, idx);
}

/*
 * Relinks every timer of a higher-level slot that just came due. The lanes are walked in
 * turn, prefetching each lane's next timer, so up to LANES cache misses are in flight.
 */
static void cascade(struct rb__wheel *w, struct rb__timer **lanes)
{
    for (bool more = true; more;) {
        more = false;
        for (unsigned k = 0; k < LANES; k++) {
            struct rb__timer *t = lanes[k];
            if (!t)
                continue;
            struct rb__timer *next = t->next;
            if (next) {
                __builtin_prefetch(next, 1);
                more = true;
            }
            lanes[k] = next;
            place(w, t);
            w->relinked++;
        }
    }
}

/*
 * Moves a level-0 slot, whose timers all have this very deadline, onto the expired list: the
 * lanes are chained together, which needs their tails, found by walking them side by side.
 */
static void expire(struct rb__wheel *w, struct rb__timer **lanes)
{
    struct rb__timer *tail[LANES];
    for (unsigned k = 0; k < LANES; k++)
        tail[k] = lanes[k];
    for (bool more = true; more;) {
        more = false;
        for (unsigned k = 0; k < LANES; k++) {
            struct rb__timer *next = tail[k] ? tail[k]->next : NULL;
            if (next) {
                __builtin_prefetch(next, 1);
                tail[k] = next;
                more = true;
            }
        }
    }
    for (unsigned k = 0; k < LANES; k++) {
        if (!lanes[k])
            continue;
        lanes[k]->pprev = w->expired_tail;
        *w->expired_tail = lanes[k];
        w->expired_tail = &tail[k]->next;
    }
}

/*
 * Finds the slot that comes due first and the ticks until it does. Every occupied slot below
 * the top level lies ahead of now on its level, and all of a level's slots come due before any
 * slot of the level above, so the lowest occupied bit of the lowest non-empty level wins.
 */
static bool next_due(const struct rb__wheel *w, unsigned *idx, uint32_t *ticks)
{
    const uint32_t now = w->now;
    for (unsigned i = 0; i < L0_WORDS; i++) {
        uint64_t bits = w->occupied[i];
        if (bits) {
            unsigned s = i * WORD_BITS + (unsigned)__builtin_ctzll(bits);
            *idx = s;
            *ticks = s - (now & (L0_SLOTS - 1));
            return true;
        }
    }
    for (unsigned lvl = 1; lvl < TOP; lvl++) {
        uint64_t bits = w->occupied[L0_WORDS + lvl - 1];
        if (bits) {
            unsigned s = (unsigned)__builtin_ctzll(bits);
            unsigned shift = level_shift(lvl);
            uint32_t span_mask = (UINT32_C(1) << (shift + LN_BITS)) - 1;
            uint32_t start = (now & ~span_mask) | ((uint32_t)s << shift);
            *idx = level_base(lvl) + s;
            *ticks = start - now;
            return true;
        }
    }
    uint64_t bits = w->occupied[L0_WORDS + TOP - 1];
    if (bits) {
        /* The top level is a ring: search from the slot after now's, wrapping around. */
        unsigned from = ((now >> TOP_SHIFT) + 1) & LEVEL_MASK;
        uint64_t rot = (bits >> from) | (bits << ((WORD_BITS - from) % WORD_BITS));
        unsigned s = ((unsigned)__builtin_ctzll(rot) + from) & LEVEL_MASK;
        *idx = level_base(TOP) + s;
        *ticks = ((uint32_t)s << TOP_SHIFT) - now;
        return true;
    }
    return false;
}

void rb__wheel_init(struct rb__wheel *w, uint32_t now)
{
    memset(w, 0, sizeof(*w));
    w->now = now;
    w->expired_tail = &w->expired;
}

void rb__wheel_del(struct rb__wheel *w, struct rb__timer *t)
{
    struct rb__timer **pprev = t->pprev;
    if (!pprev)
        return;
    struct rb__timer *next = t->next;
    *pprev = next;
    if (next) {
        next->pprev = pprev;
    } else {
        /* t was last of its list: its slot may now be empty, or the expired tail moves back. */
        uintptr_t off = (uintptr_t)pprev - (uintptr_t)w->slot;
        if (off < sizeof(w->slot)) {
            unsigned idx = (unsigned)(off / sizeof(w->slot[0]));
            if (slot_empty(w, idx))
                clear_bit(w, idx);
        } else if (w->expired_tail == &t->next) {
            w->expired_tail = pprev;
        }
    }
    t->next = NULL;
    t->pprev = NULL;
    w->pending--;
}

void rb__wheel_add(struct rb__wheel *w, struct rb__timer *t, uint32_t expires)
{
    if (t->pprev) {
        /*
         * A heartbeat re-arm often lands in the slot the timer already sits in (a higher-level
         * slot spans many ticks): then only the deadline changes and no neighbour is touched.
         */
        uint32_t old = t->expires;
        if (rb__tick_before(w->now, old) && rb__tick_before(w->now, expires) &&
            slot_for(w->now, old) == slot_for(w->now, expires)) {
            t->expires = expires;
            return;
        }
        rb__wheel_del(w, t);
    }
    t->expires = expires;
    place(w, t);
    w->pending++;
}

void rb__wheel_update(struct rb__wheel *w, uint32_t now)
{
    uint32_t left = now - w->now;
    if ((int32_t)left <= 0)
        return;
    for (;;) {
        unsigned idx;
        uint32_t ticks;
        if (!next_due(w, &idx, &ticks) || ticks > left) {
            w->now = now;
            return;
        }
        w->now += ticks;
        left -= ticks;
        struct rb__timer *lanes[LANES];
        take_slot(w, idx, lanes);
        if (idx < L0_SLOTS)
            expire(w, lanes);
        else
            cascade(w, lanes);
    }
}

struct rb__timer *rb__wheel_get(struct rb__wheel *w)
{
    struct rb__timer *t = w->expired;
    if (!t)
        return NULL;
    struct rb__timer *next = t->next;
    w->expired = next;
    if (next)
        next->pprev = &w->expired;
    else
        w->expired_tail = &w->expired;
    t->next = NULL;
    t->pprev = NULL;
    w->pending--;
    return t;
}

uint32_t rb__wheel_next(const struct rb__wheel *w)
{
    if (w->expired)
        return 0;
    unsigned idx;
    uint32_t ticks;
    if (!next_due(w, &idx, &ticks))
        return UINT32_MAX;
    return ticks;
}

int rb__wheel_check(const struct rb__wheel *w)
{
    uint64_t seen = 0;
    for (unsigned idx = 0; idx < RB__WHEEL_NSLOTS; idx++) {
        bool bit = (w->occupied[idx / WORD_BITS] >> (idx % WORD_BITS)) & 1;
        if (bit == slot_empty(w, idx))
            return -EFAULT;
        for (unsigned k = 0; k < LANES; k++) {
            struct rb__timer *const *expect = &w->slot[idx][k];
            for (const struct rb__timer *t = *expect; t; t = t->next) {
                if (t->pprev != expect || ++seen > w->pending)
                    return -EFAULT;
                if (!rb__tick_before(w->now, t->expires) || slot_for(w->now, t->expires) != idx)
                    return -EFAULT;
                expect = &t->next;
            }
        }
    }
    struct rb__timer *const *expect = &w->expired;
    for (const struct rb__timer *t = w->expired; t; t = t->next) {
        if (t->pprev != expect || ++seen > w->pending)
            return -EFAULT;
        expect = &t->next;
    }
    if (w->expired_tail != expect || seen != w->pending)
        return -EFAULT;
    return 0;
}
