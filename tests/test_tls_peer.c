/* test_tls_peer.c — the handshake driver and record layer against OpenSSL as the client. */
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
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls.h"

/* ---- test certificates, made at run time (no private key is committed) ---- */
static char DIR_[64], CERT_A[96], KEY_A[96], CERT_B[96], KEY_B[96];

static void make_cert(const char *cn, const char *cert_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static struct rb_tls_scratch *S;
static unsigned SEED = 12345;
static unsigned rnd(unsigned n)
{
    SEED = SEED * 1103515245u + 12345u;
    return (SEED >> 8) % n;
}

/* ---- the client: a real OpenSSL SSL object on memory BIOs ---- */
struct cli {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
};
static int CLIENT_ALERT_READ = -1;
static void client_info(const SSL *ssl, int where, int ret)
{
    (void)ssl;
    if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT)
        CLIENT_ALERT_READ = ret & 0xFF;
}

static void cli_new(struct cli *c, const char *suites, int max_version, SSL_SESSION *sess)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(c->ctx);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    if (suites)
        assert_int_equal(SSL_CTX_set_ciphersuites(c->ctx, suites), 1);
    if (max_version)
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
    SSL_CTX_set_info_callback(c->ctx, client_info);
    c->ssl = SSL_new(c->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    if (sess)
        assert_int_equal(SSL_set_session(c->ssl, sess), 1);
    CLIENT_ALERT_READ = -1;
}

static void cli_free(struct cli *c)
{
    /* Freed without a shutdown, OpenSSL marks the session not resumable. */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Bytes the client wrote, taken out of its BIO. */
static size_t cli_out(struct cli *c, uint8_t *buf, size_t cap)
{
    int n = BIO_read(c->wbio, buf, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

/* ---- the server: our driver, then our record layer with a collecting caller ---- */
struct srv {
    struct rb_tls_ctx *ctx;
    struct rb_tls_hs *hs;
    struct rb_tls_conn conn;
    int est; /* 0 handshaking, 1 TLS 1.3 record layer, 2 TLS 1.2 SSL object */
    uint8_t part[RB_TLS_MAX_RECORD]; /* what a caller keeps: one incomplete record */
    size_t have, need;
    uint8_t plain[70000]; /* application data received */
    size_t plain_len;
    int closed, err, alert, nothing;
    struct cli *peer; /* replies go to its read BIO */
};

static void to_client(struct srv *s, const uint8_t *p, size_t n)
{
    if (n)
        assert_int_equal(BIO_write(s->peer->rbio, p, (int)n), (int)n);
}

static void drain_hs(struct srv *s)
{
    uint8_t buf[4096];
    size_t n;
    while ((n = rb_tls_hs_take_out(s->hs, buf, sizeof(buf))) > 0)
        to_client(s, buf, n);
}

static void srv_open_record(struct srv *s)
{
    struct rb_tls_opened o;
    int r = rb_tls_open(&s->conn, S, s->part, s->need, &o);
    to_client(s, o.reply, o.reply_len);
    if (r == RB_TLS_DATA) {
        assert_true(s->plain_len + o.len <= sizeof(s->plain));
        memcpy(s->plain + s->plain_len, o.data, o.len);
        s->plain_len += o.len;
    } else if (r == RB_TLS_CLOSED) {
        s->closed = 1;
    } else if (r == RB_TLS_NOTHING) {
        s->nothing++;
    } else {
        s->err = r;
        s->alert = o.alert;
    }
}

/* The transport's receive path: hand-shake first, then collect whole records and open them. */
static void srv_recv(struct srv *s, const uint8_t *p, size_t n)
{
    while (n > 0 && !s->err) {
        if (s->est == 0) {
            size_t used;
            int r = rb_tls_hs_step(s->hs, p, n, &used);
            p += used, n -= used;
            drain_hs(s);
            if (r < 0) {
                s->err = r;
                s->alert = rb_tls_hs_alert(s->hs);
                return;
            }
            if (r == RB_TLS_HS_DONE) {
                if (rb_tls_hs_version(s->hs) == TLS1_3_VERSION) {
                    assert_int_equal(rb_tls_hs_export(s->hs, &s->conn), 0);
                    s->hs = NULL;
                    s->est = 1;
                } else {
                    s->est = 2;
                }
            }
            continue;
        }
        if (s->est == 2) {
            assert_int_equal(rb_tls12_feed(s->hs, p, n), 0);
            n = 0;
            int r;
            while ((r = rb_tls12_read(s->hs, s->plain + s->plain_len,
                                      sizeof(s->plain) - s->plain_len)) > 0)
                s->plain_len += (size_t)r;
            drain_hs(s);
            if (r == -ESHUTDOWN)
                s->closed = 1;
            else if (r < 0)
                s->err = r;
            return;
        }
        if (s->have < RB_TLS_HDR_LEN) {
            size_t t = RB_TLS_HDR_LEN - s->have < n ? RB_TLS_HDR_LEN - s->have : n;
            memcpy(s->part + s->have, p, t);
            s->have += t, p += t, n -= t;
            if (s->have < RB_TLS_HDR_LEN)
                return;
            int len = rb_tls_record_len(s->part);
            if (len < 0) {
                uint8_t a[RB_TLS_REPLY_MAX];
                int al = len == -EMSGSIZE ? RB_TLS_ALERT_RECORD_OVERFLOW
                                          : RB_TLS_ALERT_UNEXPECTED_MESSAGE;
                int m = rb_tls_seal_alert(&s->conn, S, a, al);
                assert_true(m > 0);
                to_client(s, a, (size_t)m);
                s->err = len;
                s->alert = al;
                return;
            }
            s->need = (size_t)len;
        }
        size_t t = s->need - s->have < n ? s->need - s->have : n;
        memcpy(s->part + s->have, p, t);
        s->have += t, p += t, n -= t;
        if (s->have == s->need) {
            srv_open_record(s);
            s->have = 0;
        }
    }
}

static void srv_new(struct srv *s, struct rb_tls_ctx *ctx, struct cli *peer)
{
    memset(s, 0, sizeof(*s));
    s->ctx = ctx;
    s->peer = peer;
    assert_int_equal(rb_tls_hs_new(ctx, &s->hs), 0);
}

static void srv_free(struct srv *s)
{
    rb_tls_hs_free(s->hs);
    rb_tls_conn_wipe(&s->conn);
}

/* Moves the client's output to the server in chunks: split 0 random sizes, else that size. */
static void transfer(struct cli *c, struct srv *s, size_t split)
{
    static uint8_t buf[1 << 17];
    size_t n = cli_out(c, buf, sizeof(buf));
    for (size_t off = 0; off < n;) {
        size_t k = split ? split : 1 + rnd(700);
        if (k > n - off)
            k = n - off;
        srv_recv(s, buf + off, k);
        off += k;
    }
}

/* Runs the handshake to completion; returns 0, or the server's error. */
static int handshake(struct cli *c, struct srv *s, size_t split)
{
    for (int round = 0; round < 20; round++) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        transfer(c, s, split);
        if (s->err)
            return s->err;
        if (r == 1 && s->est)
            return 0;
    }
    fail_msg("handshake did not finish");
    return -1;
}

/* Client reads what the server sent, appending to out; returns bytes read. */
static size_t cli_read(struct cli *c, uint8_t *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, out + got, cap - got, &n) != 1)
            break;
        got += n;
    }
    return got;
}

static void pattern(uint8_t *p, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + salt);
}

/* One round trip of n bytes each way, records split at random. */
static void round_trip(struct cli *c, struct srv *s, size_t n, size_t split)
{
    static uint8_t want[RB_TLS_MAX_PLAIN], rec[RB_TLS_MAX_RECORD], got[RB_TLS_MAX_PLAIN + 1];
    pattern(want, n, (unsigned)n);
    if (n > 0) { /* OpenSSL sends no record for a zero-length write */
        s->plain_len = 0;
        size_t w = 0;
        assert_int_equal(SSL_write_ex(c->ssl, want, n, &w), 1);
        transfer(c, s, split);
        assert_int_equal(s->err, 0);
        assert_int_equal(s->plain_len, n);
        assert_memory_equal(s->plain, want, n);
    }
    memcpy(rec + RB_TLS_HDR_LEN, want, n);
    int len = rb_tls_seal(&s->conn, S, rec, n);
    assert_int_equal(len, (int)(n + RB_TLS_SEAL_OVERHEAD));
    size_t got_n = 0;
    for (int off = 0; off < len;) {
        int k = split ? (int)split : 1 + (int)rnd(900);
        if (k > len - off)
            k = len - off;
        to_client(s, rec + off, (size_t)k);
        got_n += cli_read(c, got + got_n, sizeof(got) - got_n);
        off += k;
    }
    assert_int_equal(got_n, n);
    assert_memory_equal(got, want, n);
}

static const char *const SUITE_NAMES[3] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"};
static const uint16_t SUITE_IDS[3] = {RB_TLS_AES_128_GCM_SHA256, RB_TLS_AES_256_GCM_SHA384,
                                      RB_TLS_CHACHA20_POLY1305_SHA256};

static struct rb_tls_ctx *new_ctx(bool tls12, bool no_tickets)
{
    struct rb_tls_config cfg = {
        .cert_file = CERT_A, .key_file = KEY_A, .allow_tls12 = tls12, .no_tickets = no_tickets};
    struct rb_tls_ctx *ctx;
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), 0);
    return ctx;
}

static void connect_pair(struct rb_tls_ctx *ctx, struct cli *c, struct srv *s, const char *suites,
                         size_t split)
{
    cli_new(c, suites, 0, NULL);
    srv_new(s, ctx, c);
    assert_int_equal(handshake(c, s, split), 0);
    assert_int_equal(s->est, 1);
}

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

static int setup(void **state)
{
    (void)state;
    strcpy(DIR_, "/tmp/rb-tls-test-XXXXXX");
    if (!mkdtemp(DIR_))
        return -1;
    snprintf(CERT_A, sizeof(CERT_A), "%s/a.pem", DIR_);
    snprintf(KEY_A, sizeof(KEY_A), "%s/a.key", DIR_);
    snprintf(CERT_B, sizeof(CERT_B), "%s/b.pem", DIR_);
    snprintf(KEY_B, sizeof(KEY_B), "%s/b.key", DIR_);
    make_cert("ringbeat-test-a", CERT_A, KEY_A);
    make_cert("ringbeat-test-b", CERT_B, KEY_B);
    return rb_tls_scratch_new(&S);
}

static int teardown(void **state)
{
    (void)state;
    rb_tls_scratch_free(S);
    unlink(CERT_A), unlink(KEY_A), unlink(CERT_B), unlink(KEY_B);
    rmdir(DIR_);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_size_every_suite),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_data_with_finished),
        cmocka_unit_test(test_key_update_from_openssl),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_bad_peers),
        cmocka_unit_test(test_resumption_and_rotation),
        cmocka_unit_test(test_tls12),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_config_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
