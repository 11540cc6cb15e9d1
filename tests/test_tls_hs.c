/* test_tls_hs.c — handshake driver and context vs OpenSSL: bad peers, resumption, 1.2, reload. */
#include "tls_peer.h"

static void test_bad_peers(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    struct cli c;
    struct srv s;
    uint8_t buf[4096], tmp[64];
    /* a bad MAC: bad_record_mac, which OpenSSL reads */
    connect_pair(ctx, &c, &s, NULL, 0);
    assert_int_equal(SSL_write(c.ssl, "heartbeat!!!", 12), 12);
    size_t n = cli_out(&c, buf, sizeof(buf));
    buf[n - 3] ^= 1;
    srv_recv(&s, buf, n);
    assert_int_equal(s.err, -EBADMSG);
    assert_int_equal(s.alert, RB_TLS_ALERT_BAD_RECORD_MAC);
    cli_read(&c, tmp, sizeof(tmp));
    assert_int_equal(CLIENT_ALERT_READ, RB_TLS_ALERT_BAD_RECORD_MAC);
    cli_free(&c);
    srv_free(&s);
    /* a truncated record, then EOF: not a clean close */
    connect_pair(ctx, &c, &s, NULL, 0);
    assert_int_equal(SSL_write(c.ssl, "heartbeat!!!", 12), 12);
    n = cli_out(&c, buf, sizeof(buf));
    srv_recv(&s, buf, n - 3);
    assert_int_equal(s.err, 0);
    assert_int_equal(s.plain_len, 0);
    assert_int_equal(rb_tls_at_eof(&s.conn, s.have), -ECONNABORTED);
    cli_free(&c);
    srv_free(&s);
    /* an oversized record: record_overflow from its header alone */
    connect_pair(ctx, &c, &s, NULL, 0);
    uint8_t big[5] = {23, 3, 3, (RB_TLS_MAX_CIPHERTEXT + 1) >> 8,
                      (RB_TLS_MAX_CIPHERTEXT + 1) & 255};
    srv_recv(&s, big, 5);
    assert_int_equal(s.err, -EMSGSIZE);
    cli_read(&c, tmp, sizeof(tmp));
    assert_int_equal(CLIENT_ALERT_READ, RB_TLS_ALERT_RECORD_OVERFLOW);
    cli_free(&c);
    srv_free(&s);
    /* a handshake record after the handshake (a plaintext ClientHello): unexpected_message */
    connect_pair(ctx, &c, &s, NULL, 0);
    uint8_t hsrec[9] = {22, 3, 3, 0, 4, 1, 0, 0, 0};
    srv_recv(&s, hsrec, sizeof(hsrec));
    assert_int_equal(s.err, -EPROTO);
    cli_read(&c, tmp, sizeof(tmp));
    assert_int_equal(CLIENT_ALERT_READ, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    cli_free(&c);
    srv_free(&s);

    /* before the handshake: garbage (no alert: it is not TLS), a broken ClientHello
     * (an alert), application data (unexpected_message), an oversized record */
    struct {
        const uint8_t *p;
        size_t n;
        int alert;
    } cases[] = {
        {(const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, RB_TLS_ALERT_NONE},
        {(const uint8_t *)"\x00\x01\x02\x03\x04\x05\x06\x07", 8, RB_TLS_ALERT_NONE},
        {(const uint8_t *)"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", 10,
         RB_TLS_ALERT_DECODE_ERROR},
        {(const uint8_t *)"\x17\x03\x03\x00\x03\x01\x02\x03", 8, RB_TLS_ALERT_UNEXPECTED_MESSAGE},
        {(const uint8_t *)"\x16\x03\x01\x48\x01", 5, RB_TLS_ALERT_RECORD_OVERFLOW},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rb_tls_hs *hs;
        assert_int_equal(rb_tls_hs_new(ctx, &hs), 0);
        size_t used = 0, off = 0;
        int r = RB_TLS_HS_AGAIN;
        while (r == RB_TLS_HS_AGAIN && off < cases[i].n) {
            r = rb_tls_hs_step(hs, cases[i].p + off, cases[i].n - off, &used);
            off += used;
        }
        assert_int_equal(r, -EPROTO);
        assert_int_equal(rb_tls_hs_alert(hs), cases[i].alert);
        n = rb_tls_hs_take_out(hs, buf, sizeof(buf));
        if (cases[i].alert == RB_TLS_ALERT_NONE) {
            assert_int_equal(n, 0);
        } else { /* a plaintext alert record: 21, version, 0, 2, fatal, description */
            assert_int_equal(n, 7);
            assert_int_equal(buf[0], RB_TLS_CT_ALERT);
            assert_int_equal(buf[5], 2);
            assert_int_equal(buf[6], cases[i].alert);
        }
        assert_int_equal(rb_tls_hs_step(hs, buf, 1, &used), -EPROTO);
        rb_tls_hs_free(hs);
    }
    struct rb_tls_counters k;
    rb_tls_ctx_counters(ctx, &k);
    assert_int_equal(k.failed, 5);
    rb_tls_ctx_free(ctx);
}

static SSL_SESSION *first_session(struct rb_tls_ctx *ctx, bool *resumed)
{
    struct cli c;
    struct srv s;
    connect_pair(ctx, &c, &s, NULL, 0);
    round_trip(&c, &s, 12, 0); /* the client reads the ticket */
    *resumed = SSL_session_reused(c.ssl);
    SSL_SESSION *sess = SSL_get1_session(c.ssl);
    cli_free(&c);
    srv_free(&s);
    return sess;
}

static bool resume_with(struct rb_tls_ctx *ctx, SSL_SESSION *sess, SSL_SESSION **next)
{
    struct cli c;
    struct srv s;
    cli_new(&c, NULL, 0, sess);
    srv_new(&s, ctx, &c);
    assert_int_equal(handshake(&c, &s, 0), 0);
    round_trip(&c, &s, 12, 0);
    bool r = SSL_session_reused(c.ssl);
    if (next)
        *next = SSL_get1_session(c.ssl);
    cli_free(&c);
    srv_free(&s);
    return r;
}

static void test_resumption_and_rotation(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    bool r;
    SSL_SESSION *sess = first_session(ctx, &r);
    assert_false(r);
    assert_true(SSL_SESSION_is_resumable(sess));
    assert_true(resume_with(ctx, sess, NULL));
    struct rb_tls_counters k;
    rb_tls_ctx_counters(ctx, &k);
    assert_int_equal(k.full, 1);
    assert_int_equal(k.resumed, 1);
    /* one rotation: the old key still decrypts (and the ticket is renewed) */
    assert_int_equal(rb_tls_ctx_rotate_tickets(ctx), 0);
    assert_true(resume_with(ctx, sess, NULL));
    /* two: it is gone, a full handshake */
    assert_int_equal(rb_tls_ctx_rotate_tickets(ctx), 0);
    SSL_SESSION *fresh = NULL;
    assert_false(resume_with(ctx, sess, &fresh));
    assert_true(resume_with(ctx, fresh, NULL));
    /* the clock-driven rotation: the first call sets the deadline */
    assert_int_equal(rb_tls_ctx_maybe_rotate(ctx, 1000), 0);
    assert_int_equal(rb_tls_ctx_maybe_rotate(ctx, 1000 + 3599ULL * 1000000000ULL), 0);
    assert_int_equal(rb_tls_ctx_maybe_rotate(ctx, 1000 + 3600ULL * 1000000000ULL), 1);
    rb_tls_ctx_counters(ctx, &k);
    assert_int_equal(k.full, 2);
    assert_int_equal(k.resumed, 3);
    assert_int_equal(k.rotations, 3);
    SSL_SESSION_free(sess);
    SSL_SESSION_free(fresh);
    rb_tls_ctx_free(ctx);

    /* tickets off: none is sent, so nothing resumes and no record precedes our first */
    ctx = new_ctx(false, true);
    struct cli c;
    struct srv s;
    connect_pair(ctx, &c, &s, NULL, 0);
    assert_int_equal(s.conn.wr.seq, 0);
    round_trip(&c, &s, 12, 0);
    sess = SSL_get1_session(c.ssl);
    cli_free(&c);
    srv_free(&s);
    assert_false(resume_with(ctx, sess, NULL));
    SSL_SESSION_free(sess);
    rb_tls_ctx_free(ctx);
}

static void test_tls12(void **state)
{
    (void)state;
    /* refused by default: protocol_version */
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    struct cli c;
    struct srv s;
    cli_new(&c, NULL, TLS1_2_VERSION, NULL);
    srv_new(&s, ctx, &c);
    assert_int_equal(handshake(&c, &s, 0), -EPROTO);
    assert_int_equal(s.alert, RB_TLS_ALERT_PROTOCOL_VERSION);
    cli_free(&c);
    srv_free(&s);
    rb_tls_ctx_free(ctx);
    /* allowed: the SSL object stays and serves SSL_read/SSL_write */
    ctx = new_ctx(true, false);
    cli_new(&c, NULL, TLS1_2_VERSION, NULL);
    srv_new(&s, ctx, &c);
    assert_int_equal(handshake(&c, &s, 0), 0);
    assert_int_equal(s.est, 2);
    assert_int_equal(rb_tls_hs_version(s.hs), TLS1_2_VERSION);
    struct rb_tls_conn tmp;
    assert_int_equal(rb_tls_hs_export(s.hs, &tmp), -EPROTONOSUPPORT);
    assert_int_equal(SSL_write(c.ssl, "ping-over-12", 12), 12);
    transfer(&c, &s, 1);
    assert_int_equal(s.plain_len, 12);
    assert_memory_equal(s.plain, "ping-over-12", 12);
    assert_int_equal(rb_tls12_write(s.hs, (const uint8_t *)"pong", 4), 0);
    drain_hs(&s);
    uint8_t buf[16];
    assert_int_equal(cli_read(&c, buf, sizeof(buf)), 4);
    assert_int_equal(SSL_shutdown(c.ssl), 0);
    transfer(&c, &s, 0);
    assert_int_equal(s.closed, 1);
    assert_int_equal(SSL_shutdown(c.ssl), 1);
    struct rb_tls_counters k;
    rb_tls_ctx_counters(ctx, &k);
    assert_int_equal(k.tls12, 1);
    cli_free(&c);
    srv_free(&s);
    rb_tls_ctx_free(ctx);
}

static void peer_cn(struct cli *c, char *out, size_t cap)
{
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    assert_non_null(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
    X509_free(x);
}

static void test_reload(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx = new_ctx(false, false);
    struct cli c1, c2;
    struct srv s1, s2;
    char cn[64];
    /* a handshake in progress across the reload keeps the old certificate */
    cli_new(&c1, NULL, 0, NULL);
    srv_new(&s1, ctx, &c1);
    assert_int_equal(SSL_do_handshake(c1.ssl), -1);
    transfer(&c1, &s1, 0);
    assert_int_equal(rb_tls_ctx_reload(ctx, CERT_B, KEY_B), 0);
    assert_int_equal(rb_tls_ctx_reload(ctx, "/nonexistent.pem", KEY_B), -ENOENT);
    assert_int_equal(rb_tls_ctx_reload(ctx, CERT_A, KEY_B), -EKEYREJECTED);
    assert_int_equal(handshake(&c1, &s1, 0), 0);
    peer_cn(&c1, cn, sizeof(cn));
    assert_string_equal(cn, "ringbeat-test-a");
    connect_pair(ctx, &c2, &s2, NULL, 0);
    peer_cn(&c2, cn, sizeof(cn));
    assert_string_equal(cn, "ringbeat-test-b");
    round_trip(&c1, &s1, 12, 0);
    round_trip(&c2, &s2, 12, 0);
    struct rb_tls_counters k;
    rb_tls_ctx_counters(ctx, &k);
    assert_int_equal(k.reloads, 1);
    cli_free(&c1);
    cli_free(&c2);
    srv_free(&s1);
    srv_free(&s2);
    rb_tls_ctx_free(ctx);
}

static void test_config_refusals(void **state)
{
    (void)state;
    struct rb_tls_ctx *ctx;
    struct rb_tls_config cfg = {.cert_file = CERT_A, .key_file = KEY_A};
    cfg.ciphersuites = "TLS_AES_128_CCM_SHA256"; /* not implemented by the record layer */
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), -EINVAL);
    cfg.ciphersuites = "NO_SUCH_SUITE";
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), -EINVAL);
    cfg.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    cfg.ciphers = "NO-SUCH-CIPHER";
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), -EINVAL);
    cfg.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
    cfg.key_file = "/nonexistent";
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), -ENOENT);
    cfg.key_file = KEY_B;
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), -EKEYREJECTED);
    cfg.key_file = KEY_A;
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), 0);
    /* the suite string is passed through: only ChaCha20 is offered */
    struct cli c;
    struct srv s;
    connect_pair(ctx, &c, &s, NULL, 0);
    assert_int_equal(s.conn.suite, RB_TLS_CHACHA20_POLY1305_SHA256);
    cli_free(&c);
    srv_free(&s);
    rb_tls_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_peers),       cmocka_unit_test(test_resumption_and_rotation),
        cmocka_unit_test(test_tls12),           cmocka_unit_test(test_reload),
        cmocka_unit_test(test_config_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
