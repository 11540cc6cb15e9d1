/* slab.c — fixed-size objects: chunks from a private jemalloc arena, intrusive free list. */
#include "slab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef RB_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* Objects that are whole cache lines must not straddle two: chunks start on a line boundary. */
#define RB__SLAB_ALIGN 64
#define RB__SLAB_GRAIN 16

#if defined(__SANITIZE_ADDRESS__)
#define RB__SLAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RB__SLAB_ASAN 1
#endif
#endif

#ifdef RB__SLAB_ASAN
#include <sanitizer/asan_interface.h>
/* Free and not-yet-carved objects are poisoned so that a use after rb__slab_free() is reported
 * by ASan even though the memory never goes back to the system allocator. */
#define RB__POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define RB__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define RB__POISON(p, n)   ((void)(p), (void)(n))
#define RB__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static void *chunk_alloc(struct rb__slab *s, size_t bytes)
{
#ifdef RB_HAVE_JEMALLOC
    /* No tcache: chunks are large and long-lived; caching them per thread would only hide them. */
    int flags = MALLOCX_TCACHE_NONE | MALLOCX_ALIGN(RB__SLAB_ALIGN);
    if (s->arena != 0)
        flags |= MALLOCX_ARENA(s->arena);
    return mallocx(bytes, flags);
#else
    (void)s;
    return aligned_alloc(RB__SLAB_ALIGN, bytes);
#endif
}

static void chunk_free(void *p)
{
#ifdef RB_HAVE_JEMALLOC
    dallocx(p, MALLOCX_TCACHE_NONE);
#else
    free(p);
#endif
}

static unsigned arena_create(void)
{
#ifdef RB_HAVE_JEMALLOC
    unsigned arena = 0;
    size_t sz = sizeof(arena);
    /* Failure is not fatal: chunks then come from the default arenas. */
    if (mallctl("arenas.create", &arena, &sz, NULL, 0) != 0)
        return 0;
    return arena;
#else
    return 0;
#endif
}

static void arena_destroy(unsigned arena)
{
#ifdef RB_HAVE_JEMALLOC
    char name[64];
    if (arena == 0)
        return;
    /* Returns the arena's pages and index; every chunk of it has been freed by now. */
    snprintf(name, sizeof(name), "arena.%u.destroy", arena);
    (void)mallctl(name, NULL, NULL, NULL, 0);
#else
    (void)arena;
#endif
}

int rb__slab_init(struct rb__slab *s, size_t obj_size, size_t objs_per_chunk, size_t max_objs)
{
    if (s == NULL || obj_size < sizeof(void *) || objs_per_chunk == 0)
        return -EINVAL;
    if (obj_size > SIZE_MAX - RB__SLAB_GRAIN)
        return -EINVAL;
    size_t rounded = (obj_size + RB__SLAB_GRAIN - 1) & ~(size_t)(RB__SLAB_GRAIN - 1);
    /* The chunk size (rounded to the alignment, as aligned_alloc requires) must not overflow. */
    if (objs_per_chunk > (SIZE_MAX - RB__SLAB_ALIGN) / rounded)
        return -EINVAL;

    memset(s, 0, sizeof(*s));
    s->obj_size = rounded;
    s->objs_per_chunk = objs_per_chunk;
    s->max_objs = max_objs;
    s->arena = arena_create();
    return 0;
}

static size_t chunk_bytes(size_t nobjs, size_t obj_size)
{
    return (nobjs * obj_size + RB__SLAB_ALIGN - 1) & ~(size_t)(RB__SLAB_ALIGN - 1);
}

static int slab_grow(struct rb__slab *s)
{
    size_t n = s->objs_per_chunk;
    if (s->max_objs != 0) {
        if (s->capacity >= s->max_objs)
            return -ENOSPC;
        if (n > s->max_objs - s->capacity)
            n = s->max_objs - s->capacity;
    }
    if (s->nchunks == s->chunks_cap) {
        size_t cap = s->chunks_cap ? s->chunks_cap * 2 : 16;
        void **chunks = realloc(s->chunks, cap * sizeof(*chunks));
        if (chunks == NULL)
            return -ENOMEM;
        s->chunks = chunks;
        s->chunks_cap = cap;
    }
    size_t bytes = chunk_bytes(n, s->obj_size);
    uint8_t *chunk = chunk_alloc(s, bytes);
    if (chunk == NULL)
        return -ENOMEM;
    RB__POISON(chunk, bytes);
    s->chunks[s->nchunks++] = chunk;
    s->capacity += n;
    s->bump = chunk;
    s->bump_left = n;
    return 0;
}

void *rb__slab_alloc(struct rb__slab *s)
{
    if (s->max_objs != 0 && s->live >= s->max_objs)
        return NULL;

    void *obj = s->free_list;
    if (obj != NULL) {
        RB__UNPOISON(obj, s->obj_size);
        s->free_list = *(void **)obj;
    } else {
        if (s->bump_left == 0 && slab_grow(s) != 0)
            return NULL;
        obj = s->bump;
        RB__UNPOISON(obj, s->obj_size);
        s->bump += s->obj_size;
        s->bump_left--;
    }
    s->live++;
    return obj;
}

void rb__slab_free(struct rb__slab *s, void *obj)
{
    if (obj == NULL)
        return;
    *(void **)obj = s->free_list;
    s->free_list = obj;
    s->live--;
    /* The link stays readable; the rest of the object is off limits until it is handed out again.
     */
    RB__POISON((uint8_t *)obj + sizeof(void *), s->obj_size - sizeof(void *));
}

void rb__slab_destroy(struct rb__slab *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nchunks; i++) {
        /* Only the last chunk can be short (it was cut to fit max_objs). */
        size_t n = s->objs_per_chunk;
        if (i + 1 == s->nchunks)
            n = s->capacity - i * s->objs_per_chunk;
        /* The chunk goes back to an allocator that may reuse it for unpoisoned data. */
        RB__UNPOISON(s->chunks[i], chunk_bytes(n, s->obj_size));
        chunk_free(s->chunks[i]);
    }
    free(s->chunks);
    arena_destroy(s->arena);
    memset(s, 0, sizeof(*s));
}

size_t rb__slab_bytes(const struct rb__slab *s)
{
    return s->capacity * s->obj_size;
}
