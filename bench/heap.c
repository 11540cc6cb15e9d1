/* heap.c — binary min-heap of timers with in-array keys, for comparison with the timer wheel. */
#include "heap.h"

#include <errno.h>
#include <stdlib.h>

static inline bool key_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

static inline void put(struct rb__heap *h, uint32_t i, struct rb__heap_entry ent)
{
    h->e[i] = ent;
    ent.t->index = i;
}

static void sift_up(struct rb__heap *h, uint32_t i, struct rb__heap_entry ent)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!key_before(ent.expires, h->e[parent].expires))
            break;
        put(h, i, h->e[parent]);
        i = parent;
    }
    put(h, i, ent);
}

static void sift_down(struct rb__heap *h, uint32_t i, struct rb__heap_entry ent)
{
    uint32_t len = h->len;
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= len)
            break;
        if (child + 1 < len && key_before(h->e[child + 1].expires, h->e[child].expires))
            child++;
        if (!key_before(h->e[child].expires, ent.expires))
            break;
        put(h, i, h->e[child]);
        i = child;
    }
    put(h, i, ent);
}

/* Puts ent at position i, moving it up or down as its key demands. */
static void settle(struct rb__heap *h, uint32_t i, struct rb__heap_entry ent)
{
    if (i > 0 && key_before(ent.expires, h->e[(i - 1) / 2].expires))
        sift_up(h, i, ent);
    else
        sift_down(h, i, ent);
}

int rb__heap_init(struct rb__heap *h, uint32_t cap_timers)
{
    h->len = 0;
    h->cap = cap_timers ? cap_timers : 16;
    h->e = malloc((size_t)h->cap * sizeof(*h->e));
    return h->e ? 0 : -ENOMEM;
}

void rb__heap_free(struct rb__heap *h)
{
    free(h->e);
    h->e = NULL;
    h->len = h->cap = 0;
}

int rb__heap_add(struct rb__heap *h, struct rb__heap_timer *t, uint32_t expires)
{
    struct rb__heap_entry ent = {.expires = expires, .t = t};
    t->expires = expires;
    if (t->index != RB__HEAP_NONE) {
        settle(h, t->index, ent);
        return 0;
    }
    if (h->len == h->cap) {
        if (h->cap > UINT32_MAX / 2)
            return -ENOMEM;
        struct rb__heap_entry *grown = realloc(h->e, (size_t)h->cap * 2 * sizeof(*h->e));
        if (!grown)
            return -ENOMEM;
        h->e = grown;
        h->cap *= 2;
    }
    sift_up(h, h->len++, ent);
    return 0;
}

void rb__heap_del(struct rb__heap *h, struct rb__heap_timer *t)
{
    uint32_t i = t->index;
    if (i == RB__HEAP_NONE)
        return;
    t->index = RB__HEAP_NONE;
    struct rb__heap_entry last = h->e[--h->len];
    if (i < h->len)
        settle(h, i, last);
}

struct rb__heap_timer *rb__heap_pop_expired(struct rb__heap *h, uint32_t now)
{
    if (h->len == 0 || key_before(now, h->e[0].expires))
        return NULL;
    struct rb__heap_timer *t = h->e[0].t;
    t->index = RB__HEAP_NONE;
    struct rb__heap_entry last = h->e[--h->len];
    if (h->len > 0)
        sift_down(h, 0, last);
    return t;
}
