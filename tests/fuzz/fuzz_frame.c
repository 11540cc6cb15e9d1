/* fuzz_frame.c — libFuzzer target: a byte stream through the engine's own v1 stream decoder. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input layout: byte 0 picks max_frame; byte 1 the length (1..8) of a schedule of chunk sizes that
 * follows; the rest is the stream. The stream is decoded twice by rb__v1_feed (proto.c, what the
 * engine, the load generator and the client library run), once whole and once cut into chunks as
 * a socket would deliver them: both must see the same frames and the same error, and hold the
 * same split bytes at the end. The split-frame storage is the engine's: 7 inline bytes, then a
 * buffer of exactly the frame's size; each is its own allocation so that a read past it trips ASan.
 */
#define INLINE_CAP 7

struct dec {
    uint32_t max_frame;
    struct rb__frame_hdr h;
    const uint8_t *payload; /* the frame being judged */
    uint8_t inl_len;
    uint8_t *inl; /* INLINE_CAP bytes of their own */
    struct rb__v1_split *split;
    int err; /* 0, or what the decoder refused the stream with */
    size_t frames;
    uint64_t digest; /* of every frame's type, length and payload, in order */
    uint8_t *enc;    /* re-encoding scratch */
};

static void mix(struct dec *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d->digest = (d->digest ^ p[i]) * 0x100000001B3ull;
}

static int expect_len_ok(uint8_t type, uint16_t len, uint32_t max_frame)
{
    switch (type) {
    case RB_FRAME_HELLO:
        return len >= 12 && len <= 332; /* 76 without a token */
    case RB_FRAME_WELCOME:
        return len == 20;
    case RB_FRAME_PING:
    case RB_FRAME_PONG:
    case RB_FRAME_TUNE:
        return len == 8;
    case RB_FRAME_DATA:
        return len <= max_frame;
    case RB_FRAME_CLOSE:
        return len >= 2 && len <= 125;
    default:
        return 0;
    }
}

/* The re-encoded frame must be the received one, flags aside (encoders always send 0). */
static void same_as_received(const struct dec *d, size_t n)
{
    FUZZ_CHECK(n == RB_FRAME_HEADER_LEN + (size_t)d->h.len);
    FUZZ_CHECK(d->enc[0] == d->h.type && d->enc[1] == 0);
    FUZZ_CHECK(rb__get_u16(d->enc + 2) == d->h.len);
    FUZZ_CHECK(memcmp(d->enc + RB_FRAME_HEADER_LEN, d->payload, d->h.len) == 0);
}

static void on_frame(struct dec *d)
{
    const uint8_t *p = d->payload;
    FUZZ_CHECK(p != NULL);
    size_t len = d->h.len;
    uint8_t tl[3] = {d->h.type, (uint8_t)(len >> 8), (uint8_t)len};
    mix(d, tl, sizeof(tl));
    mix(d, p, len);
    d->frames++;

    switch (d->h.type) {
    case RB_FRAME_HELLO: {
        struct rb__hello hello;
        int rc = rb__hello_parse(p, len, &hello), tok;
        int valid = fuzz_ref_hello_valid(p, len, &tok);
        FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
        if (rc == 0) {
            FUZZ_CHECK(hello.client_id == p + RB__HELLO_MIN + (tok ? 1 : 0));
            FUZZ_CHECK(hello.client_id_len + (tok ? 1 + hello.token_len : 0) ==
                       len - RB__HELLO_MIN);
            same_as_received(d, rb__put_hello(d->enc, &hello));
        }
        break;
    }
    case RB_FRAME_WELCOME: {
        struct rb__welcome w;
        int rc = rb__welcome_parse(p, len, &w);
        int valid = p[0] == 1 && p[1] <= 3 && p[2] == 0 && p[3] == 0; /* modes 0-3 */
        FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
        if (rc == 0)
            same_as_received(d, rb__put_welcome(d->enc, &w));
        break;
    }
    case RB_FRAME_PING:
    case RB_FRAME_PONG:
        same_as_received(d, rb__put_ping(d->enc, d->h.type, rb__get_u64(p)));
        break;
    case RB_FRAME_TUNE: {
        uint32_t iv, to;
        FUZZ_CHECK(rb__tune_parse(p, len, &iv, &to) == 0);
        same_as_received(d, rb__put_tune(d->enc, iv, to));
        break;
    }
    case RB_FRAME_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        int rc = rb__close_parse(p, len, &code, &reason, &reason_len);
        int valid = fuzz_ref_utf8_valid(p + 2, len - 2);
        FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
        if (rc == 0) {
            FUZZ_CHECK(reason == p + 2 && reason_len == len - 2);
            FUZZ_CHECK(code == rb__get_u16(p));
            /* The encoder takes a C string: only NUL-free reasons survive the trip. */
            char text[RB__CLOSE_REASON_MAX + 1];
            memcpy(text, reason, reason_len);
            text[reason_len] = 0;
            if (strlen(text) == reason_len)
                same_as_received(d, rb__put_close(d->enc, code, text));
        }
        break;
    }
    case RB_FRAME_DATA:
        same_as_received(d, rb__put_data(d->enc, p, d->h.len));
        break;
    default:
        FUZZ_CHECK(!"rb__frame_check accepted an unknown type");
    }
}

static struct rb__v1_split **dec_slot(void *ctx, bool create)
{
    (void)create;
    return &((struct dec *)ctx)->split;
}

static int dec_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload)
{
    struct dec *d = ctx;
    FUZZ_CHECK(expect_len_ok(h->type, h->len, d->max_frame));
    d->h = *h;
    d->payload = payload;
    on_frame(d);
    return 0;
}

/* Feeds one chunk as a completion would. */
static void dec_feed(struct dec *d, const uint8_t *buf, size_t n)
{
    const struct rb__v1_rx rx = {.inl_len = &d->inl_len,
                                 .inl = d->inl,
                                 .inl_cap = INLINE_CAP,
                                 .max_frame = d->max_frame,
                                 .slot = dec_slot,
                                 .frame = dec_frame,
                                 .ctx = d};
    int rc = rb__v1_feed(&rx, buf, n);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EMSGSIZE);
    FUZZ_CHECK(d->inl_len <= INLINE_CAP);
    FUZZ_CHECK(!d->split || d->split->len < d->split->cap);
    d->err = rc;
}

static size_t dec_pending(struct dec *d)
{
    return d->split ? d->split->len : d->inl_len;
}

static void dec_init(struct dec *d, uint32_t max_frame, uint8_t *enc)
{
    memset(d, 0, sizeof(*d));
    d->max_frame = max_frame;
    d->digest = 0xCBF29CE484222325ull;
    d->enc = enc;
    d->inl = malloc(INLINE_CAP);
    FUZZ_CHECK(d->inl != NULL);
}

static void dec_end(struct dec *d)
{
    free(d->split);
    free(d->inl);
}

static size_t chunk_size(uint8_t b)
{
    /* Mostly small pieces (header and payload split anywhere), sometimes buffer-sized ones. */
    if (b < 0xF0)
        return (size_t)(b % 32) + 1;
    return (size_t)(b - 0xEF) * 512;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t max_frames[] = {0, 16, 4096, 65535};
    static uint8_t enc[RB_FRAME_HEADER_LEN + 65535];
    if (size < 2)
        return 0;
    uint32_t max_frame = max_frames[data[0] & 3];
    size_t nsched = (size_t)(data[1] & 7) + 1;
    if (size < 2 + nsched)
        return 0;
    const uint8_t *sched = data + 2;
    const uint8_t *stream = data + 2 + nsched;
    size_t len = size - 2 - nsched;

    struct dec whole, cut;
    dec_init(&whole, max_frame, enc);
    dec_init(&cut, max_frame, enc);

    /* The stream in one exact-size buffer, so that a read past its end trips ASan. */
    uint8_t *all = malloc(len ? len : 1);
    FUZZ_CHECK(all != NULL);
    memcpy(all, stream, len);
    dec_feed(&whole, all, len);
    free(all);

    size_t off = 0;
    for (size_t i = 0; off < len && cut.err == 0; i++) {
        size_t n = chunk_size(sched[i % nsched]);
        if (n > len - off)
            n = len - off;
        /* Each chunk in its own exact-size buffer, as a provided receive buffer would be. */
        uint8_t *chunk = malloc(n);
        FUZZ_CHECK(chunk != NULL);
        memcpy(chunk, stream + off, n);
        dec_feed(&cut, chunk, n);
        free(chunk);
        off += n;
    }

    FUZZ_CHECK(cut.err == whole.err);
    FUZZ_CHECK(cut.frames == whole.frames);
    FUZZ_CHECK(cut.digest == whole.digest);
    if (!whole.err)
        FUZZ_CHECK(dec_pending(&cut) == dec_pending(&whole));
    dec_end(&whole);
    dec_end(&cut);
    return 0;
}
