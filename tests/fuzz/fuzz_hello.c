/* fuzz_hello.c — libFuzzer target: HELLO, WELCOME and CLOSE payload parsers on raw bytes. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Each parser gets the whole input as a payload, in a buffer of exactly that size (libFuzzer's),
 * whatever its length: parsers must refuse wrong lengths themselves, without reading past the end.
 */

static void fuzz_hello(const uint8_t *p, size_t len, uint8_t *enc)
{
    struct rb__hello h;
    int rc = rb__hello_parse(p, len, &h);
    int tok;
    int valid = fuzz_ref_hello_valid(p, len, &tok);
    FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
    if (rc != 0)
        return;
    FUZZ_CHECK(h.version == 1 && h.mode <= 3);
    FUZZ_CHECK(h.interval_ms == rb__get_u32(p + 4) && h.timeout_ms == rb__get_u32(p + 8));
    if (tok) {
        FUZZ_CHECK(h.client_id == p + 13 && h.client_id_len == p[12]);
        FUZZ_CHECK(h.token == p + 13 + p[12] && h.token_len == len - 13 - p[12]);
    } else {
        FUZZ_CHECK(h.client_id == p + 12 && h.client_id_len == len - 12 && h.token_len == 0);
    }
    size_t n = rb__put_hello(enc, &h);
    FUZZ_CHECK(n == RB_FRAME_HEADER_LEN + len);
    FUZZ_CHECK(memcmp(enc + RB_FRAME_HEADER_LEN, p, len) == 0);
    struct rb__frame_hdr fh;
    FUZZ_CHECK(rb__frame_check(enc, 0, &fh) == 0 && fh.len == len);
    struct rb__hello again;
    FUZZ_CHECK(rb__hello_parse(enc + RB_FRAME_HEADER_LEN, len, &again) == 0);
    FUZZ_CHECK(again.mode == h.mode && again.interval_ms == h.interval_ms);
    FUZZ_CHECK(again.timeout_ms == h.timeout_ms && again.client_id_len == h.client_id_len);
    FUZZ_CHECK(again.token_len == h.token_len);
}

static void fuzz_welcome(const uint8_t *p, size_t len, uint8_t *enc)
{
    struct rb__welcome w;
    int rc = rb__welcome_parse(p, len, &w);
    int valid = len == 20 && p[0] == 1 && p[1] <= 3 && p[2] == 0 && p[3] == 0;
    FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
    if (rc != 0)
        return;
    FUZZ_CHECK(w.conn_id == rb__get_u64(p + 12));
    size_t n = rb__put_welcome(enc, &w);
    FUZZ_CHECK(n == RB_FRAME_HEADER_LEN + len);
    FUZZ_CHECK(memcmp(enc + RB_FRAME_HEADER_LEN, p, len) == 0);
}

static void fuzz_close(const uint8_t *p, size_t len, uint8_t *enc)
{
    uint16_t code;
    const uint8_t *reason;
    size_t reason_len;
    int rc = rb__close_parse(p, len, &code, &reason, &reason_len);
    int valid = len >= 2 && len <= 125 && fuzz_ref_utf8_valid(p + 2, len - 2);
    FUZZ_CHECK(rc == (valid ? 0 : -EPROTO));
    FUZZ_CHECK(!!rb__utf8_valid(p, len) == fuzz_ref_utf8_valid(p, len));
    if (rc != 0)
        return;
    FUZZ_CHECK(code == rb__get_u16(p) && reason == p + 2 && reason_len == len - 2);
    char text[RB__CLOSE_REASON_MAX + 1];
    memcpy(text, reason, reason_len);
    text[reason_len] = 0;
    if (strlen(text) != reason_len)
        return; /* an embedded NUL: the C-string encoder cannot carry it */
    size_t n = rb__put_close(enc, code, text);
    FUZZ_CHECK(n == RB_FRAME_HEADER_LEN + len);
    FUZZ_CHECK(memcmp(enc + RB_FRAME_HEADER_LEN, p, len) == 0);
    uint16_t code2;
    FUZZ_CHECK(rb__close_parse(enc + RB_FRAME_HEADER_LEN, len, &code2, &reason, &reason_len) == 0);
    FUZZ_CHECK(code2 == code);
}

/* Whatever the input, put_close must produce a frame the peer accepts (cut on a char boundary). */
static void fuzz_close_encode(const uint8_t *p, size_t len, uint8_t *enc)
{
    char *text = malloc(len + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, p, len);
    text[len] = 0;
    size_t slen = strlen(text);
    if (fuzz_ref_utf8_valid((const uint8_t *)text, slen)) {
        size_t n = rb__put_close(enc, 1, text);
        struct rb__frame_hdr fh;
        FUZZ_CHECK(rb__frame_check(enc, 0, &fh) == 0);
        FUZZ_CHECK(n == RB_FRAME_HEADER_LEN + (size_t)fh.len);
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        FUZZ_CHECK(
            rb__close_parse(enc + RB_FRAME_HEADER_LEN, fh.len, &code, &reason, &reason_len) == 0);
        FUZZ_CHECK(reason_len <= slen && memcmp(reason, text, reason_len) == 0);
        /* Nothing whole was dropped: at most one partial character (<= 3 bytes) was cut. */
        FUZZ_CHECK(slen <= RB__CLOSE_REASON_MAX ? reason_len == slen
                                                : reason_len + 3 >= RB__CLOSE_REASON_MAX);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t enc[RB_FRAME_HEADER_LEN + RB__HELLO_MAX + RB__CONTROL_MAX];
    if (size < 1)
        return 0;
    /* The first byte selects the parser so the fuzzer can focus; the rest is the payload. */
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    uint8_t *copy = malloc(len ? len : 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, p, len);
    switch (data[0] & 3) {
    case 0:
        fuzz_hello(copy, len, enc);
        break;
    case 1:
        fuzz_welcome(copy, len, enc);
        break;
    case 2:
        fuzz_close(copy, len, enc);
        break;
    default:
        fuzz_close_encode(copy, len, enc);
        break;
    }
    free(copy);
    return 0;
}
