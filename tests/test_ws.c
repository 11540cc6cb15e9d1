/* test_ws.c — the WebSocket grammar on RFC 6455's own examples, fed at every split point. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"
#include "ws.h"

struct got {
    struct rb__ws_split *split;
    int n;
    uint8_t op[8];
    uint8_t data[8][300];
    uint32_t len[8];
};

static struct rb__ws_split **slot(void *ctx, bool create)
{
    (void)create;
    return &((struct got *)ctx)->split;
}

static int on_frame(void *ctx, uint8_t op, const uint8_t *p, uint32_t len)
{
    struct got *g = ctx;
    assert_true(g->n < 8);
    g->op[g->n] = op;
    g->len[g->n] = len;
    if (p && len <= sizeof(g->data[0]))
        memcpy(g->data[g->n], p, len);
    g->n++;
    return 0;
}

/* Feeds `in` in two pieces cut at every point (and whole): the same events each time. */
static void feed_split(const uint8_t *in, size_t n, bool from_client, int want_rc,
                       void (*check)(const struct got *))
{
    for (size_t cut = 0; cut <= n; cut++) {
        struct got g = {0};
        const struct rb__ws_rx rx = {.from_client = from_client,
                                     .max_message = 4096,
                                     .slot = slot,
                                     .frame = on_frame,
                                     .ctx = &g};
        uint8_t *a = malloc(cut + 1), *b = malloc(n - cut + 1);
        memcpy(a, in, cut);
        memcpy(b, in + cut, n - cut);
        int rc = rb__ws_feed(&rx, a, cut);
        if (rc == 0)
            rc = rb__ws_feed(&rx, b, n - cut);
        assert_int_equal(rc, want_rc);
        if (rc == 0) {
            check(&g);
            assert_null(g.split); /* nothing is kept between frames */
        }
        rb__ws_split_free(g.split);
        free(a);
        free(b);
    }
}

static void check_hello(const struct got *g)
{
    assert_int_equal(g->n, 1);
    assert_int_equal(g->op[0], RB__WS_OP_TEXT);
    assert_int_equal(g->len[0], 5);
    assert_memory_equal(g->data[0], "Hello", 5);
}

/* RFC 6455 5.7: a single-frame masked text message and an unmasked one. */
static void test_rfc_single_frames(void **state)
{
    (void)state;
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    static const uint8_t unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    feed_split(masked, sizeof(masked), true, 0, check_hello);
    feed_split(unmasked, sizeof(unmasked), false, 0, check_hello);
    /* Each on the wrong side is a protocol error. */
    feed_split(masked, sizeof(masked), false, -EPROTO, check_hello);
    feed_split(unmasked, sizeof(unmasked), true, -EPROTO, check_hello);
}

static void check_fragments(const struct got *g)
{
    assert_int_equal(g->n, 3);
    assert_int_equal(g->op[0], RB__WS_OP_CONT); /* "Hel": a fragment, a sign of life */
    assert_int_equal(g->op[1], RB__WS_OP_PING); /* a control frame between fragments */
    assert_memory_equal(g->data[1], "Hello", 5);
    assert_int_equal(g->op[2], RB__WS_OP_TEXT);
    assert_int_equal(g->len[2], 5);
    assert_memory_equal(g->data[2], "Hello", 5);
}

/* RFC 6455 5.7: a fragmented unmasked text message, with the unmasked Ping example between. */
static void test_rfc_fragments_and_ping(void **state)
{
    (void)state;
    static const uint8_t in[] = {0x01, 0x03, 0x48, 0x65, 0x6c,             /* "Hel" */
                                 0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f, /* Ping */
                                 0x80, 0x02, 0x6c, 0x6f};                  /* "lo" */
    feed_split(in, sizeof(in), false, 0, check_fragments);
}

static void check_256(const struct got *g)
{
    assert_int_equal(g->n, 1);
    assert_int_equal(g->op[0], RB__WS_OP_BINARY);
    assert_int_equal(g->len[0], 256);
    for (int i = 0; i < 256; i++)
        assert_int_equal(g->data[0][i], (uint8_t)i);
}

/* RFC 6455 5.7: 256 bytes binary in a single unmasked frame (16-bit length); and masked by the
 * engine's own encoder. */
static void test_rfc_256_bytes(void **state)
{
    (void)state;
    uint8_t in[4 + 256], out[14 + 256], payload[256];
    in[0] = 0x82, in[1] = 0x7E, in[2] = 0x01, in[3] = 0x00;
    for (int i = 0; i < 256; i++)
        in[4 + i] = payload[i] = (uint8_t)i;
    feed_split(in, sizeof(in), false, 0, check_256);
    static const uint8_t key[4] = {1, 2, 3, 4};
    size_t n = rb__ws_put_frame(out, RB__WS_OP_BINARY, payload, 256, key);
    assert_int_equal(n, 8 + 256);
    feed_split(out, n, true, 0, check_256);
}

static void check_none(const struct got *g)
{
    (void)g;
}

static void test_refusals_from_the_header(void **state)
{
    (void)state;
    /* 1009 from the header alone: 4097 bytes announced, none sent. */
    static const uint8_t big[] = {0x82, 0xFE, 0x10, 0x01, 0, 0, 0, 0};
    feed_split(big, sizeof(big), true, -EMSGSIZE, check_none);
    static const uint8_t top[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    feed_split(top, sizeof(top), true, -EPROTO, check_none);
    static const uint8_t cont[] = {0x80, 0x80, 0, 0, 0, 0};
    feed_split(cont, sizeof(cont), true, -EPROTO, check_none);
    static const uint8_t utf8[] = {0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28};
    feed_split(utf8, sizeof(utf8), true, -EILSEQ, check_none);
}

/* RFC 6455 1.3: the example key and its accept value, through libcrypto. */
static void test_accept_key(void **state)
{
    (void)state;
    char out[RB__WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(rb__ws_accept((const uint8_t *)key, strlen(key), out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(rb__ws_accept((const uint8_t *)"c2hvcnQ=", 8, out), -EINVAL);
    assert_int_equal(rb__ws_accept((const uint8_t *)"dGhlIHNhbXBsZSBub25jZQ=!", 24, out), -EINVAL);
}

static void test_utf8_step_across_pieces(void **state)
{
    (void)state;
    static const uint8_t euro[] = {0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x92, 0x93};
    for (size_t cut = 0; cut <= sizeof(euro); cut++) {
        uint32_t st = 0;
        assert_int_equal(rb__utf8_step(&st, euro, cut), 0);
        assert_int_equal(rb__utf8_step(&st, euro + cut, sizeof(euro) - cut), 0);
        assert_int_equal(st, 0);
    }
    uint32_t st = 0;
    assert_int_equal(rb__utf8_step(&st, euro, 2), 0);
    assert_int_not_equal(st, 0); /* inside a character */
    static const uint8_t bad[] = {0x28};
    assert_int_equal(rb__utf8_step(&st, bad, 1), -EILSEQ);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_single_frames), cmocka_unit_test(test_rfc_fragments_and_ping),
        cmocka_unit_test(test_rfc_256_bytes),     cmocka_unit_test(test_refusals_from_the_header),
        cmocka_unit_test(test_accept_key),        cmocka_unit_test(test_utf8_step_across_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
