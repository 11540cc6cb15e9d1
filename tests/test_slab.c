/* test_slab.c — unit tests of the fixed-size slab allocator (engine/slab.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "slab.h"

#ifdef RB_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

static void test_init_rejects_bad_args(void **state)
{
    (void)state;
    struct rb__slab s;
    assert_int_equal(rb__slab_init(NULL, 64, 16, 0), -EINVAL);
    assert_int_equal(rb__slab_init(&s, 0, 16, 0), -EINVAL);
    assert_int_equal(rb__slab_init(&s, sizeof(void *) - 1, 16, 0), -EINVAL);
    assert_int_equal(rb__slab_init(&s, 64, 0, 0), -EINVAL);
    /* A chunk whose byte size overflows size_t. */
    assert_int_equal(rb__slab_init(&s, 64, SIZE_MAX / 32, 0), -EINVAL);
    assert_int_equal(rb__slab_init(&s, SIZE_MAX - 3, 1, 0), -EINVAL);
    /* Smallest legal object. */
    assert_int_equal(rb__slab_init(&s, sizeof(void *), 1, 0), 0);
    void *p = rb__slab_alloc(&s);
    assert_non_null(p);
    rb__slab_free(&s, p);
    rb__slab_destroy(&s);
}

static void test_obj_size_rounded(void **state)
{
    (void)state;
    struct rb__slab s;
    assert_int_equal(rb__slab_init(&s, 20, 4, 0), 0);
    assert_int_equal(s.obj_size, 32);
    uint8_t *a = rb__slab_alloc(&s);
    uint8_t *b = rb__slab_alloc(&s);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(b > a ? b - a : a - b, 32);
    rb__slab_free(&s, a);
    rb__slab_free(&s, b);
    rb__slab_destroy(&s);

    assert_int_equal(rb__slab_init(&s, 64, 4, 0), 0);
    assert_int_equal(s.obj_size, 64);
    rb__slab_destroy(&s);
}

static void test_alloc_free_reuse(void **state)
{
    (void)state;
    struct rb__slab s;
    assert_int_equal(rb__slab_init(&s, 64, 8, 0), 0);
    void *a = rb__slab_alloc(&s);
    void *b = rb__slab_alloc(&s);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(s.live, 2);
    rb__slab_free(&s, a);
    assert_int_equal(s.live, 1);
    /* The most recently freed object comes back first (it is the one still in cache). */
    void *c = rb__slab_alloc(&s);
    assert_ptr_equal(c, a);
    rb__slab_free(&s, b);
    rb__slab_free(&s, c);
    void *d = rb__slab_alloc(&s);
    void *e = rb__slab_alloc(&s);
    assert_ptr_equal(d, c);
    assert_ptr_equal(e, b);
    assert_int_equal(s.nchunks, 1);
    rb__slab_free(&s, NULL); /* no-op */
    assert_int_equal(s.live, 2);
    rb__slab_free(&s, d);
    rb__slab_free(&s, e);
    assert_int_equal(s.live, 0);
    rb__slab_destroy(&s);
}

static void test_cap_reached_and_recovers(void **state)
{
    (void)state;
    struct rb__slab s;
    void *objs[10];
    assert_int_equal(rb__slab_init(&s, 64, 4, 10), 0);
    for (int i = 0; i < 10; i++) {
        objs[i] = rb__slab_alloc(&s);
        assert_non_null(objs[i]);
    }
    assert_null(rb__slab_alloc(&s));
    assert_null(rb__slab_alloc(&s));
    assert_int_equal(s.live, 10);
    /* The last chunk was cut to 2 objects: no memory reserved past the cap. */
    assert_int_equal(s.capacity, 10);
    assert_int_equal(rb__slab_bytes(&s), 10 * 64);
    rb__slab_free(&s, objs[3]);
    void *again = rb__slab_alloc(&s);
    assert_ptr_equal(again, objs[3]);
    assert_null(rb__slab_alloc(&s));
    for (int i = 0; i < 10; i++)
        rb__slab_free(&s, objs[i]);
    assert_int_equal(s.live, 0);
    /* After freeing everything the full cap is available again, from the same chunks. */
    for (int i = 0; i < 10; i++)
        assert_non_null(rb__slab_alloc(&s));
    assert_null(rb__slab_alloc(&s));
    assert_int_equal(s.nchunks, 3);
    rb__slab_destroy(&s);
}

static void test_alignment(void **state)
{
    (void)state;
    static const size_t sizes[] = {64, 128, 192, 16, 48, 24};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        struct rb__slab s;
        /* An odd objs_per_chunk makes chunk sizes that are not a multiple of 64. */
        assert_int_equal(rb__slab_init(&s, sizes[k], 7, 0), 0);
        size_t align = s.obj_size % 64 == 0 ? 64 : 16;
        for (int i = 0; i < 100; i++) {
            void *p = rb__slab_alloc(&s);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % align, 0);
            memset(p, 0xA5, s.obj_size); /* the whole object is usable */
        }
        assert_true(s.nchunks >= 100 / 7);
        rb__slab_destroy(&s);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* Each live object carries its own id in every word; an overlap would overwrite a neighbour's. */
static void stamp(void *p, size_t size, uint64_t id)
{
    for (size_t off = 0; off + 8 <= size; off += 8)
        memcpy((uint8_t *)p + off, &id, 8);
}

static void check_stamp(const void *p, size_t size, uint64_t id)
{
    for (size_t off = 0; off + 8 <= size; off += 8) {
        uint64_t v;
        memcpy(&v, (const uint8_t *)p + off, 8);
        assert_int_equal(v, id);
    }
}

static void test_random_no_overlap(void **state)
{
    (void)state;
    enum { MAX_LIVE = 3000, OPS = 200000, CAP = 2500 };
    struct rb__slab s;
    void **live = calloc(MAX_LIVE, sizeof(*live));
    uint64_t *ids = calloc(MAX_LIVE, sizeof(*ids));
    void **sorted = calloc(MAX_LIVE, sizeof(*sorted));
    assert_non_null(live);
    assert_non_null(ids);
    assert_non_null(sorted);
    assert_int_equal(rb__slab_init(&s, 48, 37, CAP), 0);
    size_t n = 0;
    uint64_t next_id = 1;
    size_t nulls = 0;

    for (int op = 0; op < OPS; op++) {
        /* Phases biased to grow then shrink so the free list is both long and empty at times. */
        unsigned grow_pct = (op / 20000) % 2 ? 30 : 70;
        if (n == 0 || (rng_next() % 100 < grow_pct && n < MAX_LIVE)) {
            void *p = rb__slab_alloc(&s);
            if (n >= CAP) {
                assert_null(p);
                nulls++;
                continue;
            }
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % 16, 0);
            live[n] = p;
            ids[n] = next_id++;
            stamp(p, s.obj_size, ids[n]);
            n++;
        } else {
            size_t i = rng_next() % n;
            check_stamp(live[i], s.obj_size, ids[i]);
            rb__slab_free(&s, live[i]);
            live[i] = live[n - 1];
            ids[i] = ids[n - 1];
            n--;
        }
        assert_int_equal(s.live, n);
        assert_true(s.capacity <= CAP);

        if (op % 5000 == 0 || op == OPS - 1) {
            for (size_t i = 0; i < n; i++)
                check_stamp(live[i], s.obj_size, ids[i]);
            memcpy(sorted, live, n * sizeof(*sorted));
            qsort(sorted, n, sizeof(*sorted), cmp_ptr);
            for (size_t i = 1; i < n; i++)
                assert_true((uintptr_t)sorted[i - 1] + s.obj_size <= (uintptr_t)sorted[i]);
        }
    }
    assert_true(nulls > 0); /* the cap was exercised */
    for (size_t i = 0; i < n; i++)
        rb__slab_free(&s, live[i]);
    assert_int_equal(s.live, 0);
    rb__slab_destroy(&s);
    free(live);
    free(ids);
    free(sorted);
}

static void test_bytes_accounting(void **state)
{
    (void)state;
    struct rb__slab s;
    void *objs[33];
    assert_int_equal(rb__slab_init(&s, 64, 16, 0), 0);
    assert_int_equal(rb__slab_bytes(&s), 0); /* nothing reserved until the first alloc */
    objs[0] = rb__slab_alloc(&s);
    assert_int_equal(rb__slab_bytes(&s), 16 * 64);
    for (int i = 1; i < 16; i++)
        objs[i] = rb__slab_alloc(&s);
    assert_int_equal(rb__slab_bytes(&s), 16 * 64);
    objs[16] = rb__slab_alloc(&s);
    assert_int_equal(rb__slab_bytes(&s), 32 * 64);
    assert_int_equal(s.nchunks, 2);
    for (int i = 17; i < 33; i++)
        objs[i] = rb__slab_alloc(&s);
    assert_int_equal(rb__slab_bytes(&s), 48 * 64);
    assert_int_equal(s.live, 33);
    /* Chunks are kept until destroy. */
    for (int i = 0; i < 33; i++)
        rb__slab_free(&s, objs[i]);
    assert_int_equal(s.live, 0);
    assert_int_equal(rb__slab_bytes(&s), 48 * 64);
    /* Reuse does not grow. */
    for (int i = 0; i < 33; i++)
        objs[i] = rb__slab_alloc(&s);
    assert_int_equal(rb__slab_bytes(&s), 48 * 64);
    assert_int_equal(s.nchunks, 3);
    rb__slab_destroy(&s);
    assert_int_equal(rb__slab_bytes(&s), 0);
}

static void test_private_arena(void **state)
{
    (void)state;
#ifdef RB_HAVE_JEMALLOC
    struct rb__slab s;
    assert_int_equal(rb__slab_init(&s, 64, 1024, 0), 0);
    assert_int_not_equal(s.arena, 0);
    void *p = rb__slab_alloc(&s);
    assert_non_null(p);
    unsigned owner = ~0u;
    size_t sz = sizeof(owner);
    assert_int_equal(mallctl("arenas.lookup", &owner, &sz, &p, sizeof(p)), 0);
    assert_int_equal(owner, s.arena);
    rb__slab_free(&s, p);
    rb__slab_destroy(&s);
    /* Many init/destroy cycles must not exhaust jemalloc's arena indices. */
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(rb__slab_init(&s, 64, 4, 0), 0);
        assert_non_null(rb__slab_alloc(&s));
        rb__slab_destroy(&s);
    }
#else
    skip();
#endif
}

/* Under ASan a freed object must be poisoned, so the engine's use-after-free bugs are reported. */
static void test_asan_poisons_free_objects(void **state)
{
    (void)state;
#ifdef TEST_ASAN
    struct rb__slab s;
    assert_int_equal(rb__slab_init(&s, 64, 4, 0), 0);
    uint8_t *a = rb__slab_alloc(&s);
    uint8_t *b = rb__slab_alloc(&s);
    assert_int_equal(__asan_address_is_poisoned(a + 32), 0);
    /* Carved but never handed out. */
    assert_int_not_equal(__asan_address_is_poisoned(b + 64), 0);
    rb__slab_free(&s, a);
    assert_int_not_equal(__asan_address_is_poisoned(a + 32), 0);
    assert_int_not_equal(__asan_address_is_poisoned(a + 63), 0);
    assert_ptr_equal(rb__slab_alloc(&s), a);
    assert_int_equal(__asan_address_is_poisoned(a + 63), 0);
    rb__slab_free(&s, a);
    rb__slab_free(&s, b);
    rb__slab_destroy(&s);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_args),
        cmocka_unit_test(test_obj_size_rounded),
        cmocka_unit_test(test_alloc_free_reuse),
        cmocka_unit_test(test_cap_reached_and_recovers),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_random_no_overlap),
        cmocka_unit_test(test_bytes_accounting),
        cmocka_unit_test(test_private_arena),
        cmocka_unit_test(test_asan_poisons_free_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
