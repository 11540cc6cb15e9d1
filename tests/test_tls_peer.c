/* test_tls_peer.c — the TLS 1.3 record layer against OpenSSL: every size and split, KeyUpdate. */
#include "tls_peer.h"

static void test_every_size_every_suite(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    for (int k = 0; k < 3; k++) {
        struct cli c;
        struct srv s;
        connect_pair(ctx, &c, &s, SUITE_NAMES[k], 0);
        assert_int_equal(s.conn.suite, SUITE_IDS[k]);
        assert_int_equal(s.conn.wr.seq, 1); /* one NewSessionTicket went out */
        assert_int_equal(s.conn.rd.seq, 0);
        for (size_t n = 0; n <= 300; n++)
            round_trip(&c, &s, n, 0);
        for (size_t n = 301; n < RB_TLS_MAX_PLAIN; n += 397)
            round_trip(&c, &s, n, 0);
        round_trip(&c, &s, RB_TLS_MAX_PLAIN - 1, 0);
        round_trip(&c, &s, RB_TLS_MAX_PLAIN, 0);
        round_trip(&c, &s, RB_TLS_MAX_PLAIN, 1); /* the largest record, byte by byte */
        cli_free(&c);
        srv_free(&s);
    }
    rb_tls_ctx_free(ctx);
}

/* Three records in one stream, cut at every point (and byte by byte), both directions. */
static void test_every_split(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    static const size_t sizes[3] = {1, 100, 300};
    static uint8_t buf[2048], rec[2048], got[2048], want[512];
    for (int k = 0; k < 3; k++) {
        struct cli c;
        struct srv s;
        connect_pair(ctx, &c, &s, SUITE_NAMES[k], 1); /* handshake byte by byte, too */
        size_t total = 0;
        for (int i = 0; i < 3; i++)
            total += sizes[i] + RB_TLS_SEAL_OVERHEAD;
        for (size_t cut = 0; cut <= total + 1; cut++) { /* total + 1: byte by byte */
            /* client -> server */
            s.plain_len = 0;
            for (int i = 0; i < 3; i++) {
                pattern(want, sizes[i], (unsigned)(cut + i));
                assert_int_equal(SSL_write(c.ssl, want, (int)sizes[i]), (int)sizes[i]);
            }
            size_t n = cli_out(&c, buf, sizeof(buf));
            assert_int_equal(n, total);
            if (cut > total) {
                for (size_t i = 0; i < n; i++)
                    srv_recv(&s, buf + i, 1);
            } else {
                srv_recv(&s, buf, cut);
                srv_recv(&s, buf + cut, n - cut);
            }
            assert_int_equal(s.err, 0);
            assert_int_equal(s.plain_len, 401);
            pattern(want, 300, (unsigned)(cut + 2));
            assert_memory_equal(s.plain + 101, want, 300);
            /* server -> client */
            size_t off = 0;
            for (int i = 0; i < 3; i++) {
                pattern(rec + off + RB_TLS_HDR_LEN, sizes[i], (unsigned)(cut + i + 7));
                off += (size_t)rb_tls_seal(&s.conn, S, rec + off, sizes[i]);
            }
            assert_int_equal(off, total);
            size_t g = 0;
            if (cut > total) {
                for (size_t i = 0; i < off; i++) {
                    to_client(&s, rec + i, 1);
                    g += cli_read(&c, got + g, sizeof(got) - g);
                }
            } else {
                to_client(&s, rec, cut);
                g += cli_read(&c, got, sizeof(got));
                to_client(&s, rec + cut, off - cut);
                g += cli_read(&c, got + g, sizeof(got) - g);
            }
            assert_int_equal(g, 401);
            pattern(want, 100, (unsigned)(cut + 8));
            assert_memory_equal(got + 1, want, 100);
        }
        cli_free(&c);
        srv_free(&s);
    }
    rb_tls_ctx_free(ctx);
}

/* A client may send application data right behind its Finished, in one flight. */
static void test_data_with_finished(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    struct cli c;
    struct srv s;
    cli_new(&c, NULL, 0, NULL);
    srv_new(&s, ctx, &c);
    assert_int_equal(SSL_do_handshake(c.ssl), -1); /* ClientHello */
    transfer(&c, &s, 0);
    assert_int_equal(SSL_do_handshake(c.ssl), 1); /* CCS + Finished, not yet sent */
    assert_int_equal(SSL_write(c.ssl, "first", 5), 5);
    assert_int_equal(SSL_write(c.ssl, "second", 6), 6);
    uint8_t buf[4096];
    size_t n = cli_out(&c, buf, sizeof(buf));
    /* one record per step: the first step takes only the 6-byte change_cipher_spec record */
    size_t used;
    assert_int_equal(rb_tls_hs_step(s.hs, buf, n, &used), RB_TLS_HS_AGAIN);
    assert_int_equal(used, 6);
    srv_recv(&s, buf + used, n - used); /* the whole rest in one piece */
    assert_int_equal(s.err, 0);
    assert_int_equal(s.est, 1);
    assert_int_equal(s.plain_len, 11);
    assert_memory_equal(s.plain, "firstsecond", 11);
    assert_int_equal(s.conn.rd.seq, 2);
    round_trip(&c, &s, 12, 0);
    cli_free(&c);
    srv_free(&s);
    rb_tls_ctx_free(ctx);
}

static void test_key_update_from_openssl(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    for (int k = 0; k < 3; k++) {
        struct cli c;
        struct srv s;
        connect_pair(ctx, &c, &s, SUITE_NAMES[k], 0);
        round_trip(&c, &s, 12, 0);
        uint8_t rd0[48], wr0[48];
        memcpy(rd0, s.conn.rd.secret, 48);
        memcpy(wr0, s.conn.wr.secret, 48);
        for (int i = 0; i < 6; i++) {
            int req = i % 2 ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED;
            assert_int_equal(SSL_key_update(c.ssl, req), 1);
            int before = s.nothing;
            round_trip(&c, &s, 12 + (size_t)i, 0); /* the KeyUpdate goes out before the data */
            assert_int_equal(s.nothing, before + 1);
            assert_int_equal(s.conn.rd.seq, 1);
            if (req == SSL_KEY_UPDATE_REQUESTED)
                assert_int_equal(s.conn.wr.seq, 1); /* our KeyUpdate, then the data */
            round_trip(&c, &s, 100, 3);
        }
        assert_memory_not_equal(rd0, s.conn.rd.secret, 32);
        assert_memory_not_equal(wr0, s.conn.wr.secret, 32);
        /* and we may update on our own */
        uint8_t ku[RB_TLS_REPLY_MAX];
        assert_int_equal(rb_tls_seal_keyupdate(&s.conn, S, ku, true), RB_TLS_REPLY_MAX);
        to_client(&s, ku, RB_TLS_REPLY_MAX);
        uint8_t dummy[8];
        cli_read(&c, dummy, sizeof(dummy));
        int before = s.nothing;
        round_trip(&c, &s, 20, 0); /* the client answered with its KeyUpdate */
        assert_int_equal(s.nothing, before + 1);
        cli_free(&c);
        srv_free(&s);
    }
    rb_tls_ctx_free(ctx);
}

static void test_close_notify(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    struct cli c;
    struct srv s;
    /* client closes: we answer with ours, its bidirectional shutdown completes */
    connect_pair(ctx, &c, &s, NULL, 0);
    round_trip(&c, &s, 12, 0);
    assert_int_equal(SSL_shutdown(c.ssl), 0);
    transfer(&c, &s, 0);
    assert_int_equal(s.closed, 1);
    assert_int_equal(rb_tls_at_eof(&s.conn, 0), 0);
    assert_int_equal(SSL_shutdown(c.ssl), 1);
    cli_free(&c);
    srv_free(&s);
    /* server closes: the client sees a clean end */
    connect_pair(ctx, &c, &s, NULL, 0);
    uint8_t a[RB_TLS_REPLY_MAX];
    int n = rb_tls_seal_alert(&s.conn, S, a, RB_TLS_ALERT_CLOSE_NOTIFY);
    to_client(&s, a, (size_t)n);
    uint8_t buf[8];
    assert_int_equal(SSL_read(c.ssl, buf, sizeof(buf)), 0);
    assert_int_equal(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN);
    assert_int_equal(rb_tls_seal(&s.conn, S, buf, 1), -EPIPE);
    cli_free(&c);
    srv_free(&s);
    rb_tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_size_every_suite),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_data_with_finished),
        cmocka_unit_test(test_key_update_from_openssl),
        cmocka_unit_test(test_close_notify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
