/* test_v1_stream.c — unit tests of the v1 stream decoder (rb__v1_feed) fed at every split point. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

/* The engine's layout: a 7-byte inline store in the record, then a buffer sized for the frame. */
#define INLINE_CAP 7
#define MAX_FRAMES 16

struct seen {
    uint8_t type;
    uint16_t len;
    uint8_t payload[300];
};

struct fx {
    uint8_t inl_len;
    uint8_t inl[INLINE_CAP];
    struct rb__v1_split *split;
    bool slot_exists;   /* like the engine's ext: the slot's holder is made on demand */
    bool refuse_create; /* ... or cannot be */
    unsigned creates;   /* times the decoder asked for the slot to exist */
    bool max_split_seen;
    struct seen frames[MAX_FRAMES];
    unsigned nframes;
    int stop_at; /* frame index at which frame() returns 7 (-1: never) */
};

static struct rb__v1_split **slot_of(void *ctx, bool create)
{
    struct fx *f = ctx;
    if (create && f->refuse_create)
        return NULL;
    if (create) {
        f->creates++;
        f->slot_exists = true;
    }
    return f->slot_exists ? &f->split : NULL;
}

static int on_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload)
{
    struct fx *f = ctx;
    assert_true(f->nframes < MAX_FRAMES);
    struct seen *s = &f->frames[f->nframes];
    s->type = h->type;
    s->len = h->len;
    assert_true(h->len <= sizeof(s->payload));
    memcpy(s->payload, payload, h->len);
    if (f->split)
        f->max_split_seen = true;
    if ((int)f->nframes++ == f->stop_at)
        return 7;
    return 0;
}

static int feed(struct fx *f, const uint8_t *p, size_t n)
{
    const struct rb__v1_rx rx = {.inl_len = &f->inl_len,
                                 .inl = f->inl,
                                 .inl_cap = INLINE_CAP,
                                 .max_frame = 4096,
                                 .slot = slot_of,
                                 .frame = on_frame,
                                 .ctx = f};
    return rb__v1_feed(&rx, p, n);
}

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    f->stop_at = -1;
}

/* A stream of frames of every storage class: header-only, fits inline, needs a buffer. */
static size_t make_stream(uint8_t *out, struct seen *want, unsigned *nwant)
{
    size_t n = 0;
    unsigned k = 0;
    uint8_t data[200];
    for (unsigned i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    n += rb__put_data(out + n, data, 0); /* 4 bytes: header only */
    want[k++] = (struct seen){.type = RB_FRAME_DATA, .len = 0};
    n += rb__put_data(out + n, data, 3); /* 7 bytes: exactly the inline store */
    want[k] = (struct seen){.type = RB_FRAME_DATA, .len = 3};
    memcpy(want[k++].payload, data, 3);
    n += rb__put_ping(out + n, RB_FRAME_PING, 0x0102030405060708ull); /* 12: moves to a buffer */
    want[k] = (struct seen){.type = RB_FRAME_PING, .len = 8};
    memcpy(want[k++].payload, out + n - 8, 8);
    n += rb__put_tune(out + n, 5000, 15000);
    want[k] = (struct seen){.type = RB_FRAME_TUNE, .len = 8};
    memcpy(want[k++].payload, out + n - 8, 8);
    n += rb__put_data(out + n, data, sizeof(data)); /* a long one */
    want[k] = (struct seen){.type = RB_FRAME_DATA, .len = sizeof(data)};
    memcpy(want[k++].payload, data, sizeof(data));
    n += rb__put_close(out + n, 1, "bye");
    want[k] = (struct seen){.type = RB_FRAME_CLOSE, .len = 5};
    memcpy(want[k++].payload, out + n - 5, 5);
    *nwant = k;
    return n;
}

static void assert_frames(const struct fx *f, const struct seen *want, unsigned nwant)
{
    assert_int_equal(f->nframes, nwant);
    for (unsigned i = 0; i < nwant; i++) {
        assert_int_equal(f->frames[i].type, want[i].type);
        assert_int_equal(f->frames[i].len, want[i].len);
        assert_memory_equal(f->frames[i].payload, want[i].payload, want[i].len);
    }
}

/* Every single split point, and every pair of split points, of the whole stream. */
static void test_every_split_point(void **state)
{
    (void)state;
    uint8_t stream[512];
    struct seen want[MAX_FRAMES];
    unsigned nwant;
    size_t n = make_stream(stream, want, &nwant);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct fx f;
            fx_init(&f);
            /* Each piece in an exact-size buffer: a read past it is a bug ASan reports. */
            size_t cuts[] = {0, a, b, n};
            for (int i = 0; i < 3; i++) {
                size_t len = cuts[i + 1] - cuts[i];
                uint8_t *piece = malloc(len ? len : 1);
                memcpy(piece, stream + cuts[i], len);
                assert_int_equal(feed(&f, piece, len), 0);
                free(piece);
            }
            assert_frames(&f, want, nwant);
            assert_int_equal(f.inl_len, 0);
            assert_null(f.split);
        }
    }
}

/* Byte by byte: every frame longer than the inline store moves from the record to a buffer. */
static void test_byte_by_byte_moves_to_buffer(void **state)
{
    (void)state;
    uint8_t stream[512];
    struct seen want[MAX_FRAMES];
    unsigned nwant;
    size_t n = make_stream(stream, want, &nwant);
    struct fx f;
    fx_init(&f);
    size_t max_inline = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(feed(&f, stream + i, 1), 0);
        if (!f.split && f.inl_len > max_inline)
            max_inline = f.inl_len;
        if (f.split) {
            assert_int_equal(f.inl_len, 0); /* the inline bytes moved with it */
            assert_true(f.split->len <= f.split->cap);
        }
    }
    assert_frames(&f, want, nwant);
    assert_int_equal(max_inline, INLINE_CAP);
    assert_true(f.max_split_seen);
    assert_int_equal(f.creates, 4); /* PING, TUNE, the long DATA and the CLOSE needed one */
    assert_null(f.split);
}

static void test_bad_header_stops_at_once(void **state)
{
    (void)state;
    uint8_t stream[64];
    size_t n = rb__put_ping(stream, RB_FRAME_PING, 1);
    stream[n++] = 0x09; /* unknown type */
    stream[n++] = 0;
    stream[n++] = 0;
    stream[n++] = 0;
    n += rb__put_ping(stream + n, RB_FRAME_PING, 2);
    for (size_t cut = 0; cut <= n; cut++) {
        struct fx f;
        fx_init(&f);
        int r = feed(&f, stream, cut);
        if (r == 0)
            r = feed(&f, stream + cut, n - cut);
        assert_int_equal(r, -EPROTO);
        assert_int_equal(f.nframes, 1); /* nothing after the bad header was looked at */
        free(f.split);
    }
    /* A DATA longer than max_frame is refused from its header, before its payload arrives. */
    struct fx f;
    fx_init(&f);
    uint8_t big[4] = {RB_FRAME_DATA, 0, 0x10, 0x01}; /* 4097 > 4096 */
    assert_int_equal(feed(&f, big, 3), 0);
    assert_int_equal(feed(&f, big + 3, 1), -EMSGSIZE);
    assert_null(f.split);
}

/* A frame() that stops the decoder gets its value back, and nothing after it is parsed. */
static void test_stop_from_callback(void **state)
{
    (void)state;
    uint8_t stream[512];
    struct seen want[MAX_FRAMES];
    unsigned nwant;
    size_t n = make_stream(stream, want, &nwant);
    struct fx f;
    fx_init(&f);
    f.stop_at = 2;
    assert_int_equal(feed(&f, stream, n), 7);
    assert_int_equal(f.nframes, 3);
}

/* The slot's holder cannot be made (the engine out of memory for its ext): -ENOMEM, no frame. */
static void test_no_memory_for_split(void **state)
{
    (void)state;
    uint8_t stream[16];
    size_t n = rb__put_ping(stream, RB_FRAME_PING, 1);
    struct fx f;
    fx_init(&f);
    f.refuse_create = true;
    assert_int_equal(feed(&f, stream, 7), 0); /* fits inline: no slot needed */
    assert_int_equal(f.inl_len, 7);
    assert_int_equal(feed(&f, stream + 7, n - 7), -ENOMEM);
    assert_int_equal(f.nframes, 0);
    f.refuse_create = false;
    fx_init(&f);
    assert_int_equal(feed(&f, stream, n), 0); /* whole: decoded in place, no slot at all */
    assert_int_equal(f.nframes, 1);
    assert_int_equal(f.creates, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_byte_by_byte_moves_to_buffer),
        cmocka_unit_test(test_bad_header_stops_at_once),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_no_memory_for_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
