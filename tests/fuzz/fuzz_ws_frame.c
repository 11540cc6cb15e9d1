/* fuzz_ws_frame.c — libFuzzer target: a byte stream through the engine's own WebSocket decoder. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input layout: byte 0 picks the side (bit 0: we are the server, frames must be masked) and the
 * message limit (bits 1-2); byte 1 the length (1..8) of a schedule of chunk sizes that follows;
 * the rest is the stream. The stream goes through rb__ws_feed (ws_frame.c, what the engine and
 * the load generator run) once whole and once cut into chunks as reads would deliver them: both
 * must see the same frames and the same error, and hold the same bytes at the end. Every frame
 * handed out is checked against RFC 6455 independently, and re-encoded with the engine's encoder
 * and decoded again to the same event.
 */

struct dec {
    bool from_client;
    uint32_t max_message;
    struct rb__ws_split *split;
    int err;
    size_t frames;
    uint64_t digest;
    /* round_trip: the event a re-encoded frame must decode to */
    uint8_t want_op;
    const uint8_t *want;
    uint32_t want_len;
    int seen;
};

static void mix(struct dec *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d->digest = (d->digest ^ p[i]) * 0x100000001B3ull;
}

static struct rb__ws_split **dec_slot(void *ctx, bool create)
{
    (void)create;
    return &((struct dec *)ctx)->split;
}

static int echo_frame(void *ctx, uint8_t opcode, const uint8_t *payload, uint32_t len)
{
    struct dec *e = ctx;
    FUZZ_CHECK(opcode == e->want_op && len == e->want_len);
    FUZZ_CHECK(len == 0 || memcmp(payload, e->want, len) == 0);
    e->seen++;
    return 0;
}

/* The event re-encoded (masked as a client sends it, or bare as a server does) decodes to itself,
 * in place and with no split storage left behind. */
static void round_trip(const struct dec *d, uint8_t opcode, const uint8_t *p, uint32_t len)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t *buf = malloc(len + RB__WS_HDR_MAX);
    FUZZ_CHECK(buf != NULL);
    size_t n = rb__ws_put_frame(buf, opcode, p, len, d->from_client ? key : NULL);
    FUZZ_CHECK(n >= (size_t)len + 2 && n <= (size_t)len + RB__WS_HDR_MAX);
    struct dec e = {.from_client = d->from_client,
                    .max_message = d->max_message,
                    .want_op = opcode,
                    .want = p,
                    .want_len = len};
    const struct rb__ws_rx rx = {.from_client = d->from_client,
                                 .max_message = d->max_message,
                                 .slot = dec_slot,
                                 .frame = echo_frame,
                                 .ctx = &e};
    FUZZ_CHECK(rb__ws_feed(&rx, buf, n) == 0);
    FUZZ_CHECK(e.seen == 1 && e.split == NULL);
    free(buf);
}

static int dec_frame(void *ctx, uint8_t opcode, const uint8_t *payload, uint32_t len)
{
    struct dec *d = ctx;
    uint8_t tl[5] = {opcode, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                     (uint8_t)len};
    mix(d, tl, sizeof(tl));
    d->frames++;
    switch (opcode) {
    case RB__WS_OP_CONT:
        FUZZ_CHECK(payload == NULL && len <= d->max_message);
        return 0;
    case RB__WS_OP_TEXT:
        FUZZ_CHECK(fuzz_ref_utf8_valid(payload, len));
        /* fall through */
    case RB__WS_OP_BINARY:
        FUZZ_CHECK(payload != NULL && len <= d->max_message);
        break;
    case RB__WS_OP_CLOSE: {
        FUZZ_CHECK(len <= RB__WS_CONTROL_MAX);
        uint16_t code;
        const uint8_t *reason;
        size_t rlen;
        int rc = rb__ws_close_parse(payload, len, &code, &reason, &rlen);
        if (len == 0) {
            FUZZ_CHECK(rc == 0 && code == RB__WS_CLOSE_NO_STATUS);
        } else {
            uint16_t c = len >= 2 ? (uint16_t)(payload[0] << 8 | payload[1]) : 0;
            bool ok = len >= 2 && ((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                                   (c >= 3000 && c <= 4999));
            int want = !ok ? -EPROTO : fuzz_ref_utf8_valid(payload + 2, len - 2) ? 0 : -EILSEQ;
            FUZZ_CHECK(rc == want);
            if (rc == 0)
                FUZZ_CHECK(code == c && reason == payload + 2 && rlen == len - 2);
        }
        break;
    }
    case RB__WS_OP_PING:
    case RB__WS_OP_PONG:
        FUZZ_CHECK(payload != NULL && len <= RB__WS_CONTROL_MAX);
        break;
    default:
        FUZZ_CHECK(!"the decoder handed out an opcode RFC 6455 does not define");
    }
    mix(d, payload, len);
    round_trip(d, opcode, payload, len);
    return 0;
}

static void dec_feed(struct dec *d, uint8_t *buf, size_t n)
{
    const struct rb__ws_rx rx = {.from_client = d->from_client,
                                 .max_message = d->max_message,
                                 .slot = dec_slot,
                                 .frame = dec_frame,
                                 .ctx = d};
    int rc = rb__ws_feed(&rx, buf, n);
    FUZZ_CHECK(rc == 0 || rc == -EPROTO || rc == -EMSGSIZE || rc == -EILSEQ);
    d->err = rc;
}

static size_t chunk_size(uint8_t b)
{
    /* Mostly small pieces (headers and payloads split anywhere), sometimes buffer-sized ones. */
    if (b < 0xF0)
        return (size_t)(b % 32) + 1;
    return (size_t)(b - 0xEF) * 512;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t limits[] = {0, 125, 4096, 65535};
    if (size < 2)
        return 0;
    bool from_client = data[0] & 1;
    uint32_t max_message = limits[(data[0] >> 1) & 3];
    size_t nsched = (size_t)(data[1] & 7) + 1;
    if (size < 2 + nsched)
        return 0;
    const uint8_t *sched = data + 2;
    const uint8_t *stream = data + 2 + nsched;
    size_t len = size - 2 - nsched;

    struct dec whole = {
        .from_client = from_client, .max_message = max_message, .digest = 0xCBF29CE484222325ull};
    struct dec cut = whole;

    /* The decoder unmasks in place: each run gets its own exact-size copy (ASan sees overreads). */
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
        FUZZ_CHECK(rb__ws_pending(cut.split) == rb__ws_pending(whole.split));
    rb__ws_split_free(whole.split);
    rb__ws_split_free(cut.split);
    return 0;
}
