/* fuzz_common.h — helpers shared by the fuzz targets: a reference UTF-8 decoder. */
#ifndef RB_FUZZ_COMMON_H
#define RB_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Abort (a finding for libFuzzer) with a message, even in builds without assert(). */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Written independently of proto.c (decode, then judge the code point) so that the two disagree
 * if either has a bug. */
static inline int fuzz_ref_utf8_valid(const uint8_t *p, size_t len)
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
        if (len - i < n)
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

/* Written from docs/protocol.md, not from proto.c: whether a HELLO payload is valid (version 1,
 * mode 0-3: server, client, silent, kernel). Without
 * the token flag the id is the rest (0..64 bytes); with it, u8 id length 0..64, the id, then
 * 1..255 bytes of token. Sets *tok to whether the token layout is in use. */
static inline int fuzz_ref_hello_valid(const uint8_t *p, size_t len, int *tok)
{
    int head_ok = len >= 12 && p[0] == 1 && p[1] <= 3 && p[2] == 0 && (p[3] & 0xFE) == 0;
    *tok = head_ok && (p[3] & 1);
    if (!head_ok)
        return 0;
    if (!*tok)
        return len <= 76;
    return len >= 13 && p[12] <= 64 && len > 13u + p[12] && len - 13u - p[12] <= 255;
}

#endif
