/* tls_ctx.c — the per-engine TLS context: OpenSSL SSL_CTX, reload, ticket keys and counters. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls_int.h"

#define DEFAULT_SUITES   "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define DEFAULT_ROTATE_S 3600

/*
 * Session tickets. OpenSSL's own ticket keys are random per SSL_CTX and never change, so a
 * process that runs for months would encrypt every ticket (and so every resumption secret) under
 * one key, and a reload (new SSL_CTX) would invalidate all tickets. Instead the keys live here,
 * outside the SSL_CTX: the current key encrypts, the previous one still decrypts (and the ticket
 * is then renewed), the one before is wiped. With a period P (default 1 h) a ticket is accepted
 * for P to 2P after it was issued, and a stolen ticket key exposes at most 2P of resumptions.
 * A reconnect storm (the case resumption is for) comes within minutes of the connections it
 * replaces, well inside P. Resumption is psk_dhe_ke (OpenSSL's default), so each resumed session
 * still has its own ECDHE: the ticket key protects the resumption, not past traffic.
 * Every resumed handshake gets a fresh ticket (the callback answers "renew"): TLS 1.3 clients use
 * a ticket once (RFC 8446 C.4; OpenSSL's client marks a used one not resumable), so without it a
 * client that reconnects again and again could resume only every other time.
 */
struct ticket_key {
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
    uint8_t valid;
};

struct rb_tls_ctx {
    pthread_mutex_t lock; /* guards ssl_ctx swaps, the ticket keys and the client's session */
    SSL_CTX *ssl_ctx;
    bool client;               /* rb_tls_ctx_new_client: the load generator's side */
    bool resume;               /* client: keep the newest ticket and offer it */
    SSL_SESSION *session;      /* client: the newest ticket (resume) */
    struct ticket_key keys[2]; /* [0] encrypts; [1] decrypts only */
    bool allow_tls12, no_tickets;
    uint32_t rotate_s, num_tickets;
    char *ciphers, *ciphersuites;
    _Atomic uint64_t next_rotate_ns;
    _Atomic uint64_t n_full, n_resumed, n_failed, n_tls12, n_reloads, n_rotations;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct rb_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int rc = -1, idx = -1;
    pthread_mutex_lock(&ctx->lock);
    if (enc) {
        idx = ctx->keys[0].valid ? 0 : -1;
        if (idx == 0 && RAND_bytes(iv, 16) == 1)
            memcpy(key_name, ctx->keys[0].name, 16);
        else
            idx = -1;
    } else {
        for (int i = 0; i < 2; i++)
            if (ctx->keys[i].valid && CRYPTO_memcmp(key_name, ctx->keys[i].name, 16) == 0)
                idx = i;
        if (idx < 0)
            rc = 0; /* unknown key: full handshake, new ticket */
    }
    if (idx >= 0) {
        struct ticket_key *k = &ctx->keys[idx];
        OSSL_PARAM params[3] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac, sizeof(k->hmac)),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_end()};
        if (EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc) == 1 &&
            EVP_MAC_CTX_set_params(hctx, params) == 1)
            rc = enc ? 1 : 2; /* 2: valid, and a fresh ticket follows the resumed handshake */
    }
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

static int new_key(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        return -EIO;
    k->valid = 1;
    return 0;
}

int rb_tls_ctx_rotate_tickets(struct rb_tls_ctx *ctx)
{
    struct ticket_key k;
    if (new_key(&k) < 0)
        return -EIO;
    pthread_mutex_lock(&ctx->lock);
    ctx->keys[1] = ctx->keys[0];
    ctx->keys[0] = k;
    pthread_mutex_unlock(&ctx->lock);
    OPENSSL_cleanse(&k, sizeof(k));
    atomic_fetch_add_explicit(&ctx->n_rotations, 1, memory_order_relaxed);
    return 0;
}

int rb_tls_ctx_maybe_rotate(struct rb_tls_ctx *ctx, uint64_t now_ns)
{
    uint64_t period_ns = (uint64_t)ctx->rotate_s * 1000000000ULL;
    uint64_t next = atomic_load_explicit(&ctx->next_rotate_ns, memory_order_relaxed);
    if (next == 0) {
        atomic_compare_exchange_strong(&ctx->next_rotate_ns, &next, now_ns + period_ns);
        return 0;
    }
    if (now_ns < next || ctx->no_tickets)
        return 0;
    /* One caller wins the deadline; the others see the new one. */
    if (!atomic_compare_exchange_strong(&ctx->next_rotate_ns, &next, now_ns + period_ns))
        return 0;
    return rb_tls_ctx_rotate_tickets(ctx) == 0 ? 1 : 0;
}

/* Only the three AEADs the record layer implements may be negotiated in TLS 1.3. */
static int check_suites(SSL_CTX *c)
{
    STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(c);
    int n13 = 0;
    for (int i = 0; i < sk_SSL_CIPHER_num(list); i++) {
        uint16_t id = SSL_CIPHER_get_protocol_id(sk_SSL_CIPHER_value(list, i));
        if ((id & 0xFF00) != 0x1300)
            continue;
        if (id != RB_TLS_AES_128_GCM_SHA256 && id != RB_TLS_AES_256_GCM_SHA384 &&
            id != RB_TLS_CHACHA20_POLY1305_SHA256)
            return -EINVAL;
        n13++;
    }
    return n13 > 0 ? 0 : -EINVAL;
}

static int build(struct rb_tls_ctx *ctx, const char *cert, const char *key, SSL_CTX **out)
{
    if (!cert || !key)
        return -EINVAL;
    if (access(cert, R_OK) < 0 || access(key, R_OK) < 0)
        return -errno;
    int rc = -EINVAL;
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (!c)
        return -ENOMEM;
    SSL_CTX_set_app_data(c, ctx);
    if (!SSL_CTX_set_min_proto_version(c, ctx->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION))
        goto out;
    /* No renegotiation (1.2), the server's preference order, no compression. Read-ahead stays
     * off: OpenSSL then reads exactly one record from the BIO at a time, which tls_hs.c relies
     * on to hand the bytes after the client's Finished to the record layer untouched. */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
    if (ctx->ciphers && !SSL_CTX_set_cipher_list(c, ctx->ciphers))
        goto out;
    if (!SSL_CTX_set_ciphersuites(c, ctx->ciphersuites ? ctx->ciphersuites : DEFAULT_SUITES) ||
        check_suites(c) < 0)
        goto out;
    rc = -EIO;
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1)
        goto out;
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
        int reason = ERR_GET_REASON(ERR_peek_last_error());
        if (reason == X509_R_KEY_VALUES_MISMATCH || reason == X509_R_KEY_TYPE_MISMATCH)
            rc = -EKEYREJECTED;
        goto out;
    }
    rc = -EKEYREJECTED;
    if (SSL_CTX_check_private_key(c) != 1)
        goto out;
    /* Idle connections give their buffers back (what TLS 1.2 connections keep using). */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    /* Tickets are stateless; a server-side cache would be memory and a lock per handshake. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(c, (const unsigned char *)"ringbeat", 8);
    SSL_CTX_set_max_early_data(c, 0); /* no 0-RTT: replayable, and nothing here needs it */
    if (ctx->no_tickets) {
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(c, 0);
    } else {
        SSL_CTX_set_num_tickets(c, ctx->num_tickets);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticket_cb);
        SSL_CTX_set_timeout(c, (long)ctx->rotate_s * 2); /* ticket lifetime hint */
    }
    SSL_CTX_set_keylog_callback(c, rb__tls_keylog_cb);
    SSL_CTX_set_msg_callback(c, rb__tls_msg_cb);
    SSL_CTX_set_info_callback(c, rb__tls_info_cb);
    *out = c;
    return 0;
out:
    ERR_clear_error(); /* the thread's OpenSSL error queue must not leak into later calls */
    SSL_CTX_free(c);
    return rc;
}

int rb_tls_ctx_new(const struct rb_tls_config *cfg, struct rb_tls_ctx **out)
{
    struct rb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->allow_tls12 = cfg->allow_tls12;
    ctx->no_tickets = cfg->no_tickets;
    ctx->rotate_s = cfg->ticket_rotate_s ? cfg->ticket_rotate_s : DEFAULT_ROTATE_S;
    ctx->num_tickets = cfg->num_tickets ? cfg->num_tickets : 1;
    ctx->ciphers = dup_or_null(cfg->ciphers);
    ctx->ciphersuites = dup_or_null(cfg->ciphersuites);
    int rc = -ENOMEM;
    if ((cfg->ciphers && !ctx->ciphers) || (cfg->ciphersuites && !ctx->ciphersuites))
        goto err;
    if (!ctx->no_tickets && (rc = new_key(&ctx->keys[0])) < 0)
        goto err;
    if ((rc = build(ctx, cfg->cert_file, cfg->key_file, &ctx->ssl_ctx)) < 0)
        goto err;
    *out = ctx;
    return 0;
err:
    rb_tls_ctx_free(ctx);
    return rc;
}

void rb_tls_ctx_free(struct rb_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_SESSION_free(ctx->session);
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx->ciphers);
    free(ctx->ciphersuites);
    pthread_mutex_destroy(&ctx->lock);
    OPENSSL_cleanse(ctx->keys, sizeof(ctx->keys));
    free(ctx);
}

/* ---- the client role: ringbeat-load's handshakes (no certificate check: a load generator) ---- */

/* A ticket arrived (the client's session cache mode makes OpenSSL call this). Returning 1 keeps
 * the reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct rb_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    rb__tls_hs_ticket(ssl);
    if (!ctx->resume)
        return 0;
    pthread_mutex_lock(&ctx->lock);
    SSL_SESSION *old = ctx->session;
    ctx->session = sess;
    pthread_mutex_unlock(&ctx->lock);
    SSL_SESSION_free(old);
    return 1;
}

int rb_tls_ctx_new_client(const struct rb_tls_client_config *cfg, struct rb_tls_ctx **out)
{
    struct rb_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->client = true;
    ctx->resume = cfg->resume;
    int rc = -ENOMEM;
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c)
        goto err;
    ctx->ssl_ctx = c;
    SSL_CTX_set_app_data(c, ctx);
    rc = -EINVAL;
    if (!SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(c, cfg->ciphersuites ? cfg->ciphersuites : DEFAULT_SUITES) ||
        check_suites(c) < 0)
        goto err;
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION);
    /* Read-ahead stays off, as on the server: tls_hs.c feeds one record at a time. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c, new_session_cb);
    SSL_CTX_set_keylog_callback(c, rb__tls_keylog_cb);
    SSL_CTX_set_msg_callback(c, rb__tls_msg_cb);
    SSL_CTX_set_info_callback(c, rb__tls_info_cb);
    *out = ctx;
    return 0;
err:
    ERR_clear_error();
    rb_tls_ctx_free(ctx);
    return rc;
}

bool rb__tls_ctx_is_client(const struct rb_tls_ctx *ctx)
{
    return ctx->client;
}

bool rb__tls_ctx_resumes(const struct rb_tls_ctx *ctx)
{
    return ctx->resume;
}

int rb_tls_ctx_reload(struct rb_tls_ctx *ctx, const char *cert_file, const char *key_file)
{
    if (ctx->client)
        return -EINVAL;
    SSL_CTX *c, *old;
    int rc = build(ctx, cert_file, key_file, &c);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    old = ctx->ssl_ctx;
    ctx->ssl_ctx = c;
    pthread_mutex_unlock(&ctx->lock);
    SSL_CTX_free(old); /* SSL objects made from it hold their own references */
    atomic_fetch_add_explicit(&ctx->n_reloads, 1, memory_order_relaxed);
    return 0;
}

SSL *rb__tls_ctx_new_ssl(struct rb_tls_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    SSL_CTX *c = ctx->ssl_ctx;
    SSL_CTX_up_ref(c);
    pthread_mutex_unlock(&ctx->lock);
    SSL *ssl = SSL_new(c);
    SSL_CTX_free(c);
    if (ssl && ctx->client && ctx->resume) {
        pthread_mutex_lock(&ctx->lock);
        if (ctx->session)
            SSL_set_session(ssl, ctx->session);
        pthread_mutex_unlock(&ctx->lock);
    }
    return ssl;
}

void rb__tls_count(struct rb_tls_ctx *ctx, enum rb__tls_counter which)
{
    _Atomic uint64_t *n = which == RB__TLS_FULL      ? &ctx->n_full
                          : which == RB__TLS_RESUMED ? &ctx->n_resumed
                          : which == RB__TLS_FAILED  ? &ctx->n_failed
                                                     : &ctx->n_tls12;
    atomic_fetch_add_explicit(n, 1, memory_order_relaxed);
}

void rb_tls_ctx_counters(const struct rb_tls_ctx *ctx, struct rb_tls_counters *out)
{
    struct rb_tls_ctx *c = (struct rb_tls_ctx *)ctx; /* atomic loads of a const object */
    out->full = atomic_load_explicit(&c->n_full, memory_order_relaxed);
    out->resumed = atomic_load_explicit(&c->n_resumed, memory_order_relaxed);
    out->failed = atomic_load_explicit(&c->n_failed, memory_order_relaxed);
    out->tls12 = atomic_load_explicit(&c->n_tls12, memory_order_relaxed);
    out->reloads = atomic_load_explicit(&c->n_reloads, memory_order_relaxed);
    out->rotations = atomic_load_explicit(&c->n_rotations, memory_order_relaxed);
}
