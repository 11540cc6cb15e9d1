/* test_tls_client.c — the client role (handshake driver, tickets), and the record collector. */
#include "tls_peer.h"

/* ---- an endpoint made only of our code, either role: driver, then record layer + collector ----
 */
struct pipe_ {
    uint8_t buf[1 << 17];
    size_t len;
};

struct ep {
    struct rb_tls_hs *hs;
    struct rb_tls_conn conn;
    int est;
    struct rb_tls_part *part;
    uint8_t plain[70000];
    size_t plain_len;
    int err, alert, nothing, closed, records;
    struct pipe_ *out; /* what it sends */
};

static void put(struct pipe_ *p, const uint8_t *b, size_t n)
{
    assert_true(p->len + n <= sizeof(p->buf));
    memcpy(p->buf + p->len, b, n);
    p->len += n;
}

static void ep_drain(struct ep *e)
{
    uint8_t buf[4096];
    size_t n;
    while (e->hs && (n = rb_tls_hs_take_out(e->hs, buf, sizeof(buf))) > 0)
        put(e->out, buf, n);
}

static void ep_new(struct ep *e, struct rb_tls_ctx *ctx, struct pipe_ *out)
{
    memset(e, 0, sizeof(*e));
    e->out = out;
    assert_int_equal(rb_tls_hs_new(ctx, &e->hs), 0);
    ep_drain(e); /* a client's ClientHello */
}

static void ep_free(struct ep *e)
{
    rb_tls_hs_free(e->hs);
    free(e->part);
    rb_tls_conn_wipe(&e->conn);
}

static int ep_record(void *ctx, uint8_t *rec, size_t len)
{
    struct ep *e = ctx;
    struct rb_tls_opened o;
    int r = rb_tls_open(&e->conn, S, rec, len, &o);
    put(e->out, o.reply, o.reply_len);
    e->records++;
    if (r == RB_TLS_DATA) {
        assert_true(e->plain_len + o.len <= sizeof(e->plain));
        memcpy(e->plain + e->plain_len, o.data, o.len);
        e->plain_len += o.len;
        return 0;
    }
    if (r == RB_TLS_NOTHING) {
        e->nothing++;
        return 0;
    }
    if (r == RB_TLS_CLOSED)
        e->closed = 1;
    else
        e->err = r, e->alert = o.alert;
    return 1;
}

static void ep_recv(struct ep *e, uint8_t *p, size_t n)
{
    while (n > 0 && !e->err && !e->closed) {
        if (!e->est) {
            size_t used;
            int r = rb_tls_hs_step(e->hs, p, n, &used);
            p += used, n -= used;
            ep_drain(e);
            if (r < 0) {
                e->err = r;
                e->alert = rb_tls_hs_alert(e->hs);
                return;
            }
            if (r == RB_TLS_HS_DONE) {
                assert_int_equal(rb_tls_hs_export(e->hs, &e->conn), 0);
                e->hs = NULL;
                e->est = 1;
            }
            continue;
        }
        const struct rb_tls_rx rx = {.part = &e->part, .record = ep_record, .ctx = e};
        int r = rb_tls_feed(&rx, p, n);
        if (r < 0)
            e->err = r;
        return;
    }
}

/* Moves what `from` wrote to `to`, in chunks (0: random sizes). */
static void pass(struct pipe_ *p, struct ep *to, size_t split)
{
    static uint8_t tmp[1 << 17];
    size_t n = p->len;
    memcpy(tmp, p->buf, n);
    p->len = 0;
    for (size_t off = 0; off < n;) {
        size_t k = split ? split : 1 + rnd(400);
        if (k > n - off)
            k = n - off;
        ep_recv(to, tmp + off, k);
        off += k;
    }
}

static void pair_handshake(struct ep *c, struct ep *s, struct pipe_ *c2s, struct pipe_ *s2c,
                           size_t split)
{
    for (int i = 0; i < 10 && !(c->est && s->est); i++) {
        pass(c2s, s, split);
        pass(s2c, c, split);
    }
    assert_int_equal(c->err, 0);
    assert_int_equal(s->err, 0);
    assert_true(c->est && s->est);
}

/* n bytes from a to b, sealed by a in one record. */
static void send_data(struct ep *a, struct ep *b, struct pipe_ *ab, size_t n, size_t split)
{
    static uint8_t rec[RB_TLS_MAX_RECORD], want[RB_TLS_MAX_PLAIN];
    pattern(want, n, (unsigned)n + 3);
    memcpy(rec + RB_TLS_HDR_LEN, want, n);
    int len = rb_tls_seal(&a->conn, S, rec, n);
    assert_int_equal(len, (int)(n + RB_TLS_SEAL_OVERHEAD));
    put(ab, rec, (size_t)len);
    b->plain_len = 0;
    pass(ab, b, split);
    assert_int_equal(b->err, 0);
    assert_int_equal(b->plain_len, n);
    assert_memory_equal(b->plain, want, n);
}

static struct rb_tls_ctx *client_ctx(const char *suites, bool resume)
{
    struct rb_tls_client_config cfg = {.ciphersuites = suites, .resume = resume};
    struct rb_tls_ctx *ctx;
    assert_int_equal(rb_tls_ctx_new_client(&cfg, &ctx), 0);
    return ctx;
}

static struct pipe_ C2S, S2C;

static void test_client_vs_our_server(void **state)
{
    (void)state;
    struct rb_tls_ctx *sctx = new_ctx(false, false);
    for (int k = 0; k < 3; k++) {
        struct rb_tls_ctx *cctx = client_ctx(SUITE_NAMES[k], false);
        struct ep c, s;
        C2S.len = S2C.len = 0;
        ep_new(&c, cctx, &C2S);
        ep_new(&s, sctx, &S2C);
        pair_handshake(&c, &s, &C2S, &S2C, k == 1 ? 1 : 0); /* once byte by byte */
        assert_int_equal(c.conn.suite, SUITE_IDS[k]);
        assert_false(c.conn.flags & RB_TLS_F_SERVER);
        assert_int_equal(s.conn.wr.seq, 1); /* the server's ticket, which the client skips */
        assert_int_equal(c.nothing, 1);
        assert_int_equal(c.conn.rd.seq, 1);
        for (size_t n = 0; n < 300; n += 7) {
            send_data(&c, &s, &C2S, n, 0);
            send_data(&s, &c, &S2C, n, 0);
        }
        send_data(&c, &s, &C2S, RB_TLS_MAX_PLAIN, 0);
        send_data(&s, &c, &S2C, RB_TLS_MAX_PLAIN, 1);
        /* the client asks for a KeyUpdate; the server answers with its own */
        uint8_t ku[RB_TLS_REPLY_MAX];
        int m = rb_tls_seal_keyupdate(&c.conn, S, ku, true);
        put(&C2S, ku, (size_t)m);
        pass(&C2S, &s, 0);
        assert_int_equal(s.nothing, 1);
        pass(&S2C, &c, 0);
        assert_int_equal(c.nothing, 2);
        send_data(&c, &s, &C2S, 12, 0);
        send_data(&s, &c, &S2C, 12, 0);
        /* close_notify from the client: the server answers with its own */
        m = rb_tls_seal_alert(&c.conn, S, ku, RB_TLS_ALERT_CLOSE_NOTIFY);
        put(&C2S, ku, (size_t)m);
        pass(&C2S, &s, 0);
        assert_int_equal(s.closed, 1);
        pass(&S2C, &c, 0);
        assert_int_equal(c.closed, 1);
        ep_free(&c);
        ep_free(&s);
        rb_tls_ctx_free(cctx);
    }
    rb_tls_ctx_free(sctx);
}

/* Our client against OpenSSL's server: its two tickets are skipped, data and KeyUpdate work. */
static void test_client_vs_openssl_server(void **state)
{
    (void)state;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate_chain_file(sctx, CERT_A), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(sctx, KEY_A, SSL_FILETYPE_PEM), 1);
    struct rb_tls_ctx *cctx = client_ctx(NULL, false);
    SSL *ssl = SSL_new(sctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_set_accept_state(ssl);
    struct ep c;
    C2S.len = S2C.len = 0;
    ep_new(&c, cctx, &C2S);
    static uint8_t buf[1 << 16];
    for (int i = 0; i < 10 && !c.est; i++) {
        assert_int_equal(BIO_write(rb, C2S.buf, (int)C2S.len), (int)C2S.len);
        C2S.len = 0;
        SSL_do_handshake(ssl);
        int n = BIO_read(wb, buf, sizeof(buf));
        if (n > 0) {
            put(&S2C, buf, (size_t)n);
            pass(&S2C, &c, 0);
        }
    }
    assert_true(c.est);
    assert_int_equal(BIO_write(rb, C2S.buf, (int)C2S.len), (int)C2S.len); /* the Finished */
    C2S.len = 0;
    assert_int_equal(SSL_do_handshake(ssl), 1);
    /* data from OpenSSL comes behind its two tickets */
    assert_int_equal(SSL_write(ssl, "welcome!", 8), 8);
    int n = BIO_read(wb, buf, sizeof(buf));
    put(&S2C, buf, (size_t)n);
    pass(&S2C, &c, 3);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.nothing, 2);
    assert_int_equal(c.plain_len, 8);
    assert_memory_equal(c.plain, "welcome!", 8);
    /* ours to OpenSSL, then a KeyUpdate it requests, then ours again under the new keys */
    for (int round = 0; round < 2; round++) {
        uint8_t rec[64];
        memcpy(rec + RB_TLS_HDR_LEN, "heartbeat!!!", 12);
        int len = rb_tls_seal(&c.conn, S, rec, 12);
        assert_int_equal(BIO_write(rb, rec, len), len);
        assert_int_equal(SSL_read(ssl, buf, sizeof(buf)), 12);
        assert_memory_equal(buf, "heartbeat!!!", 12);
        if (round == 0) {
            assert_int_equal(SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED), 1);
            assert_int_equal(SSL_write(ssl, "x", 1), 1);
            n = BIO_read(wb, buf, sizeof(buf));
            put(&S2C, buf, (size_t)n);
            c.plain_len = 0;
            pass(&S2C, &c, 0);
            assert_int_equal(c.plain_len, 1);
            assert_int_equal(C2S.len, RB_TLS_REPLY_MAX); /* our KeyUpdate, in the reply */
            assert_int_equal(BIO_write(rb, C2S.buf, (int)C2S.len), (int)C2S.len);
            C2S.len = 0;
        }
    }
    ep_free(&c);
    SSL_free(ssl);
    SSL_CTX_free(sctx);
    rb_tls_ctx_free(cctx);
}

/* A resuming client completes only with the server's ticket in; the second one resumes. */
static void test_client_resume(void **state)
{
    (void)state;
    struct rb_tls_ctx *sctx = new_ctx(false, false);
    struct rb_tls_ctx *cctx = client_ctx(NULL, true);
    for (int round = 0; round < 3; round++) {
        struct ep c, s;
        C2S.len = S2C.len = 0;
        ep_new(&c, cctx, &C2S);
        ep_new(&s, sctx, &S2C);
        pass(&C2S, &s, 0);   /* ClientHello */
        pass(&S2C, &c, 0);   /* the server's flight: the client writes its Finished ... */
        assert_false(c.est); /* ... and waits for the ticket */
        pass(&C2S, &s, 0);
        assert_true(s.est);
        assert_true(S2C.len > 0); /* a fresh ticket after a resumed handshake too */
        pass(&S2C, &c, 0);
        assert_true(c.est);
        assert_int_equal(c.nothing, 0);
        assert_int_equal(c.conn.rd.seq, 1);
        send_data(&c, &s, &C2S, 12, 0);
        send_data(&s, &c, &S2C, 20, 0);
        ep_free(&c);
        ep_free(&s);
    }
    struct rb_tls_counters k;
    rb_tls_ctx_counters(sctx, &k);
    assert_int_equal(k.full, 1);
    assert_int_equal(k.resumed, 2);
    rb_tls_ctx_counters(cctx, &k);
    assert_int_equal(k.full, 1);
    assert_int_equal(k.resumed, 2);
    rb_tls_ctx_free(cctx);
    rb_tls_ctx_free(sctx);
}

/* NewSessionTicket rules in the record layer, with records sealed by hand. */
static void test_ticket_rules(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 1, sizeof(a));
    memset(b, 2, sizeof(b));
    static uint8_t rec[512];
    struct rb_tls_opened o;
    /* a ticket of 20 bytes (4 header + 20 body) split over three records, then data */
    uint8_t nst[24] = {4, 0, 0, 20};
    for (int i = 4; i < 24; i++)
        nst[i] = (uint8_t)i;
    struct rb_tls_conn srv, cli;
    assert_int_equal(rb_tls_conn_init(&srv, RB_TLS_AES_128_GCM_SHA256, true, a, b, 32, 0, 0), 0);
    assert_int_equal(rb_tls_conn_init(&cli, RB_TLS_AES_128_GCM_SHA256, false, b, a, 32, 0, 0), 0);
    const size_t cuts[4] = {0, 3, 10, 24};
    for (int i = 0; i < 3; i++) {
        size_t k = cuts[i + 1] - cuts[i];
        memcpy(rec + 5, nst + cuts[i], k);
        rec[5 + k] = RB_TLS_CT_HANDSHAKE;
        int len = rb__tls_seal_inner(&srv, S, rec, k + 1);
        assert_int_equal(rb_tls_open(&cli, S, rec, (size_t)len, &o), RB_TLS_NOTHING);
    }
    memcpy(rec + 5, "data", 4);
    int len = rb_tls_seal(&srv, S, rec, 4);
    assert_int_equal(rb_tls_open(&cli, S, rec, (size_t)len, &o), RB_TLS_DATA);
    assert_int_equal(o.len, 4);
    /* a ticket sent to a server: unexpected_message */
    memcpy(rec + 5, nst, 24);
    rec[29] = RB_TLS_CT_HANDSHAKE;
    len = rb__tls_seal_inner(&cli, S, rec, 25);
    assert_int_equal(rb_tls_open(&srv, S, rec, (size_t)len, &o), -EPROTO);
    assert_int_equal(o.alert, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* a ticket too short to be one: decode_error */
    assert_int_equal(rb_tls_conn_init(&srv, RB_TLS_AES_128_GCM_SHA256, true, a, b, 32, 0, 0), 0);
    assert_int_equal(rb_tls_conn_init(&cli, RB_TLS_AES_128_GCM_SHA256, false, b, a, 32, 0, 0), 0);
    uint8_t shortnst[5] = {4, 0, 0, 1, 0};
    memcpy(rec + 5, shortnst, 5);
    rec[10] = RB_TLS_CT_HANDSHAKE;
    len = rb__tls_seal_inner(&srv, S, rec, 6);
    assert_int_equal(rb_tls_open(&cli, S, rec, (size_t)len, &o), -EILSEQ);
    assert_int_equal(o.alert, RB_TLS_ALERT_DECODE_ERROR);
    /* application data inside a ticket: unexpected_message */
    assert_int_equal(rb_tls_conn_init(&srv, RB_TLS_AES_128_GCM_SHA256, true, a, b, 32, 0, 0), 0);
    assert_int_equal(rb_tls_conn_init(&cli, RB_TLS_AES_128_GCM_SHA256, false, b, a, 32, 0, 0), 0);
    memcpy(rec + 5, nst, 10);
    rec[15] = RB_TLS_CT_HANDSHAKE;
    len = rb__tls_seal_inner(&srv, S, rec, 11);
    assert_int_equal(rb_tls_open(&cli, S, rec, (size_t)len, &o), RB_TLS_NOTHING);
    memcpy(rec + 5, "data", 4);
    len = rb_tls_seal(&srv, S, rec, 4);
    assert_int_equal(rb_tls_open(&cli, S, rec, (size_t)len, &o), -EPROTO);
    rb_tls_conn_wipe(&srv);
    rb_tls_conn_wipe(&cli);
}

/* ---- the collector ---- */
struct col {
    int n;
    size_t lens[64];
    uint8_t first[64];
    int stop_at;
};

static int col_record(void *ctx, uint8_t *rec, size_t len)
{
    struct col *c = ctx;
    assert_int_equal(rb_tls_record_len(rec), (int)len);
    c->lens[c->n] = len;
    c->first[c->n] = rec[5];
    c->n++;
    return c->n == c->stop_at;
}

static void test_feed(void **state)
{
    (void)state;
    /* five records of 0..3000 body bytes (header checked only for type and length) */
    static uint8_t stream[8192];
    const size_t bodies[5] = {17, 1, 300, 3000, 16};
    size_t total = 0;
    for (int i = 0; i < 5; i++) {
        uint8_t *r = stream + total;
        r[0] = RB_TLS_CT_APPDATA, r[1] = 3, r[2] = 3;
        r[3] = (uint8_t)(bodies[i] >> 8), r[4] = (uint8_t)bodies[i];
        memset(r + 5, 'a' + i, bodies[i]);
        total += 5 + bodies[i];
    }
    static uint8_t copy[8192];
    for (size_t cut1 = 0; cut1 <= total; cut1 += 1) {
        size_t cut2 = cut1 + (total - cut1) / 2;
        struct col c = {.stop_at = -1};
        struct rb_tls_part *part = NULL;
        const struct rb_tls_rx rx = {.part = &part, .record = col_record, .ctx = &c};
        memcpy(copy, stream, total);
        assert_int_equal(rb_tls_feed(&rx, copy, cut1), 0);
        assert_int_equal(rb_tls_feed(&rx, copy + cut1, cut2 - cut1), 0);
        assert_int_equal(rb_tls_feed(&rx, copy + cut2, total - cut2), 0);
        assert_null(part);
        assert_int_equal(c.n, 5);
        for (int i = 0; i < 5; i++) {
            assert_int_equal(c.lens[i], 5 + bodies[i]);
            assert_int_equal(c.first[i], 'a' + i);
        }
    }
    /* byte by byte, and a stop in the middle leaves nothing behind */
    struct col c = {.stop_at = 3};
    struct rb_tls_part *part = NULL;
    const struct rb_tls_rx rx = {.part = &part, .record = col_record, .ctx = &c};
    memcpy(copy, stream, total);
    int r = 0;
    for (size_t i = 0; i < total && r == 0; i++) {
        r = rb_tls_feed(&rx, copy + i, 1);
        assert_int_equal(rb_tls_part_bytes(part) > 0, r == 0 && part != NULL);
    }
    assert_int_equal(r, 1);
    assert_int_equal(c.n, 3);
    assert_null(part);
    /* headers no record may have */
    uint8_t big[5] = {23, 3, 3, (RB_TLS_MAX_CIPHERTEXT + 1) >> 8,
                      (RB_TLS_MAX_CIPHERTEXT + 1) & 255};
    uint8_t hs[5] = {22, 3, 3, 0, 4};
    struct col d = {.stop_at = -1};
    const struct rb_tls_rx rx2 = {.part = &part, .record = col_record, .ctx = &d};
    assert_int_equal(rb_tls_feed(&rx2, big, 5), -EMSGSIZE);
    assert_int_equal(rb_tls_feed(&rx2, hs, 2), 0); /* split header: judged when whole */
    assert_int_equal(rb_tls_feed(&rx2, hs + 2, 3), -EPROTO);
    free(part);
    assert_int_equal(d.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_vs_our_server),
        cmocka_unit_test(test_client_vs_openssl_server),
        cmocka_unit_test(test_client_resume),
        cmocka_unit_test(test_ticket_rules),
        cmocka_unit_test(test_feed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
