/* bench_tls.c — idle TLS 1.3 connection memory, record and handshake CPU: OpenSSL vs ours. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#ifdef RB_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "tls.h"
#include "tls_int.h"

/*
 * One run, everything in memory (no sockets, so only user-space state is measured):
 *   (a) N server SSL objects from the engine's SSL_CTX (SSL_MODE_RELEASE_BUFFERS), each kept after
 *       its handshake with empty memory BIOs (as small as a socket BIO);
 *   (b) N connections handshaken by rb_tls_hs, exported to a malloc'd struct rb_tls_conn, the SSL
 *       object freed.
 * The clients are OpenSSL SSL objects, freed after each handshake; their traffic secrets (keylog)
 * give a client-side rb_tls_conn per connection, kept in a preallocated array outside the
 * measured deltas, to seal the requests and check the answers.
 */

#define REC_LEN       (12 + RB_TLS_SEAL_OVERHEAD)
#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* (b)'s states come from their own jemalloc arena, as the engine's records come from a slab in a
 * dedicated arena: handshake garbage does not share their pages. */
static unsigned CONN_ARENA;
static void *conn_alloc(size_t n)
{
#ifdef RB_HAVE_JEMALLOC
    if (CONN_ARENA)
        return mallocx(n, MALLOCX_ARENA(CONN_ARENA) | MALLOCX_TCACHE_NONE);
#endif
    return malloc(n);
}
static void conn_free(void *p)
{
#ifdef RB_HAVE_JEMALLOC
    if (CONN_ARENA) {
        dallocx(p, MALLOCX_TCACHE_NONE);
        return;
    }
#endif
    free(p);
}

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* RSS after jemalloc gave back its dirty pages: what the live objects occupy, not the garbage of
 * the handshakes that made them. */
static long rss_bytes(void)
{
#ifdef RB_HAVE_JEMALLOC
    mallctl("arena." STRINGIFY(MALLCTL_ARENAS_ALL) ".purge", NULL, NULL, NULL, 0);
#endif
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static long allocated_bytes(void)
{
#ifdef RB_HAVE_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch), v = 0, vsz = sizeof(v);
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    if (mallctl("stats.allocated", &v, &vsz, NULL, 0) == 0)
        return (long)v;
#endif
    return -1;
}

/* With BENCH_TLS_DEBUG set: where the memory is, as jemalloc sees it. */
static void je_stats(const char *label)
{
#ifdef RB_HAVE_JEMALLOC
    if (!getenv("BENCH_TLS_DEBUG"))
        return;
    static const char *const names[] = {"stats.allocated", "stats.active", "stats.metadata",
                                        "stats.resident", "stats.mapped"};
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    fprintf(stderr, "%-8s rss %ld", label, rss_bytes());
    for (int i = 0; i < 5; i++) {
        size_t v = 0, vsz = sizeof(v);
        mallctl(names[i], &v, &vsz, NULL, 0);
        fprintf(stderr, " %s %zu", names[i] + 6, v);
    }
    fprintf(stderr, "\n");
#else
    (void)label;
#endif
}

/* Bytes this thread has malloc'd so far (cumulative): a hot path must not move it. */
static uint64_t thread_allocated(void)
{
#ifdef RB_HAVE_JEMALLOC
    uint64_t v = 0;
    size_t sz = sizeof(v);
    if (mallctl("thread.allocated", &v, &sz, NULL, 0) == 0)
        return v;
#endif
    return 0;
}
static uint64_t LOOP_ALLOC; /* bytes allocated inside the last timed record loop */

static void die(const char *what)
{
    fprintf(stderr, "bench_tls: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1, -1, 0);
    X509_set_issuer_name(x, name);
    if (!k || X509_sign(x, k, EVP_sha256()) <= 0)
        die("certificate");
    FILE *f = fopen(cert_path, "w"), *g = fopen(key_path, "w");
    if (!f || !g)
        die("cannot write the certificate");
    PEM_write_X509(f, x);
    PEM_write_PrivateKey(g, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    fclose(g);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* ---- the client side ---- */
static struct {
    uint8_t c[48], s[48];
    size_t len;
} CAP;

static void client_keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    uint8_t *dst = strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0   ? CAP.c
                   : strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0 ? CAP.s
                                                                        : NULL;
    if (!dst)
        return;
    const char *p = strchr(line + 24, ' ') + 1;
    size_t n = 0;
    unsigned v;
    while (n < 48 && sscanf(p, "%2x", &v) == 1)
        dst[n++] = (uint8_t)v, p += 2;
    CAP.len = n;
}

static SSL_CTX *CLI_CTX;
static struct rb_tls_ctx *CTX;
static struct rb_tls_scratch *S;

struct cli {
    SSL *ssl;
    BIO *rbio, *wbio;
};

static void cli_new(struct cli *c, SSL_SESSION *sess)
{
    c->ssl = SSL_new(CLI_CTX);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    if (sess)
        SSL_set_session(c->ssl, sess);
}

static uint8_t XFER[1 << 16];

static size_t bio_move(BIO *from, BIO *to)
{
    int n = BIO_read(from, XFER, sizeof(XFER));
    if (n > 0)
        BIO_write(to, XFER, n);
    return n > 0 ? (size_t)n : 0;
}

/* Finishes the client's view: reads the ticket; optionally keeps the session. */
static void cli_finish(struct cli *c, struct rb_tls_conn *mirror, SSL_SESSION **sess)
{
    uint8_t tmp[16];
    size_t n;
    SSL_read_ex(c->ssl, tmp, sizeof(tmp), &n); /* processes the NewSessionTicket */
    if (mirror &&
        rb_tls_conn_init(mirror, SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(c->ssl)), false,
                         CAP.s, CAP.c, CAP.len, 1, 0) < 0)
        die("client mirror");
    if (sess)
        *sess = SSL_get1_session(c->ssl);
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
}

/* (a): a plain OpenSSL server object. server_s accumulates server-side CPU. */
static SSL *handshake_openssl(struct rb_tls_conn *mirror, SSL_SESSION *in, SSL_SESSION **out,
                              double *server_s)
{
    struct cli c;
    cli_new(&c, in);
    SSL *s = rb__tls_ctx_new_ssl(CTX);
    BIO *sr = BIO_new(BIO_s_mem()), *sw = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(sr, -1);
    SSL_set_bio(s, sr, sw);
    SSL_set_accept_state(s);
    int cdone = 0, sdone = 0;
    for (int round = 0; round < 10 && !(cdone && sdone); round++) {
        cdone = SSL_do_handshake(c.ssl) == 1;
        bio_move(c.wbio, sr);
        double t0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        sdone = SSL_do_handshake(s) == 1;
        *server_s += now_s(CLOCK_THREAD_CPUTIME_ID) - t0;
        bio_move(sw, c.rbio);
    }
    if (!cdone || !sdone)
        die("openssl handshake");
    cli_finish(&c, mirror, out);
    /* As a server with sockets would hold it: fresh, empty BIOs. */
    BIO *r2 = BIO_new(BIO_s_mem()), *w2 = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(r2, -1);
    SSL_set_bio(s, r2, w2);
    return s;
}

/* (b): ours. */
static struct rb_tls_conn *handshake_ours(struct rb_tls_conn *mirror, SSL_SESSION *in,
                                          SSL_SESSION **out, double *server_s)
{
    struct cli c;
    cli_new(&c, in);
    struct rb_tls_hs *hs;
    if (rb_tls_hs_new(CTX, &hs) < 0)
        die("rb_tls_hs_new");
    struct rb_tls_conn *conn = conn_alloc(sizeof(*conn));
    int done = 0;
    for (int round = 0; round < 10 && !done; round++) {
        SSL_do_handshake(c.ssl);
        int n = BIO_read(c.wbio, XFER, sizeof(XFER));
        double t0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        for (int off = 0; off < n && !done;) {
            size_t used;
            int r = rb_tls_hs_step(hs, XFER + off, (size_t)(n - off), &used);
            if (r < 0)
                die("rb_tls_hs_step");
            off += (int)used;
            done = r == RB_TLS_HS_DONE;
        }
        uint8_t out_buf[8192];
        size_t m;
        while ((m = rb_tls_hs_take_out(hs, out_buf, sizeof(out_buf))) > 0)
            BIO_write(c.rbio, out_buf, (int)m);
        if (done && rb_tls_hs_export(hs, conn) < 0)
            die("export");
        *server_s += now_s(CLOCK_THREAD_CPUTIME_ID) - t0;
    }
    if (!done || SSL_do_handshake(c.ssl) != 1)
        die("our handshake");
    cli_finish(&c, mirror, out);
    return conn;
}

/* (c): TLS 1.2, allowed: our driver keeps the SSL object. With keep_client, the client stays
 * (for the record benchmark); otherwise it is freed. */
static SSL_CTX *CLI_CTX12;
static struct rb_tls_ctx *CTX12;

static struct rb_tls_hs *handshake_12(struct cli *keep_client, double *server_s)
{
    struct cli c;
    c.ssl = SSL_new(CLI_CTX12);
    c.rbio = BIO_new(BIO_s_mem());
    c.wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c.rbio, -1);
    SSL_set_bio(c.ssl, c.rbio, c.wbio);
    SSL_set_connect_state(c.ssl);
    struct rb_tls_hs *hs;
    if (rb_tls_hs_new(CTX12, &hs) < 0)
        die("rb_tls_hs_new (1.2)");
    int done = 0, cdone = 0;
    for (int round = 0; round < 10 && !(done && cdone); round++) {
        cdone = SSL_do_handshake(c.ssl) == 1;
        int n = BIO_read(c.wbio, XFER, sizeof(XFER));
        double t0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        for (int off = 0; off < n && !done;) {
            size_t used;
            int r = rb_tls_hs_step(hs, XFER + off, (size_t)(n - off), &used);
            if (r < 0)
                die("rb_tls_hs_step (1.2)");
            off += (int)used;
            done = r == RB_TLS_HS_DONE;
        }
        uint8_t out_buf[8192];
        size_t m;
        while ((m = rb_tls_hs_take_out(hs, out_buf, sizeof(out_buf))) > 0)
            BIO_write(c.rbio, out_buf, (int)m);
        *server_s += now_s(CLOCK_THREAD_CPUTIME_ID) - t0;
    }
    if (!done || !cdone || rb_tls_hs_version(hs) != TLS1_2_VERSION)
        die("TLS 1.2 handshake");
    if (keep_client) {
        *keep_client = c;
    } else {
        SSL_set_shutdown(c.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c.ssl);
    }
    return hs;
}

#define REC12_MAX 64
static double records_12(size_t n, size_t reps)
{
    struct cli *cl = calloc(n, sizeof(*cl));
    struct rb_tls_hs **hs = calloc(n, sizeof(*hs));
    size_t total = n * reps;
    uint8_t *req = malloc(total * REC12_MAX), *resp = malloc(total * REC12_MAX);
    int *req_len = calloc(total, sizeof(int)), *resp_len = calloc(total, sizeof(int));
    double dummy = 0;
    if (!cl || !hs || !req || !resp || !req_len || !resp_len)
        die("out of memory");
    for (size_t i = 0; i < n; i++)
        hs[i] = handshake_12(&cl[i], &dummy);
    for (size_t i = 0; i < total; i++) {
        SSL_write(cl[i % n].ssl, "heartbeat-12", 12);
        req_len[i] = BIO_read(cl[i % n].wbio, req + i * REC12_MAX, REC12_MAX);
    }
    uint64_t m0 = thread_allocated();
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (size_t i = 0; i < total; i++) {
        uint8_t buf[64];
        struct rb_tls_hs *h = hs[i % n];
        if (rb_tls12_feed(h, req + i * REC12_MAX, (size_t)req_len[i]) < 0 ||
            rb_tls12_read(h, buf, sizeof(buf)) != 12 || rb_tls12_write(h, buf, 12) < 0)
            die("TLS 1.2 record");
        resp_len[i] = (int)rb_tls_hs_take_out(h, resp + i * REC12_MAX, REC12_MAX);
    }
    double dt = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0;
    LOOP_ALLOC = (thread_allocated() - m0) / total;
    for (size_t i = 0; i < total; i++) {
        uint8_t buf[64];
        BIO_write(cl[i % n].rbio, resp + i * REC12_MAX, resp_len[i]);
        if (SSL_read(cl[i % n].ssl, buf, sizeof(buf)) != 12 || memcmp(buf, "heartbeat-12", 12))
            die("check answer (1.2)");
    }
    for (size_t i = 0; i < n; i++) {
        rb_tls_hs_free(hs[i]);
        SSL_free(cl[i].ssl);
    }
    free(cl), free(hs), free(req), free(resp), free(req_len), free(resp_len);
    return dt / (double)total;
}

/* Seal+open per 12-byte record on the server side: open the request, seal the answer. */
static double records_ours(struct rb_tls_conn **conns, struct rb_tls_conn *mirrors, size_t n,
                           size_t reps, uint8_t *req, uint8_t *resp)
{
    size_t total = n * reps;
    for (size_t i = 0; i < total; i++) {
        struct rb_tls_conn *m = &mirrors[i % n];
        memcpy(req + i * REC_LEN + 5, "heartbeat-12", 12);
        if (rb_tls_seal(m, S, req + i * REC_LEN, 12) != REC_LEN)
            die("seal request");
    }
    uint64_t m0 = thread_allocated();
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (size_t i = 0; i < total; i++) {
        struct rb_tls_opened o;
        uint8_t *q = req + i * REC_LEN, *a = resp + i * REC_LEN;
        if (rb_tls_open(conns[i % n], S, q, REC_LEN, &o) != RB_TLS_DATA || o.len != 12)
            die("open");
        memcpy(a + 5, o.data, 12);
        rb_tls_seal(conns[i % n], S, a, 12);
    }
    double dt = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0;
    LOOP_ALLOC = (thread_allocated() - m0) / total;
    for (size_t i = 0; i < total; i++) {
        struct rb_tls_opened o;
        if (rb_tls_open(&mirrors[i % n], S, resp + i * REC_LEN, REC_LEN, &o) != RB_TLS_DATA ||
            memcmp(o.data, "heartbeat-12", 12) != 0)
            die("check answer (ours)");
    }
    return dt / (double)total;
}

static double records_openssl(SSL **ssls, struct rb_tls_conn *mirrors, size_t n, size_t reps,
                              uint8_t *req, uint8_t *resp)
{
    size_t total = n * reps;
    for (size_t i = 0; i < total; i++) {
        memcpy(req + i * REC_LEN + 5, "heartbeat-12", 12);
        if (rb_tls_seal(&mirrors[i % n], S, req + i * REC_LEN, 12) != REC_LEN)
            die("seal request");
    }
    uint64_t m0 = thread_allocated();
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (size_t i = 0; i < total; i++) {
        SSL *s = ssls[i % n];
        uint8_t buf[64];
        BIO_write(SSL_get_rbio(s), req + i * REC_LEN, REC_LEN);
        if (SSL_read(s, buf, sizeof(buf)) != 12 || SSL_write(s, buf, 12) != 12 ||
            BIO_read(SSL_get_wbio(s), resp + i * REC_LEN, REC_LEN) != REC_LEN)
            die("openssl record");
    }
    double dt = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0;
    LOOP_ALLOC = (thread_allocated() - m0) / total;
    for (size_t i = 0; i < total; i++) {
        struct rb_tls_opened o;
        if (rb_tls_open(&mirrors[i % n], S, resp + i * REC_LEN, REC_LEN, &o) != RB_TLS_DATA ||
            memcmp(o.data, "heartbeat-12", 12) != 0)
            die("check answer (openssl)");
    }
    return dt / (double)total;
}

/* What re-keying a cipher context costs, per AEAD: key + IV vs IV only (the same calls as
 * tls_record.c's per-record path). */
static void rekey_cost(void)
{
    static const char *const names[3] = {"AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"};
    uint8_t key[32] = {1}, iv[12] = {2}, aad[5] = {23, 3, 3, 0, 29}, buf[64] = {0};
    const int n = 200000;
    for (int k = 0; k < 3; k++) {
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, names[k], NULL);
        EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
        EVP_CipherInit_ex2(x, c, NULL, NULL, 1, NULL);
        double per[2];
        for (int withkey = 0; withkey < 2; withkey++) {
            double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
            for (int i = 0; i < n; i++) {
                int outl;
                iv[11] = (uint8_t)i;
                EVP_CipherInit_ex2(x, NULL, withkey || i == 0 ? key : NULL, iv, 1, NULL);
                EVP_CipherUpdate(x, NULL, &outl, aad, 5);
                EVP_CipherUpdate(x, buf, &outl, buf, 13);
                EVP_CipherFinal_ex(x, buf + 13, &outl);
                EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, buf + 20);
            }
            per[withkey] = (now_s(CLOCK_PROCESS_CPUTIME_ID) - t0) / n * 1e9;
        }
        printf("  %-18s seal of 13 B: %6.0f ns with IV only, %6.0f ns with key + IV "
               "(re-key %+.0f ns)\n",
               names[k], per[0], per[1], per[1] - per[0]);
        EVP_CIPHER_CTX_free(x);
        EVP_CIPHER_free(c);
    }
}

int main(int argc, char **argv)
{
    size_t n = 100000, nh = 2000, reps = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conns"))
            n = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--handshakes"))
            nh = strtoul(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_tls [--conns N] [--handshakes N]\n");
            return 2;
        }
    }
    char dir[] = "/tmp/bench-tls-XXXXXX", cert[64], key[64];
    if (!mkdtemp(dir))
        die("mkdtemp");
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    snprintf(key, sizeof(key), "%s/k.pem", dir);
    make_cert(cert, key);
    struct rb_tls_config cfg = {.cert_file = cert, .key_file = key};
    if (rb_tls_ctx_new(&cfg, &CTX) < 0 || rb_tls_scratch_new(&S) < 0)
        die("context");
    cfg.allow_tls12 = true;
    if (rb_tls_ctx_new(&cfg, &CTX12) < 0)
        die("context (1.2)");
    CLI_CTX12 = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(CLI_CTX12, TLS1_2_VERSION);
    CLI_CTX = SSL_CTX_new(TLS_client_method());
    unlink(cert), unlink(key), rmdir(dir);
    SSL_CTX_set_keylog_callback(CLI_CTX, client_keylog);
    SSL_CTX_set_ciphersuites(CLI_CTX, "TLS_AES_128_GCM_SHA256");

    /* Everything the measurement needs, allocated before it. */
    struct rb_tls_conn *mir_a = calloc(n, sizeof(*mir_a)), *mir_b = calloc(n, sizeof(*mir_b));
    SSL **ssls = calloc(n, sizeof(*ssls));
    struct rb_tls_hs **hs12 = calloc(n, sizeof(*hs12));
    struct rb_tls_conn **conns = calloc(n, sizeof(*conns));
    size_t rec_n = n > 200000 ? n : 200000;
    uint8_t *req = malloc(rec_n * REC_LEN), *resp = malloc(rec_n * REC_LEN);
    if (!mir_a || !mir_b || !ssls || !hs12 || !conns || !req || !resp)
        die("out of memory");
    /* Touched now, so that their pages are not counted in the deltas below (with a non-zero
     * byte: the compiler drops a memset to 0 of calloc'd memory, or turns malloc+memset into
     * calloc, and the pages would stay untouched). */
    memset(req, 1, rec_n * REC_LEN), memset(resp, 1, rec_n * REC_LEN);
    memset(mir_a, 1, n * sizeof(*mir_a)), memset(mir_b, 1, n * sizeof(*mir_b));
    memset(ssls, 1, n * sizeof(*ssls)), memset(conns, 1, n * sizeof(*conns));
    memset(hs12, 1, n * sizeof(*hs12));
    double dummy = 0;
    /* warm up both paths (first-use allocations inside OpenSSL) */
#ifdef RB_HAVE_JEMALLOC
    size_t asz = sizeof(CONN_ARENA);
    if (mallctl("arenas.create", &CONN_ARENA, &asz, NULL, 0) != 0)
        CONN_ARENA = 0;
#endif
    SSL_free(handshake_openssl(&mir_a[0], NULL, NULL, &dummy));
    conn_free(handshake_ours(&mir_b[0], NULL, NULL, &dummy));
    rb_tls_hs_free(handshake_12(NULL, &dummy));

    printf("bench_tls: %zu idle TLS 1.3 connections (TLS_AES_128_GCM_SHA256, P-256 cert), "
           "OpenSSL %s\n",
           n, OpenSSL_version(OPENSSL_VERSION_STRING));
    je_stats("start");
    long r0 = rss_bytes(), a0 = allocated_bytes();
    double t0 = now_s(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
        ssls[i] = handshake_openssl(&mir_a[i], NULL, NULL, &dummy);
    je_stats("(a)");
    long r1 = rss_bytes(), a1 = allocated_bytes();
    double t1 = now_s(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
        conns[i] = handshake_ours(&mir_b[i], NULL, NULL, &dummy);
    je_stats("(b)");
    long r2 = rss_bytes(), a2 = allocated_bytes();
    double t2 = now_s(CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++)
        hs12[i] = handshake_12(NULL, &dummy);
    long r3 = rss_bytes(), a3 = allocated_bytes();
    double t3 = now_s(CLOCK_MONOTONIC);
    printf("memory per idle connection        RSS delta   jemalloc allocated delta\n");
    printf("  (a) OpenSSL SSL object, RELEASE_BUFFERS  %8.0f B   %8.0f B   (%.0f s)\n",
           (double)(r1 - r0) / (double)n, a0 < 0 ? -1.0 : (double)(a1 - a0) / (double)n, t1 - t0);
    printf("  (b) rb_tls_conn (sizeof %zu)             %8.0f B   %8.0f B   (%.0f s)\n",
           sizeof(struct rb_tls_conn), (double)(r2 - r1) / (double)n,
           a0 < 0 ? -1.0 : (double)(a2 - a1) / (double)n, t2 - t1);
    printf("  (c) TLS 1.2: rb_tls_hs with its SSL object %6.0f B   %8.0f B   (%.0f s)\n",
           (double)(r3 - r2) / (double)n, a0 < 0 ? -1.0 : (double)(a3 - a2) / (double)n, t3 - t2);
    for (size_t i = 0; i < n; i++)
        rb_tls_hs_free(hs12[i]);

    printf("server CPU per 12-byte heartbeat record (open the request + seal the answer)\n");
    double oa = records_openssl(ssls, mir_a, n, reps, req, resp);
    uint64_t alloc_a = LOOP_ALLOC;
    double ob = records_ours(conns, mir_b, n, reps, req, resp);
    printf("  round robin over %zu connections: (a) OpenSSL %.0f ns  (b) ours %.0f ns"
           "  (malloc'd per record: (a) %llu B, (b) %llu B)\n",
           n, oa * 1e9, ob * 1e9, (unsigned long long)alloc_a, (unsigned long long)LOOP_ALLOC);
    oa = records_openssl(ssls, mir_a, 1, rec_n, req, resp);
    ob = records_ours(conns, mir_b, 1, rec_n, req, resp);
    printf("  one connection, %zu records:     (a) OpenSSL %.0f ns  (b) ours %.0f ns\n", rec_n,
           oa * 1e9, ob * 1e9);
    double oc = records_12(n < 10000 ? n : 10000, 20);
    printf("  TLS 1.2 (c), round robin over %zu connections: %.0f ns\n", n < 10000 ? n : 10000,
           oc * 1e9);
    rekey_cost();

    for (size_t i = 0; i < n; i++) {
        SSL_free(ssls[i]);
        rb_tls_conn_wipe(conns[i]);
        conn_free(conns[i]);
    }

    printf("handshakes on one core (server-side thread CPU; clients in the same thread, "
           "not counted)\n");
    SSL_SESSION *sess = NULL;
    conn_free(handshake_ours(NULL, NULL, &sess, &dummy));
    struct rb_tls_counters k0, k1;
    rb_tls_ctx_counters(CTX, &k0);
    double full_s = 0, res_s = 0, wall0 = now_s(CLOCK_MONOTONIC);
    for (size_t i = 0; i < nh; i++)
        conn_free(handshake_ours(NULL, NULL, NULL, &full_s));
    double wall1 = now_s(CLOCK_MONOTONIC);
    for (size_t i = 0; i < nh; i++)
        conn_free(handshake_ours(NULL, sess, NULL, &res_s));
    double wall2 = now_s(CLOCK_MONOTONIC);
    rb_tls_ctx_counters(CTX, &k1);
    printf("  full:    %6.0f /s server CPU (%5.0f us each), %6.0f /s client+server pairs; "
           "counted full %llu\n",
           (double)nh / full_s, full_s / (double)nh * 1e6, (double)nh / (wall1 - wall0),
           (unsigned long long)(k1.full - k0.full));
    printf("  resumed: %6.0f /s server CPU (%5.0f us each), %6.0f /s client+server pairs; "
           "counted resumed %llu\n",
           (double)nh / res_s, res_s / (double)nh * 1e6, (double)nh / (wall2 - wall1),
           (unsigned long long)(k1.resumed - k0.resumed));
    SSL_SESSION_free(sess);
    free(hs12);
    SSL_CTX_free(CLI_CTX12);
    rb_tls_ctx_free(CTX12);
    free(mir_a), free(mir_b), free(ssls), free(conns), free(req), free(resp);
    SSL_CTX_free(CLI_CTX);
    rb_tls_scratch_free(S);
    rb_tls_ctx_free(CTX);
    return 0;
}
