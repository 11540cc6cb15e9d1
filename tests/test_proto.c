/* test_proto.c — unit tests of the wire protocol v1 codec (engine/proto.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

#define MAX_FRAME 4096

static int check(uint8_t type, uint16_t len, uint32_t max_frame, struct rb__frame_hdr *h)
{
    uint8_t hdr[RB_FRAME_HEADER_LEN] = {type, 0, (uint8_t)(len >> 8), (uint8_t)len};
    return rb__frame_check(hdr, max_frame, h);
}

/* ---- byte order against literal frames ---- */

static void test_header_bytes(void **state)
{
    (void)state;
    uint8_t out[8];
    memset(out, 0xEE, sizeof(out));
    assert_int_equal(rb__put_header(out, RB_FRAME_DATA, 0x1234), 4);
    static const uint8_t want[] = {0x05, 0x00, 0x12, 0x34, 0xEE};
    assert_memory_equal(out, want, sizeof(want));
}

static void test_ping_pong_bytes(void **state)
{
    (void)state;
    uint8_t out[16];
    static const uint8_t ping[] = {0x03, 0x00, 0x00, 0x08, 0x01, 0x02,
                                   0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    assert_int_equal(rb__put_ping(out, RB_FRAME_PING, 0x0102030405060708ull), 12);
    assert_memory_equal(out, ping, sizeof(ping));
    static const uint8_t pong[] = {0x04, 0x00, 0x00, 0x08, 0xFF, 0xEE,
                                   0xDD, 0xCC, 0xBB, 0xAA, 0x99, 0x88};
    assert_int_equal(rb__put_ping(out, RB_FRAME_PONG, 0xFFEEDDCCBBAA9988ull), 12);
    assert_memory_equal(out, pong, sizeof(pong));
    assert_int_equal(rb__get_u64(pong + 4), 0xFFEEDDCCBBAA9988ull);
}

static void test_hello_bytes(void **state)
{
    (void)state;
    /* version 1, mode client, interval 30000 ms, timeout 90000 ms, client id "ab" */
    static const uint8_t want[] = {0x01, 0x00, 0x00, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x00,
                                   0x00, 0x75, 0x30, 0x00, 0x01, 0x5F, 0x90, 'a',  'b'};
    struct rb__hello h = {.version = 1,
                          .mode = RB_MODE_CLIENT,
                          .interval_ms = 30000,
                          .timeout_ms = 90000,
                          .client_id = (const uint8_t *)"ab",
                          .client_id_len = 2};
    uint8_t out[RB_FRAME_HEADER_LEN + RB__HELLO_MAX];
    assert_int_equal(rb__put_hello(out, &h), sizeof(want));
    assert_memory_equal(out, want, sizeof(want));

    struct rb__hello got;
    assert_int_equal(rb__hello_parse(want + 4, sizeof(want) - 4, &got), 0);
    assert_int_equal(got.version, 1);
    assert_int_equal(got.mode, RB_MODE_CLIENT);
    assert_int_equal(got.interval_ms, 30000);
    assert_int_equal(got.timeout_ms, 90000);
    assert_int_equal(got.client_id_len, 2);
    assert_ptr_equal(got.client_id, want + 16);
}

static void test_welcome_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {0x02, 0x00, 0x00, 0x14, 0x01, 0x02, 0x00, 0x00,
                                   0x00, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x0B, 0xB8,
                                   0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
    struct rb__welcome w = {.version = 1,
                            .mode = RB_MODE_SILENT,
                            .interval_ms = 1000,
                            .timeout_ms = 3000,
                            .conn_id = 0x1122334455667788ull};
    uint8_t out[RB_FRAME_HEADER_LEN + RB__WELCOME_LEN];
    assert_int_equal(rb__put_welcome(out, &w), sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
}

static void test_close_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {0x06, 0x00, 0x00, 0x09, 0x00, 0x02, 't',
                                   'i',  'm',  'e',  'o',  'u',  't'};
    uint8_t out[RB__CONTROL_MAX];
    assert_int_equal(rb__put_close(out, RB_CLOSE_TIMEOUT, "timeout"), sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    static const uint8_t bare[] = {0x06, 0x00, 0x00, 0x02, 0x01, 0x07};
    assert_int_equal(rb__put_close(out, 0x0107, NULL), sizeof(bare));
    assert_memory_equal(out, bare, sizeof(bare));
}

static void test_data_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {0x05, 0x00, 0x00, 0x03, 'x', 'y', 'z'};
    uint8_t out[16];
    assert_int_equal(rb__put_data(out, "xyz", 3), sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(rb__put_data(out, NULL, 0), 4);
    static const uint8_t empty[] = {0x05, 0x00, 0x00, 0x00};
    assert_memory_equal(out, empty, sizeof(empty));
}

static void test_get_helpers(void **state)
{
    (void)state;
    static const uint8_t b[] = {0x80, 0x01, 0xFE, 0x02, 0x7F, 0x00, 0xAB, 0xCD};
    assert_int_equal(rb__get_u16(b), 0x8001);
    assert_int_equal(rb__get_u32(b), 0x8001FE02u);
    assert_int_equal(rb__get_u64(b), 0x8001FE027F00ABCDull);
}

/* ---- round trips: encode, check the header, parse the payload ---- */

static void accept_header(const uint8_t *frame, size_t frame_len, uint8_t type)
{
    struct rb__frame_hdr h;
    assert_int_equal(rb__frame_check(frame, MAX_FRAME, &h), 0);
    assert_int_equal(h.type, type);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.len, frame_len - RB_FRAME_HEADER_LEN);
}

static void test_roundtrip_hello(void **state)
{
    (void)state;
    uint8_t id[RB_CLIENT_ID_MAX];
    for (size_t i = 0; i < sizeof(id); i++)
        id[i] = (uint8_t)(i * 7 + 3);
    static const size_t id_lens[] = {0, 1, 5, 63, 64};
    for (size_t k = 0; k < sizeof(id_lens) / sizeof(id_lens[0]); k++) {
        for (uint8_t mode = 0; mode <= 2; mode++) {
            struct rb__hello in = {.version = 1,
                                   .mode = mode,
                                   .interval_ms = 0xDEADBEEFu,
                                   .timeout_ms = k == 0 ? 0 : 0xFFFFFFFFu,
                                   .client_id = id,
                                   .client_id_len = id_lens[k]};
            uint8_t out[RB_FRAME_HEADER_LEN + RB__HELLO_MAX];
            size_t n = rb__put_hello(out, &in);
            assert_int_equal(n, RB_FRAME_HEADER_LEN + RB__HELLO_MIN + id_lens[k]);
            accept_header(out, n, RB_FRAME_HELLO);
            struct rb__hello got;
            assert_int_equal(rb__hello_parse(out + 4, n - 4, &got), 0);
            assert_int_equal(got.version, 1);
            assert_int_equal(got.mode, mode);
            assert_int_equal(got.interval_ms, in.interval_ms);
            assert_int_equal(got.timeout_ms, in.timeout_ms);
            assert_int_equal(got.client_id_len, id_lens[k]);
            if (id_lens[k] > 0)
                assert_memory_equal(got.client_id, id, id_lens[k]);
        }
    }
    /* An over-long id is cut to the largest one a server accepts. */
    uint8_t big[100];
    memset(big, 'q', sizeof(big));
    struct rb__hello in = {.version = 1, .client_id = big, .client_id_len = sizeof(big)};
    uint8_t out[RB_FRAME_HEADER_LEN + RB__HELLO_MAX + 8];
    assert_int_equal(rb__put_hello(out, &in), RB_FRAME_HEADER_LEN + RB__HELLO_PLAIN_MAX);
    accept_header(out, RB_FRAME_HEADER_LEN + RB__HELLO_PLAIN_MAX, RB_FRAME_HELLO);
}

/* The token extension: u8 id length, id, token; flags bit 0 says it is there. */
static void test_roundtrip_hello_token(void **state)
{
    (void)state;
    uint8_t id[RB_CLIENT_ID_MAX], tok[RB__HELLO_TOKEN_MAX + 10];
    memset(id, 'i', sizeof(id));
    memset(tok, 't', sizeof(tok));
    static const size_t id_lens[] = {0, 1, 36, 64};
    static const size_t tok_lens[] = {1, 2, 64, 255};
    for (size_t k = 0; k < 4; k++) {
        for (size_t t = 0; t < 4; t++) {
            struct rb__hello in = {.version = 1,
                                   .mode = 1,
                                   .interval_ms = 5000,
                                   .client_id = id,
                                   .client_id_len = id_lens[k],
                                   .token = tok,
                                   .token_len = tok_lens[t]};
            uint8_t out[RB_FRAME_HEADER_LEN + RB__HELLO_MAX];
            size_t n = rb__put_hello(out, &in);
            assert_int_equal(n, RB_FRAME_HEADER_LEN + RB__HELLO_MIN + 1 + id_lens[k] + tok_lens[t]);
            assert_int_equal(out[6], 0);
            assert_int_equal(out[7], 1); /* the token flag */
            accept_header(out, n, RB_FRAME_HELLO);
            struct rb__hello got;
            assert_int_equal(rb__hello_parse(out + 4, n - 4, &got), 0);
            assert_int_equal(got.client_id_len, id_lens[k]);
            assert_int_equal(got.token_len, tok_lens[t]);
            assert_ptr_equal(got.token, got.client_id + id_lens[k]);
            assert_memory_equal(got.token, tok, tok_lens[t]);
            assert_int_equal(got.interval_ms, 5000);
        }
    }
    /* A token longer than the wire allows is cut to 255 bytes. */
    struct rb__hello in = {.version = 1, .token = tok, .token_len = sizeof(tok)};
    uint8_t out[RB_FRAME_HEADER_LEN + RB__HELLO_MAX + 16];
    assert_int_equal(rb__put_hello(out, &in), RB_FRAME_HEADER_LEN + RB__HELLO_MIN + 1 + 255);
    /* Without a token the frame is byte for byte the one older clients send. */
    struct rb__hello plain = {.version = 1, .client_id = id, .client_id_len = 2};
    assert_int_equal(rb__put_hello(out, &plain), RB_FRAME_HEADER_LEN + RB__HELLO_MIN + 2);
    assert_int_equal(out[6] | out[7], 0);
}

static void test_hello_token_every_layout(void **state)
{
    (void)state;
    uint8_t p[RB__HELLO_MAX + 8];
    for (size_t len = 0; len <= sizeof(p); len++) {
        for (unsigned id_len = 0; id_len <= 70; id_len++) {
            memset(p, 'x', sizeof(p));
            static const uint8_t v[] = {1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
            memcpy(p, v, sizeof(v));
            p[12] = (uint8_t)id_len;
            struct rb__hello h;
            int rc = rb__hello_parse(p, len, &h);
            bool ok = len >= 14 && len <= RB__HELLO_MAX && id_len <= 64 && id_len + 13 < len &&
                      len - 13 - id_len <= 255;
            if (rc != (ok ? 0 : -EPROTO))
                fail_msg("len %zu id_len %u: got %d", len, id_len, rc);
            if (ok) {
                assert_int_equal(h.client_id_len, id_len);
                assert_int_equal(h.token_len, len - 13 - id_len);
            }
        }
    }
    /* Unknown flags are refused, with or without the token flag. */
    for (unsigned bit = 1; bit < 16; bit++) {
        uint8_t q[20] = {1, 0, (uint8_t)((1u << bit) >> 8), (uint8_t)((1u << bit) | 1)};
        struct rb__hello h;
        assert_int_equal(rb__hello_parse(q, sizeof(q), &h), -EPROTO);
    }
}

static void test_roundtrip_welcome(void **state)
{
    (void)state;
    static const uint64_t ids[] = {0, 1, 0x8000000000000000ull, UINT64_MAX};
    for (size_t k = 0; k < 4; k++) {
        struct rb__welcome in = {.version = 1,
                                 .mode = (uint8_t)(k % 3),
                                 .interval_ms = (uint32_t)(1000 * k + 1),
                                 .timeout_ms = UINT32_MAX - (uint32_t)k,
                                 .conn_id = ids[k]};
        uint8_t out[RB_FRAME_HEADER_LEN + RB__WELCOME_LEN];
        size_t n = rb__put_welcome(out, &in);
        assert_int_equal(n, sizeof(out));
        accept_header(out, n, RB_FRAME_WELCOME);
        struct rb__welcome got;
        assert_int_equal(rb__welcome_parse(out + 4, n - 4, &got), 0);
        assert_int_equal(got.version, 1);
        assert_int_equal(got.mode, in.mode);
        assert_int_equal(got.interval_ms, in.interval_ms);
        assert_int_equal(got.timeout_ms, in.timeout_ms);
        assert_int_equal(got.conn_id, in.conn_id);
    }
}

static void test_roundtrip_ping_pong(void **state)
{
    (void)state;
    static const uint64_t tokens[] = {0, 1, 0x0123456789ABCDEFull, UINT64_MAX};
    for (int t = RB_FRAME_PING; t <= RB_FRAME_PONG; t++) {
        for (size_t k = 0; k < 4; k++) {
            uint8_t out[12];
            size_t n = rb__put_ping(out, (uint8_t)t, tokens[k]);
            assert_int_equal(n, 12);
            accept_header(out, n, (uint8_t)t);
            assert_int_equal(rb__get_u64(out + 4), tokens[k]);
        }
    }
}

static void test_roundtrip_close(void **state)
{
    (void)state;
    static const char *reasons[] = {NULL, "", "bye", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x92\x93"};
    for (uint16_t code = 1; code <= 7; code++) {
        for (size_t k = 0; k < 4; k++) {
            uint8_t out[RB__CONTROL_MAX];
            size_t n = rb__put_close(out, code, reasons[k]);
            size_t rlen = reasons[k] ? strlen(reasons[k]) : 0;
            assert_int_equal(n, RB_FRAME_HEADER_LEN + 2 + rlen);
            accept_header(out, n, RB_FRAME_CLOSE);
            uint16_t got_code = 0;
            const uint8_t *reason = NULL;
            size_t reason_len = 99;
            assert_int_equal(rb__close_parse(out + 4, n - 4, &got_code, &reason, &reason_len), 0);
            assert_int_equal(got_code, code);
            assert_int_equal(reason_len, rlen);
            if (rlen)
                assert_memory_equal(reason, reasons[k], rlen);
        }
    }
    /* Unknown codes are passed through, not refused. */
    uint8_t out[RB__CONTROL_MAX];
    size_t n = rb__put_close(out, 0xFFFF, NULL);
    uint16_t code;
    const uint8_t *reason;
    size_t reason_len;
    assert_int_equal(rb__close_parse(out + 4, n - 4, &code, &reason, &reason_len), 0);
    assert_int_equal(code, 0xFFFF);
}

static void test_close_reason_truncated(void **state)
{
    (void)state;
    char reason[200];
    uint8_t out[RB__CONTROL_MAX + 64];
    uint16_t code;
    const uint8_t *r;
    size_t rlen;

    memset(reason, 'a', 150);
    reason[150] = 0;
    size_t n = rb__put_close(out, 1, reason);
    assert_int_equal(n, RB__CONTROL_MAX);
    accept_header(out, n, RB_FRAME_CLOSE);
    assert_int_equal(rb__close_parse(out + 4, n - 4, &code, &r, &rlen), 0);
    assert_int_equal(rlen, RB__CLOSE_REASON_MAX);

    /* 122 ASCII bytes then a 2-byte character straddling the limit: the character is dropped. */
    memset(reason, 'a', 122);
    memcpy(reason + 122, "\xC3\xA9", 3);
    n = rb__put_close(out, 1, reason);
    assert_int_equal(n, RB_FRAME_HEADER_LEN + 2 + 122);
    assert_int_equal(rb__close_parse(out + 4, n - 4, &code, &r, &rlen), 0);

    /* 121 bytes then a 4-byte character: cut to 121. */
    memset(reason, 'a', 121);
    memcpy(reason + 121, "\xF0\x9F\x92\x93", 5);
    n = rb__put_close(out, 1, reason);
    assert_int_equal(n, RB_FRAME_HEADER_LEN + 2 + 121);
    assert_int_equal(rb__close_parse(out + 4, n - 4, &code, &r, &rlen), 0);

    /* Exactly 123 bytes ending in a whole character is kept whole. */
    memset(reason, 'a', 120);
    memcpy(reason + 120, "\xE2\x82\xAC", 4);
    n = rb__put_close(out, 1, reason);
    assert_int_equal(n, RB__CONTROL_MAX);
    assert_int_equal(rb__close_parse(out + 4, n - 4, &code, &r, &rlen), 0);
    assert_memory_equal(r + 120, "\xE2\x82\xAC", 3);
}

static void test_roundtrip_data(void **state)
{
    (void)state;
    static uint8_t payload[MAX_FRAME];
    static uint8_t out[RB_FRAME_HEADER_LEN + MAX_FRAME];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    static const uint16_t lens[] = {0, 1, 255, 256, MAX_FRAME - 1, MAX_FRAME};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t n = rb__put_data(out, payload, lens[k]);
        assert_int_equal(n, RB_FRAME_HEADER_LEN + lens[k]);
        accept_header(out, n, RB_FRAME_DATA);
        if (lens[k])
            assert_memory_equal(out + 4, payload, lens[k]);
    }
}

/* ---- header validation over every length of every type ---- */

static int expected_check(unsigned type, unsigned len, uint32_t max_frame)
{
    switch (type) {
    case RB_FRAME_HELLO:
        return len >= 12 && len <= 332 ? 0 : -EPROTO; /* 76 without a token */
    case RB_FRAME_WELCOME:
        return len == 20 ? 0 : -EPROTO;
    case RB_FRAME_PING:
    case RB_FRAME_PONG:
        return len == 8 ? 0 : -EPROTO;
    case RB_FRAME_DATA:
        return len <= max_frame ? 0 : -EMSGSIZE;
    case RB_FRAME_CLOSE:
        return len >= 2 && len <= 125 ? 0 : -EPROTO;
    default:
        return -EPROTO;
    }
}

static void test_check_every_type_and_length(void **state)
{
    (void)state;
    static const uint32_t max_frames[] = {0, 1, MAX_FRAME, 65534, 65535, UINT32_MAX};
    for (size_t m = 0; m < sizeof(max_frames) / sizeof(max_frames[0]); m++) {
        for (unsigned type = 0; type < 256; type++) {
            /* Every length for the known types; a sample for the unknown ones. */
            unsigned step = type >= 1 && type <= 6 ? 1 : 257;
            for (unsigned len = 0; len <= 0xFFFF; len += step) {
                struct rb__frame_hdr h = {0};
                int rc = check((uint8_t)type, (uint16_t)len, max_frames[m], &h);
                int want = expected_check(type, len, max_frames[m]);
                if (rc != want)
                    fail_msg("type %u len %u max_frame %u: got %d want %d", type, len,
                             max_frames[m], rc, want);
                if (rc == 0) {
                    assert_int_equal(h.type, type);
                    assert_int_equal(h.len, len);
                }
            }
        }
    }
}

static void test_check_named_cases(void **state)
{
    (void)state;
    struct rb__frame_hdr h;
    assert_int_equal(check(0x00, 0, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(0x07, 0, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(0xFF, 8, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_PING, 7, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_PING, 9, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_PONG, 0, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_HELLO, 11, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_HELLO, 333, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_WELCOME, 19, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_WELCOME, 21, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_CLOSE, 1, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_CLOSE, 126, MAX_FRAME, &h), -EPROTO);
    assert_int_equal(check(RB_FRAME_DATA, MAX_FRAME + 1, MAX_FRAME, &h), -EMSGSIZE);
    assert_int_equal(check(RB_FRAME_DATA, 0xFFFF, MAX_FRAME, &h), -EMSGSIZE);
    assert_int_equal(check(RB_FRAME_DATA, MAX_FRAME, MAX_FRAME, &h), 0);
    assert_int_equal(check(RB_FRAME_DATA, 0, MAX_FRAME, &h), 0);
    /* A large DATA (larger than any receive buffer) is judged on its header alone. */
    assert_int_equal(check(RB_FRAME_DATA, 60000, 65535, &h), 0);
    assert_int_equal(h.len, 60000);
}

static void test_check_ignores_flags(void **state)
{
    (void)state;
    struct rb__frame_hdr h;
    for (unsigned flags = 0; flags < 256; flags++) {
        uint8_t hdr[4] = {RB_FRAME_PING, (uint8_t)flags, 0, 8};
        assert_int_equal(rb__frame_check(hdr, MAX_FRAME, &h), 0);
        assert_int_equal(h.flags, flags);
        assert_int_equal(h.type, RB_FRAME_PING);
        assert_int_equal(h.len, 8);
    }
}

/* ---- payload parsers: every truncated length and every invalid field ---- */

static void valid_hello(uint8_t *p)
{
    static const uint8_t v[] = {1, 0, 0, 0, 0, 0, 0x27, 0x10, 0, 0, 0x75, 0x30};
    memcpy(p, v, sizeof(v));
    memset(p + 12, 'c', RB__HELLO_MAX - 12 + 8);
}

static void test_hello_every_length(void **state)
{
    (void)state;
    uint8_t p[RB__HELLO_MAX + 8];
    valid_hello(p);
    for (size_t len = 0; len <= sizeof(p); len++) {
        struct rb__hello h;
        int rc = rb__hello_parse(p, len, &h);
        if (len >= RB__HELLO_MIN && len <= RB__HELLO_PLAIN_MAX) {
            assert_int_equal(rc, 0);
            assert_int_equal(h.client_id_len, len - 12);
            assert_int_equal(h.interval_ms, 10000);
            assert_int_equal(h.timeout_ms, 30000);
        } else {
            assert_int_equal(rc, -EPROTO);
        }
    }
}

static void test_hello_invalid_fields(void **state)
{
    (void)state;
    uint8_t p[RB__HELLO_MAX + 8];
    struct rb__hello h;
    for (unsigned v = 0; v < 256; v++) {
        valid_hello(p);
        p[0] = (uint8_t)v;
        assert_int_equal(rb__hello_parse(p, 12, &h), v == 1 ? 0 : -EPROTO);
    }
    for (unsigned m = 0; m < 256; m++) {
        valid_hello(p);
        p[1] = (uint8_t)m;
        int rc = rb__hello_parse(p, 20, &h);
        assert_int_equal(rc, m <= 3 ? 0 : -EPROTO); /* 3: kernel mode */
        if (rc == 0)
            assert_int_equal(h.mode, m);
    }
    for (int byte = 2; byte <= 3; byte++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            valid_hello(p);
            p[byte] = (uint8_t)(1u << bit);
            assert_int_equal(rb__hello_parse(p, 12, &h), -EPROTO);
        }
    }
}

static void valid_welcome(uint8_t *p)
{
    static const uint8_t v[] = {1, 1, 0, 0, 0, 0, 0x03, 0xE8, 0, 0, 0x0B, 0xB8,
                                0, 0, 0, 0, 0, 0, 0,    42,   9, 9, 9,    9};
    memcpy(p, v, sizeof(v));
}

static void test_welcome_every_length_and_field(void **state)
{
    (void)state;
    uint8_t p[24];
    struct rb__welcome w;
    valid_welcome(p);
    for (size_t len = 0; len <= sizeof(p); len++) {
        int rc = rb__welcome_parse(p, len, &w);
        assert_int_equal(rc, len == RB__WELCOME_LEN ? 0 : -EPROTO);
        if (rc == 0) {
            assert_int_equal(w.conn_id, 42);
            assert_int_equal(w.interval_ms, 1000);
            assert_int_equal(w.timeout_ms, 3000);
            assert_int_equal(w.mode, RB_MODE_CLIENT);
        }
    }
    for (unsigned v = 0; v < 256; v++) {
        valid_welcome(p);
        p[0] = (uint8_t)v;
        assert_int_equal(rb__welcome_parse(p, 20, &w), v == 1 ? 0 : -EPROTO);
        valid_welcome(p);
        p[1] = (uint8_t)v;
        assert_int_equal(rb__welcome_parse(p, 20, &w), v <= 3 ? 0 : -EPROTO);
    }
    valid_welcome(p);
    p[2] = 0x80;
    assert_int_equal(rb__welcome_parse(p, 20, &w), -EPROTO);
    valid_welcome(p);
    p[3] = 0x01;
    assert_int_equal(rb__welcome_parse(p, 20, &w), -EPROTO);
}

static void test_close_every_length(void **state)
{
    (void)state;
    uint8_t p[RB__CLOSE_MIN + RB__CLOSE_REASON_MAX + 8];
    p[0] = 0;
    p[1] = 3;
    memset(p + 2, 'r', sizeof(p) - 2);
    for (size_t len = 0; len <= sizeof(p); len++) {
        uint16_t code = 0;
        const uint8_t *reason = NULL;
        size_t reason_len = 0;
        int rc = rb__close_parse(p, len, &code, &reason, &reason_len);
        if (len >= 2 && len <= 125) {
            assert_int_equal(rc, 0);
            assert_int_equal(code, 3);
            assert_ptr_equal(reason, p + 2);
            assert_int_equal(reason_len, len - 2);
        } else {
            assert_int_equal(rc, -EPROTO);
        }
    }
}

static void test_close_invalid_reason(void **state)
{
    (void)state;
    static const char *bad[] = {"\xC0\x80", "ok\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF",
                                "trail\xC3"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        uint8_t p[64] = {0, 1};
        size_t n = strlen(bad[k]);
        memcpy(p + 2, bad[k], n);
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        assert_int_equal(rb__close_parse(p, 2 + n, &code, &reason, &reason_len), -EPROTO);
        /* The same bytes minus the offending tail are accepted only where that leaves UTF-8. */
    }
    /* An embedded NUL is valid UTF-8. */
    uint8_t p[] = {0, 1, 'a', 0, 'b'};
    uint16_t code;
    const uint8_t *reason;
    size_t reason_len;
    assert_int_equal(rb__close_parse(p, sizeof(p), &code, &reason, &reason_len), 0);
    assert_int_equal(reason_len, 3);
}

/* ---- UTF-8 ---- */

static void test_utf8_named_cases(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        int ok;
    } cases[] = {
        {"", 0, 1},
        {"hello", 5, 1},
        {"\xC3\xA9", 2, 1},         /* U+00E9 */
        {"\xC2\x80", 2, 1},         /* U+0080, smallest 2-byte */
        {"\xDF\xBF", 2, 1},         /* U+07FF */
        {"\xE0\xA0\x80", 3, 1},     /* U+0800, smallest 3-byte */
        {"\xE2\x82\xAC", 3, 1},     /* U+20AC */
        {"\xED\x9F\xBF", 3, 1},     /* U+D7FF, just below the surrogates */
        {"\xEE\x80\x80", 3, 1},     /* U+E000, just above */
        {"\xEF\xBF\xBF", 3, 1},     /* U+FFFF */
        {"\xF0\x90\x80\x80", 4, 1}, /* U+10000 */
        {"\xF4\x8F\xBF\xBF", 4, 1}, /* U+10FFFF */
        {"\x00", 1, 1},
        {"\x80", 1, 0}, /* lone continuation */
        {"\xBF", 1, 0},
        {"\xC0\x80", 2, 0},                 /* overlong NUL */
        {"\xC1\xBF", 2, 0},                 /* overlong U+007F */
        {"\xE0\x80\x80", 3, 0},             /* overlong */
        {"\xE0\x9F\xBF", 3, 0},             /* overlong U+07FF */
        {"\xF0\x80\x80\x80", 4, 0},         /* overlong */
        {"\xF0\x8F\xBF\xBF", 4, 0},         /* overlong U+FFFF */
        {"\xED\xA0\x80", 3, 0},             /* U+D800 */
        {"\xED\xBF\xBF", 3, 0},             /* U+DFFF */
        {"\xED\xA0\x80\xED\xB0\x80", 6, 0}, /* CESU-8 pair */
        {"\xF4\x90\x80\x80", 4, 0},         /* U+110000 */
        {"\xF5\x80\x80\x80", 4, 0},
        {"\xF8\x88\x80\x80\x80", 5, 0}, /* 5-byte form */
        {"\xFE", 1, 0},
        {"\xFF", 1, 0},
        {"\xC3", 1, 0}, /* truncated */
        {"\xE2\x82", 2, 0},
        {"\xF0\x90\x80", 3, 0},
        {"\xC3\x28", 2, 0}, /* bad continuation */
        {"\xE2\x28\xA1", 3, 0},
        {"\xE2\x82\x28", 3, 0},
        {"\xF0\x90\x28\xBC", 4, 0},
        {"\xF0\x90\x80\xC0", 4, 0},
        {"a\xC3\xA9z", 4, 1},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int got = rb__utf8_valid((const uint8_t *)cases[k].s, cases[k].len);
        if (!!got != cases[k].ok)
            fail_msg("case %zu: got %d want %d", k, got, cases[k].ok);
    }
}

/* A slow, obviously-correct decoder to compare the fast validator against. */
static int ref_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n;
    }
    return 1;
}

static void test_utf8_exhaustive_vs_reference(void **state)
{
    (void)state;
    uint8_t b[4];
    for (unsigned x = 0; x < (1u << 24); x++) {
        b[0] = (uint8_t)(x >> 16);
        b[1] = (uint8_t)(x >> 8);
        b[2] = (uint8_t)x;
        if (x < 256 && !!rb__utf8_valid(b + 2, 1) != ref_utf8_valid(b + 2, 1))
            fail_msg("1-byte %02x", b[2]);
        if (x < 65536 && !!rb__utf8_valid(b + 1, 2) != ref_utf8_valid(b + 1, 2))
            fail_msg("2-byte %02x %02x", b[1], b[2]);
        if (!!rb__utf8_valid(b, 3) != ref_utf8_valid(b, 3))
            fail_msg("3-byte %02x %02x %02x", b[0], b[1], b[2]);
    }
    static const uint8_t tails[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0xBF, 0xC0, 0xFF};
    for (unsigned lead = 0xE0; lead <= 0xFF; lead++)
        for (unsigned second = 0; second < 256; second++)
            for (size_t t3 = 0; t3 < sizeof(tails); t3++)
                for (size_t t4 = 0; t4 < sizeof(tails); t4++) {
                    b[0] = (uint8_t)lead, b[1] = (uint8_t)second;
                    b[2] = tails[t3], b[3] = tails[t4];
                    if (!!rb__utf8_valid(b, 4) != ref_utf8_valid(b, 4))
                        fail_msg("4-byte %02x %02x %02x %02x", b[0], b[1], b[2], b[3]);
                }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_bytes),
        cmocka_unit_test(test_ping_pong_bytes),
        cmocka_unit_test(test_hello_bytes),
        cmocka_unit_test(test_welcome_bytes),
        cmocka_unit_test(test_close_bytes),
        cmocka_unit_test(test_data_bytes),
        cmocka_unit_test(test_get_helpers),
        cmocka_unit_test(test_roundtrip_hello),
        cmocka_unit_test(test_roundtrip_hello_token),
        cmocka_unit_test(test_hello_token_every_layout),
        cmocka_unit_test(test_roundtrip_welcome),
        cmocka_unit_test(test_roundtrip_ping_pong),
        cmocka_unit_test(test_roundtrip_close),
        cmocka_unit_test(test_close_reason_truncated),
        cmocka_unit_test(test_roundtrip_data),
        cmocka_unit_test(test_check_every_type_and_length),
        cmocka_unit_test(test_check_named_cases),
        cmocka_unit_test(test_check_ignores_flags),
        cmocka_unit_test(test_hello_every_length),
        cmocka_unit_test(test_hello_invalid_fields),
        cmocka_unit_test(test_welcome_every_length_and_field),
        cmocka_unit_test(test_close_every_length),
        cmocka_unit_test(test_close_invalid_reason),
        cmocka_unit_test(test_utf8_named_cases),
        cmocka_unit_test(test_utf8_exhaustive_vs_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
