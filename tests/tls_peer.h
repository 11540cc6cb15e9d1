/* tls_peer.h — test harness: OpenSSL client objects and a server made of the engine's TLS code. */
#ifndef RB_TLS_PEER_H
#define RB_TLS_PEER_H
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
__attribute__((unused)) static char DIR_[64], CERT_A[96], KEY_A[96], CERT_B[96], KEY_B[96];

static inline void make_cert(const char *cn, const char *cert_path, const char *key_path)
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
static inline unsigned rnd(unsigned n)
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
static inline void client_info(const SSL *ssl, int where, int ret)
{
    (void)ssl;
    if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT)
        CLIENT_ALERT_READ = ret & 0xFF;
}

static inline void cli_new(struct cli *c, const char *suites, int max_version, SSL_SESSION *sess)
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

static inline void cli_free(struct cli *c)
{
    /* Freed without a shutdown, OpenSSL marks the session not resumable. */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Bytes the client wrote, taken out of its BIO. */
static inline size_t cli_out(struct cli *c, uint8_t *buf, size_t cap)
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

static inline void to_client(struct srv *s, const uint8_t *p, size_t n)
{
    if (n)
        assert_int_equal(BIO_write(s->peer->rbio, p, (int)n), (int)n);
}

static inline void drain_hs(struct srv *s)
{
    uint8_t buf[4096];
    size_t n;
    while ((n = rb_tls_hs_take_out(s->hs, buf, sizeof(buf))) > 0)
        to_client(s, buf, n);
}

static inline void srv_open_record(struct srv *s)
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
static inline void srv_recv(struct srv *s, const uint8_t *p, size_t n)
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

static inline void srv_new(struct srv *s, struct rb_tls_ctx *ctx, struct cli *peer)
{
    memset(s, 0, sizeof(*s));
    s->ctx = ctx;
    s->peer = peer;
    assert_int_equal(rb_tls_hs_new(ctx, &s->hs), 0);
}

static inline void srv_free(struct srv *s)
{
    rb_tls_hs_free(s->hs);
    rb_tls_conn_wipe(&s->conn);
}

/* Moves the client's output to the server in chunks: split 0 random sizes, else that size. */
static inline void transfer(struct cli *c, struct srv *s, size_t split)
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
static inline int handshake(struct cli *c, struct srv *s, size_t split)
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
static inline size_t cli_read(struct cli *c, uint8_t *out, size_t cap)
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

static inline void pattern(uint8_t *p, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + salt);
}

/* One round trip of n bytes each way, records split at random. */
static inline void round_trip(struct cli *c, struct srv *s, size_t n, size_t split)
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

__attribute__((unused)) static const char *const SUITE_NAMES[3] = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"};
__attribute__((unused)) static const uint16_t SUITE_IDS[3] = {
    RB_TLS_AES_128_GCM_SHA256, RB_TLS_AES_256_GCM_SHA384, RB_TLS_CHACHA20_POLY1305_SHA256};

static inline struct rb_tls_ctx *new_ctx(bool tls12, bool no_tickets)
{
    struct rb_tls_config cfg = {
        .cert_file = CERT_A, .key_file = KEY_A, .allow_tls12 = tls12, .no_tickets = no_tickets};
    struct rb_tls_ctx *ctx;
    assert_int_equal(rb_tls_ctx_new(&cfg, &ctx), 0);
    return ctx;
}

static inline void connect_pair(struct rb_tls_ctx *ctx, struct cli *c, struct srv *s,
                                const char *suites, size_t split)
{
    cli_new(c, suites, 0, NULL);
    srv_new(s, ctx, c);
    assert_int_equal(handshake(c, s, split), 0);
    assert_int_equal(s->est, 1);
}

static inline int setup(void **state)
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

static inline int teardown(void **state)
{
    (void)state;
    rb_tls_scratch_free(S);
    unlink(CERT_A), unlink(KEY_A), unlink(CERT_B), unlink(KEY_B);
    rmdir(DIR_);
    return 0;
}

#endif
