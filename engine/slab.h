/* slab.h — fixed-size object allocator: objects carved from large jemalloc chunks, a free list. */
#ifndef RB_SLAB_H
#define RB_SLAB_H

#include <stddef.h>
#include <stdint.h>

/*
 * One slab per worker thread (no locks). Chunks come from a jemalloc arena of the slab's own
 * (its pages are not shared with general allocations) and are kept until rb__slab_destroy(), so
 * steady-state alloc/free is a free-list pop/push with no system call.
 */
struct rb__slab {
    size_t obj_size; /* rounded up to a multiple of 16 */
    size_t objs_per_chunk;
    size_t max_objs; /* 0: unlimited */
    size_t live;     /* objects handed out now */
    size_t capacity; /* objects carved so far */
    void *free_list;
    void **chunks;
    size_t nchunks, chunks_cap;
    unsigned arena; /* jemalloc arena index, 0 if none could be created */
    /* Objects of the newest chunk not handed out yet: carved on demand so that a chunk's pages
     * are touched only when used (RSS grows with live connections, not with reservations). */
    uint8_t *bump;
    size_t bump_left;
};

/* obj_size >= sizeof(void *); objs_per_chunk > 0. -EINVAL or -ENOMEM. */
int rb__slab_init(struct rb__slab *s, size_t obj_size, size_t objs_per_chunk, size_t max_objs);
/* NULL when max_objs is reached or memory is exhausted. Memory is not zeroed. */
void *rb__slab_alloc(struct rb__slab *s);
void rb__slab_free(struct rb__slab *s, void *obj);
void rb__slab_destroy(struct rb__slab *s);
/* Bytes of chunk memory held (capacity * obj_size). capacity counts every object of every chunk
 * obtained so far, carved or not; a chunk is obtained only when the free list is empty, and the
 * last one is shortened so that capacity never exceeds max_objs. */
size_t rb__slab_bytes(const struct rb__slab *s);

#endif
