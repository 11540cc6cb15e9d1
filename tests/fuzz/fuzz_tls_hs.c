/* fuzz_tls_hs.c — libFuzzer target: the handshake driver's record framing on hostile input. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "fuzz_common.h"
#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * What a peer can send before a handshake is done goes through rb_tls_hs_step (engine/tls_hs.c):
 * our record framing (one record per step, header checks, the partial record it holds), then
 * OpenSSL. Byte 0 of the input picks the case:
 *   bit 0: start from a real ClientHello (made once by an OpenSSL client) with bytes of the
 *          input XORed into it (most mutations then reach OpenSSL's parser), else raw input;
 *   bit 1: the driver is a client (ringbeat-load's role) and the input is the "server's" flight;
 *   bits 2-7: how the stream is cut into steps.
 * Invariants: every step consumes at most what it was given and at least one byte (no spin), the
 * result is AGAIN, DONE or -EPROTO, a failure is final, output is bounded, nothing leaks.
 */

static struct rb_tls_ctx *SRV, *CLI;
static uint8_t HELLO[4096];
static size_t HELLO_LEN;
static uint8_t STREAM[1 << 16];

static void make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    FUZZ_CHECK(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    FUZZ_CHECK(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    FUZZ_CHECK(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void init(void)
{
    char dir[] = "/tmp/rb-fuzz-tls-XXXXXX", cert[64], key[64];
    FUZZ_CHECK(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    snprintf(key, sizeof(key), "%s/k.pem", dir);
    make_cert(cert, key);
    struct rb_tls_config cfg = {.cert_file = cert, .key_file = key, .allow_tls12 = true};
    FUZZ_CHECK(rb_tls_ctx_new(&cfg, &SRV) == 0);
    struct rb_tls_client_config ccfg = {.resume = false};
    FUZZ_CHECK(rb_tls_ctx_new_client(&ccfg, &CLI) == 0);
    unlink(cert), unlink(key), rmdir(dir);
    /* A real ClientHello: our client driver's first flight. */
    struct rb_tls_hs *hs;
    FUZZ_CHECK(rb_tls_hs_new(CLI, &hs) == 0);
    HELLO_LEN = rb_tls_hs_take_out(hs, HELLO, sizeof(HELLO));
    FUZZ_CHECK(HELLO_LEN > 5);
    rb_tls_hs_free(hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!SRV)
        init();
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    size_t n;
    if (mode & 1) {
        n = HELLO_LEN;
        memcpy(STREAM, HELLO, n);
        for (size_t i = 0; i + 1 < size; i += 2) /* (position, xor) pairs */
            STREAM[data[i] * 7 % n] ^= data[i + 1];
    } else {
        n = size < sizeof(STREAM) ? size : sizeof(STREAM);
        memcpy(STREAM, data, n);
    }
    struct rb_tls_hs *hs;
    FUZZ_CHECK(rb_tls_hs_new((mode & 2) ? CLI : SRV, &hs) == 0);
    uint8_t out[1 << 14];
    while (rb_tls_hs_take_out(hs, out, sizeof(out)) > 0) /* the client's own ClientHello */
        ;
    size_t off = 0, step = (mode >> 2) + 1;
    int r = RB_TLS_HS_AGAIN, steps = 0;
    while (off < n && r == RB_TLS_HS_AGAIN) {
        size_t give = step < n - off ? step : n - off, used = 0;
        unsigned runs = rb_tls_hs_runs(hs);
        r = rb_tls_hs_step(hs, STREAM + off, give, &used);
        FUZZ_CHECK(used >= 1 && used <= give);
        FUZZ_CHECK(rb_tls_hs_runs(hs) - runs <= 1); /* at most one OpenSSL run per step */
        FUZZ_CHECK(r == RB_TLS_HS_AGAIN || r == RB_TLS_HS_DONE || r == -EPROTO);
        off += used;
        size_t got;
        while ((got = rb_tls_hs_take_out(hs, out, sizeof(out))) > 0)
            FUZZ_CHECK(got <= sizeof(out));
        FUZZ_CHECK(++steps <= (int)n);
    }
    if (r == -EPROTO) { /* final */
        size_t used = 0;
        uint8_t b = 0;
        FUZZ_CHECK(rb_tls_hs_step(hs, &b, 1, &used) == -EPROTO && used == 0);
        int al = rb_tls_hs_alert(hs);
        FUZZ_CHECK(al == RB_TLS_ALERT_NONE || (al >= 0 && al <= 255));
    }
    rb_tls_hs_free(hs);
    ERR_clear_error();
    return 0;
}
