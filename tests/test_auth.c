/* test_auth.c — client-id tokens: key files, a known answer, expiry, forgery, rotation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringbeat.h"

#define KEY_A "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define KEY_B "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static struct rb_auth *load(const char *text)
{
    char path[] = "/tmp/rb_test_auth_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct rb_auth *a = NULL;
    int rc = rb_auth_load(path, &a);
    unlink(path);
    return rc == 0 ? a : NULL;
}

static int load_rc(const char *text)
{
    char path[] = "/tmp/rb_test_auth_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct rb_auth *a = NULL;
    int rc = rb_auth_load(path, &a);
    unlink(path);
    rb_auth_free(a);
    return rc;
}

/* Computed independently (Python's hmac module) from the definition in docs/presence.md. */
static void test_known_answer(void **state)
{
    (void)state;
    struct rb_auth *a = load(KEY_A "\n");
    assert_non_null(a);
    char tok[RB_TOKEN_MAX + 1];
    int n = rb_auth_mint(a, "alice", 5, 1700000000, tok, sizeof(tok));
    assert_string_equal(tok, "1700000000.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs");
    assert_int_equal(n, (int)strlen(tok));
    assert_int_equal(rb_auth_verify(a, "alice", 5, tok, (size_t)n, 1700000000), RB_AUTH_OK);
    assert_int_equal(rb_auth_verify(a, "alice", 5, tok, (size_t)n, 1600000000), RB_AUTH_OK);
    assert_int_equal(rb_auth_verify(a, "alice", 5, tok, (size_t)n, 1700000001), RB_AUTH_EXPIRED);
    /* The MAC binds the id: someone else's id with this token is a forgery. */
    assert_int_equal(rb_auth_verify(a, "alicf", 5, tok, (size_t)n, 1), RB_AUTH_FORGED);
    assert_int_equal(rb_auth_verify(a, "alic", 4, tok, (size_t)n, 1), RB_AUTH_FORGED);
    /* ... and the expiry: pushing it later breaks the MAC. */
    char later[RB_TOKEN_MAX + 1];
    memcpy(later, tok, (size_t)n + 1);
    later[9] = '1';
    assert_int_equal(rb_auth_verify(a, "alice", 5, later, (size_t)n, 1), RB_AUTH_FORGED);
    assert_int_equal(rb_auth_mint(a, "alice", 5, 1, tok, RB_TOKEN_MAX), -ENOSPC);
    rb_auth_free(a);
}

static void test_malformed_and_missing(void **state)
{
    (void)state;
    struct rb_auth *a = load(KEY_A "\n");
    char tok[RB_TOKEN_MAX + 1];
    int n = rb_auth_mint(a, "bob", 3, 4000000000u, tok, sizeof(tok));
    assert_true(n > 0);
    assert_int_equal(rb_auth_verify(a, "bob", 3, NULL, 0, 1), RB_AUTH_MISSING);
    assert_int_equal(rb_auth_verify(a, "bob", 3, tok, 0, 1), RB_AUTH_MISSING);
    /* Every truncation, and one byte more, is malformed (the MAC has a fixed length). */
    for (int len = 1; len < n; len++)
        assert_int_equal(rb_auth_verify(a, "bob", 3, tok, (size_t)len, 1), RB_AUTH_MALFORMED);
    char longer[RB_TOKEN_MAX + 2];
    memcpy(longer, tok, (size_t)n);
    longer[n] = 'A';
    assert_int_equal(rb_auth_verify(a, "bob", 3, longer, (size_t)n + 1, 1), RB_AUTH_MALFORMED);
    static const char *const bad[] = {
        ".kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs",           /* no expiry */
        "01700000000.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHC", /* leading zero */
        "17000x0000.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs", /* not decimal */
        "1700000000.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHC=", /* padding */
        "1700000000.kTzQQD_7T7qBJTux0j35N0bosR+ucm7i-eHwK1iYHCs", /* base64, not base64url */
        "1700000000kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs",  /* no dot */
        "99999999999999999999.kTzQQD_7T7qBJTux0j35N0bosR-ucm7i-eHwK1iYHCs", /* > 2^64 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rb_auth_verify(a, "alice", 5, bad[i], strlen(bad[i]), 1),
                         RB_AUTH_MALFORMED);
    /* A NUL inside. */
    char withnul[RB_TOKEN_MAX + 1];
    memcpy(withnul, tok, (size_t)n + 1);
    withnul[n - 3] = '\0';
    assert_int_equal(rb_auth_verify(a, "bob", 3, withnul, (size_t)n, 1), RB_AUTH_MALFORMED);
    /* The last character carries 2 unused bits: another spelling of the same MAC is refused. */
    char alt[RB_TOKEN_MAX + 1];
    memcpy(alt, tok, (size_t)n + 1);
    alt[n - 1] = (char)(alt[n - 1] == 'A' ? 'B' : 'A');
    assert_int_not_equal(rb_auth_verify(a, "bob", 3, alt, (size_t)n, 1), RB_AUTH_OK);
    rb_auth_free(a);
}

/* A new key goes first, the previous one stays below it: both kinds of tokens verify. */
static void test_rotation(void **state)
{
    (void)state;
    struct rb_auth *old = load(KEY_A "\n"), *newer = load(KEY_B "\n");
    struct rb_auth *both = load("# rotated 2026-12-01\n" KEY_B "\n\n  " KEY_A "  \n");
    assert_non_null(both);
    assert_int_equal(rb_auth_key_count(both), 2);
    char t_old[RB_TOKEN_MAX + 1], t_new[RB_TOKEN_MAX + 1], t_both[RB_TOKEN_MAX + 1];
    int n_old = rb_auth_mint(old, "c", 1, 4000000000u, t_old, sizeof(t_old));
    int n_new = rb_auth_mint(newer, "c", 1, 4000000000u, t_new, sizeof(t_new));
    int n_both = rb_auth_mint(both, "c", 1, 4000000000u, t_both, sizeof(t_both));
    assert_string_equal(t_both, t_new); /* the first key mints */
    assert_int_equal(rb_auth_verify(both, "c", 1, t_old, (size_t)n_old, 1), RB_AUTH_OK);
    assert_int_equal(rb_auth_verify(both, "c", 1, t_new, (size_t)n_new, 1), RB_AUTH_OK);
    assert_int_equal(rb_auth_verify(old, "c", 1, t_new, (size_t)n_new, 1), RB_AUTH_FORGED);
    assert_int_equal(rb_auth_verify(newer, "c", 1, t_old, (size_t)n_old, 1), RB_AUTH_FORGED);
    (void)n_both;
    rb_auth_free(old);
    rb_auth_free(newer);
    rb_auth_free(both);
}

static void test_key_files(void **state)
{
    (void)state;
    assert_int_equal(load_rc(""), -EINVAL);                                 /* no key */
    assert_int_equal(load_rc("# only a comment\n"), -EINVAL);               /* no key */
    assert_int_equal(load_rc("00112233445566778899aabbccddee\n"), -EINVAL); /* 15 bytes */
    assert_int_equal(load_rc("00112233445566778899aabbccddeeff\n"), 0);     /* 16 bytes */
    assert_int_equal(load_rc(KEY_A "0\n"), -EINVAL);                        /* odd length */
    assert_int_equal(load_rc(KEY_A "\nnot hex at all, not a key\n"), -EINVAL);
    assert_int_equal(load_rc(KEY_A), 0); /* no final newline */
    assert_int_equal(load_rc(KEY_A "\r\n"), 0);
    struct rb_auth *a = NULL;
    assert_int_equal(rb_auth_load("/nonexistent/keys", &a), -ENOENT);
    assert_string_equal(rb_auth_result_name(RB_AUTH_FORGED), "forged");
    assert_string_equal(rb_auth_result_name(RB_AUTH_EXPIRED), "expired");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_malformed_and_missing),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_key_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
