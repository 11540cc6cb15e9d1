/* fuzz_token.c — libFuzzer target: the client-id token checker (engine/auth.c) on raw bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "ringbeat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rb_auth *keys;

/* The fuzzer's input: byte 0 the client id length (mod 65), then the id, then the token. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys) {
        char path[] = "/tmp/rb_fuzz_token_XXXXXX";
        int fd = mkstemp(path);
        const char *k = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        FUZZ_CHECK(fd >= 0 && write(fd, k, strlen(k)) == (ssize_t)strlen(k));
        close(fd);
        FUZZ_CHECK(rb_auth_load(path, &keys) == 0);
        unlink(path);
    }
    if (size < 1)
        return 0;
    size_t id_len = data[0] % (RB_CLIENT_ID_MAX + 1);
    if (size - 1 < id_len)
        return 0;
    const char *id = (const char *)data + 1, *tok = id + id_len;
    size_t tok_len = size - 1 - id_len;
    enum rb_auth_result r = rb_auth_verify(keys, id, id_len, tok, tok_len, 1700000000);
    FUZZ_CHECK(r >= RB_AUTH_OK && r <= RB_AUTH_FORGED);
    if (r == RB_AUTH_OK || r == RB_AUTH_EXPIRED) {
        /* Only the token we would mint for this id and expiry verifies: re-mint and compare. */
        const char *dot = memchr(tok, '.', tok_len);
        FUZZ_CHECK(dot != NULL);
        unsigned long long exp = 0;
        for (const char *c = tok; c < dot; c++)
            exp = exp * 10 + (unsigned)(*c - '0');
        char again[RB_TOKEN_MAX + 1];
        int n = rb_auth_mint(keys, id, id_len, exp, again, sizeof(again));
        FUZZ_CHECK(n > 0 && (size_t)n == tok_len && memcmp(again, tok, tok_len) == 0);
    }
    /* A token minted for this id always verifies, and never for a different id. */
    char mine[RB_TOKEN_MAX + 1];
    int n = rb_auth_mint(keys, id, id_len, 1800000000, mine, sizeof(mine));
    FUZZ_CHECK(n > 0);
    FUZZ_CHECK(rb_auth_verify(keys, id, id_len, mine, (size_t)n, 1700000000) == RB_AUTH_OK);
    if (id_len > 0) {
        FUZZ_CHECK(rb_auth_verify(keys, id, id_len - 1, mine, (size_t)n, 1700000000) ==
                   RB_AUTH_FORGED);
    }
    return 0;
}
