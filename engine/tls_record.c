/* tls_record.c — the TLS 1.3 record layer (RFC 8446 section 5) in user space, after handshakes. */

/*
 * Why this exists: an established TLS 1.3 connection needs only its two traffic secrets, keys,
 * IVs and sequence numbers, yet OpenSSL's SSL object keeps kilobytes per connection. This kernel
 * has no kTLS (CONFIG_TLS unset), so the engine takes the secrets from the handshake (tls_hs.c),
 * frees the SSL object, and runs the record layer here with libcrypto's AEADs. No Debian library
 * offers a record layer without a per-connection object (OpenSSL, GnuTLS, wolfSSL, mbedTLS all
 * keep one), hence the hand-written part; the cryptography itself is libcrypto's.
 *
 * Why it is safe, what is verified:
 * - Every record is authenticated (AEAD over the 5-byte header as AAD) before any byte of it is
 *   interpreted; nonce = static IV xor the 64-bit sequence number, which is never reused (write
 *   keys are refused at the AEAD limit, read sequence numbers may not wrap).
 * - Outer type must be application_data; TLSCiphertext.length <= 2^14 + 256 and the inner content
 *   <= 2^14 (record_overflow); padding is stripped from the end; an all-zero inner plaintext, an
 *   unknown or change_cipher_spec type, a zero-length handshake fragment and any handshake message
 *   other than KeyUpdate are unexpected_message; an alert must be exactly 2 bytes (decode_error).
 * - KeyUpdate (RFC 8446 4.6.3): may be split across records (4 bytes kept), must end its record,
 *   length 1, request 0 or 1 (illegal_parameter otherwise); read keys move to the next secret;
 *   update_requested makes us send our own KeyUpdate (in the reply, before any later record) and
 *   move our write keys. Handshake fragments may not be interleaved with other types.
 * - close_notify closes cleanly (we answer with ours); user_canceled is ignored (a close_notify
 *   follows); any other alert is fatal (-ECONNRESET). EOF without close_notify is truncation.
 * - Known-answer tests (RFC 8448 section 3) check key derivation and every byte of the example
 *   records; OpenSSL is the peer in tests for every size and split; a libFuzzer target drives the
 *   opener with valid and corrupted records split anywhere (tests/fuzz/fuzz_tls_record.c).
 * - The client role (ringbeat-load) differs only in the NewSessionTickets it may receive: their
 *   length is checked and their bytes skipped (they may span records too).
 * Not implemented, on purpose: 0-RTT (early data is never accepted: max_early_data is 0),
 * post-handshake client authentication (never requested), sending tickets after the handshake,
 * record padding on send, TLS 1.3 CCM suites (refused at configuration).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tls.h"

_Static_assert(sizeof(struct rb_tls_conn) <= 256, "an idle TLS 1.3 connection must fit 256 bytes");

#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE         24
/* lifetime 4, age_add 4, nonce length 1, ticket length 2 and at least 1 byte, extensions 2 */
#define NST_MIN_LEN             14
#define ALERT_ILLEGAL_PARAMETER 47
/* RFC 8446 5.5: AES-GCM may protect at most 2^24.5 full-size records per key; stop at 2^24. */
#define GCM_RECORD_LIMIT (1ULL << 24)

enum { SUITE_AES128, SUITE_AES256, SUITE_CHACHA, SUITE_N };

struct slot {
    EVP_CIPHER_CTX *ctx;
    uint8_t key[32]; /* the key this context holds, so a run of records on one connection skips
                        the key schedule */
    uint8_t keyed;
};

struct rb_tls_scratch {
    EVP_CIPHER *cipher[SUITE_N];
    struct slot slot[SUITE_N][2]; /* [suite][enc] */
};

static int suite_index(uint16_t suite)
{
    switch (suite) {
    case RB_TLS_AES_128_GCM_SHA256:
        return SUITE_AES128;
    case RB_TLS_AES_256_GCM_SHA384:
        return SUITE_AES256;
    case RB_TLS_CHACHA20_POLY1305_SHA256:
        return SUITE_CHACHA;
    default:
        return -1;
    }
}

static size_t key_len(uint16_t suite)
{
    return suite == RB_TLS_AES_128_GCM_SHA256 ? 16 : 32;
}

size_t rb__tls_hash_len(uint16_t suite)
{
    return suite == RB_TLS_AES_256_GCM_SHA384 ? 48 : 32;
}

int rb__tls_expand_label(uint16_t suite, const uint8_t *secret, const char *label, uint8_t *out,
                         size_t out_len)
{
    size_t hlen = rb__tls_hash_len(suite), llen = strlen(label);
    /* HKDF-Expand with L <= HashLen is the single block T(1) = HMAC(PRK, info || 0x01)
     * (RFC 5869 2.3); every output here (key, iv, secret) is at most HashLen. */
    if (suite_index(suite) < 0 || out_len > hlen || llen > 249)
        return -EINVAL;
    uint8_t info[2 + 1 + 6 + 249 + 1 + 1];
    size_t n = 0;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* block counter */
    uint8_t t[64];
    unsigned int tlen = 0;
    const EVP_MD *md = hlen == 48 ? EVP_sha384() : EVP_sha256();
    if (!HMAC(md, secret, (int)hlen, info, n, t, &tlen) || tlen != hlen)
        return -EIO;
    memcpy(out, t, out_len);
    OPENSSL_cleanse(t, sizeof(t));
    return 0;
}

/* Key and IV of one direction from its traffic secret. */
static int dir_set(struct rb_tls_dir *d, uint16_t suite, const uint8_t *secret)
{
    size_t hlen = rb__tls_hash_len(suite);
    memset(d->key, 0, sizeof(d->key));
    memset(d->secret, 0, sizeof(d->secret));
    memcpy(d->secret, secret, hlen);
    d->seq = 0;
    int rc = rb__tls_expand_label(suite, secret, "key", d->key, key_len(suite));
    if (rc == 0)
        rc = rb__tls_expand_label(suite, secret, "iv", d->iv, sizeof(d->iv));
    return rc;
}

/* application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length) */
static int dir_update(struct rb_tls_dir *d, uint16_t suite)
{
    uint8_t next[48];
    int rc = rb__tls_expand_label(suite, d->secret, "traffic upd", next, rb__tls_hash_len(suite));
    if (rc == 0)
        rc = dir_set(d, suite, next);
    OPENSSL_cleanse(next, sizeof(next));
    return rc;
}

int rb_tls_conn_init(struct rb_tls_conn *c, uint16_t suite, bool server, const uint8_t *rd_secret,
                     const uint8_t *wr_secret, size_t secret_len, uint64_t rd_seq, uint64_t wr_seq)
{
    memset(c, 0, sizeof(*c));
    if (suite_index(suite) < 0 || secret_len != rb__tls_hash_len(suite))
        return -EINVAL;
    c->suite = suite;
    c->flags = server ? RB_TLS_F_SERVER : 0;
    int rc = dir_set(&c->rd, suite, rd_secret);
    if (rc == 0)
        rc = dir_set(&c->wr, suite, wr_secret);
    if (rc < 0) {
        rb_tls_conn_wipe(c);
        return rc;
    }
    c->rd.seq = rd_seq;
    c->wr.seq = wr_seq;
    return 0;
}

void rb_tls_conn_wipe(struct rb_tls_conn *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}

int rb_tls_scratch_new(struct rb_tls_scratch **out)
{
    static const char *const names[SUITE_N] = {"AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"};
    struct rb_tls_scratch *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    /* Explicit fetches once per thread: an implicit fetch per record would cost a lookup each. */
    for (int i = 0; i < SUITE_N; i++) {
        s->cipher[i] = EVP_CIPHER_fetch(NULL, names[i], NULL);
        if (!s->cipher[i]) {
            rb_tls_scratch_free(s);
            return -ENOTSUP;
        }
    }
    *out = s;
    return 0;
}

void rb_tls_scratch_free(struct rb_tls_scratch *s)
{
    if (!s)
        return;
    for (int i = 0; i < SUITE_N; i++) {
        for (int e = 0; e < 2; e++)
            EVP_CIPHER_CTX_free(s->slot[i][e].ctx);
        EVP_CIPHER_free(s->cipher[i]);
    }
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* One AEAD operation in place: buf[0..len) plus the 16-byte tag at buf + len. */
static int aead(struct rb_tls_scratch *s, uint16_t suite, int enc, const struct rb_tls_dir *d,
                const uint8_t aad[RB_TLS_HDR_LEN], uint8_t *buf, size_t len)
{
    int si = suite_index(suite);
    if (si < 0)
        return -EINVAL;
    struct slot *sl = &s->slot[si][enc];
    if (!sl->ctx) {
        sl->ctx = EVP_CIPHER_CTX_new();
        if (!sl->ctx || !EVP_CipherInit_ex2(sl->ctx, s->cipher[si], NULL, NULL, enc, NULL)) {
            EVP_CIPHER_CTX_free(sl->ctx);
            sl->ctx = NULL;
            return -ENOMEM;
        }
    }
    uint8_t nonce[12];
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
    size_t klen = key_len(suite);
    const uint8_t *key = NULL;
    if (!sl->keyed || CRYPTO_memcmp(sl->key, d->key, klen) != 0) {
        key = d->key;
        memcpy(sl->key, d->key, klen);
        sl->keyed = 1;
    }
    int outl = 0;
    uint8_t *tag = buf + len;
    if (!EVP_CipherInit_ex2(sl->ctx, NULL, key, nonce, enc, NULL) ||
        !EVP_CipherUpdate(sl->ctx, NULL, &outl, aad, RB_TLS_HDR_LEN))
        goto err;
    if (!enc && !EVP_CIPHER_CTX_ctrl(sl->ctx, EVP_CTRL_AEAD_SET_TAG, RB_TLS_TAG_LEN, tag))
        goto err;
    if (len > 0 && !EVP_CipherUpdate(sl->ctx, buf, &outl, buf, (int)len))
        goto err;
    if (!EVP_CipherFinal_ex(sl->ctx, buf + outl, &outl))
        return enc ? -EIO : -EBADMSG;
    if (enc && !EVP_CIPHER_CTX_ctrl(sl->ctx, EVP_CTRL_AEAD_GET_TAG, RB_TLS_TAG_LEN, tag))
        goto err;
    return 0;
err:
    sl->keyed = 0; /* state unknown: re-key next time */
    return -EIO;
}

int rb_tls_record_len(const uint8_t hdr[RB_TLS_HDR_LEN])
{
    size_t len = (size_t)hdr[3] << 8 | hdr[4];
    if (hdr[0] != RB_TLS_CT_APPDATA)
        return -EPROTO;
    if (len > RB_TLS_MAX_CIPHERTEXT)
        return -EMSGSIZE;
    /* legacy_record_version is not checked: RFC 8446 5.1 says to ignore it; it is authenticated
     * as part of the AAD anyway. */
    return (int)(RB_TLS_HDR_LEN + len);
}

int rb__tls_seal_inner(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec,
                       size_t inner_len)
{
    size_t clen = inner_len + RB_TLS_TAG_LEN;
    if (clen > RB_TLS_MAX_CIPHERTEXT)
        return -EMSGSIZE;
    if (c->wr.seq == UINT64_MAX)
        return -EOVERFLOW;
    rec[0] = RB_TLS_CT_APPDATA;
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(clen >> 8);
    rec[4] = (uint8_t)clen;
    int rc = aead(s, c->suite, 1, &c->wr, rec, rec + RB_TLS_HDR_LEN, inner_len);
    if (rc < 0)
        return rc;
    c->wr.seq++;
    return (int)(RB_TLS_HDR_LEN + clen);
}

static bool write_limit_reached(const struct rb_tls_conn *c)
{
    return c->suite != RB_TLS_CHACHA20_POLY1305_SHA256 && c->wr.seq >= GCM_RECORD_LIMIT;
}

int rb_tls_seal(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec, size_t len)
{
    if (c->flags & (RB_TLS_F_FAILED | RB_TLS_F_WR_CLOSED))
        return -EPIPE;
    if (len > RB_TLS_MAX_PLAIN)
        return -EMSGSIZE;
    if (write_limit_reached(c))
        return -EKEYEXPIRED;
    rec[RB_TLS_HDR_LEN + len] = RB_TLS_CT_APPDATA;
    return rb__tls_seal_inner(c, s, rec, len + 1);
}

int rb_tls_seal_alert(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *out, int alert)
{
    if (c->flags & (RB_TLS_F_FAILED | RB_TLS_F_WR_CLOSED))
        return -EPIPE;
    if (alert < 0 || alert > 255)
        return -EINVAL;
    bool close = alert == RB_TLS_ALERT_CLOSE_NOTIFY || alert == RB_TLS_ALERT_USER_CANCELED;
    out[5] = close ? 1 : 2; /* warning : fatal */
    out[6] = (uint8_t)alert;
    out[7] = RB_TLS_CT_ALERT;
    int n = rb__tls_seal_inner(c, s, out, 3);
    if (alert == RB_TLS_ALERT_CLOSE_NOTIFY)
        c->flags |= RB_TLS_F_WR_CLOSED;
    else if (!close)
        c->flags |= RB_TLS_F_FAILED;
    return n;
}

int rb_tls_seal_keyupdate(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *out,
                          bool request_peer)
{
    if (c->flags & (RB_TLS_F_FAILED | RB_TLS_F_WR_CLOSED))
        return -EPIPE;
    static const uint8_t ku[4] = {HS_KEY_UPDATE, 0, 0, 1};
    memcpy(out + 5, ku, 4);
    out[9] = request_peer ? 1 : 0;
    out[10] = RB_TLS_CT_HANDSHAKE;
    int n = rb__tls_seal_inner(c, s, out, 6);
    if (n < 0)
        return n;
    /* The KeyUpdate itself goes under the old keys; everything after it under the new ones. */
    int rc = dir_update(&c->wr, c->suite);
    if (rc < 0) {
        c->flags |= RB_TLS_F_FAILED;
        return rc;
    }
    return n;
}

int rb_tls_at_eof(const struct rb_tls_conn *c, size_t partial_bytes)
{
    return (c->flags & RB_TLS_F_RD_CLOSED) && partial_bytes == 0 ? 0 : -ECONNABORTED;
}

/* A fatal error found while opening: queue its alert in the reply and fail the connection. */
static int fail(struct rb_tls_conn *c, struct rb_tls_scratch *s, struct rb_tls_opened *out, int err,
                int alert)
{
    out->alert = RB_TLS_ALERT_NONE;
    if (alert != RB_TLS_ALERT_NONE) {
        int n = rb_tls_seal_alert(c, s, out->reply, alert);
        if (n > 0) {
            out->reply_len = (uint8_t)n;
            out->alert = alert;
        }
    }
    c->flags |= RB_TLS_F_FAILED;
    return err;
}

/*
 * Post-handshake handshake bytes. KeyUpdate is legal both ways; a server gets nothing else (no
 * NewSessionTicket from a client, no post-handshake authentication requested). A client (the
 * load generator) also gets the server's NewSessionTickets, which it skips: resumption needs the
 * SSL object, so a client that wants a ticket takes it in the handshake driver (tls_hs.c) and
 * only later ones arrive here. While a ticket is skipped, hs_part[0] is its type and
 * hs_part[1..3] count the bytes of it still to come.
 */
static int handshake_bytes(struct rb_tls_conn *c, struct rb_tls_scratch *s, const uint8_t *p,
                           size_t n, struct rb_tls_opened *out)
{
    if (n == 0) /* RFC 8446 5.1: no zero-length handshake fragments */
        return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    bool client = !(c->flags & RB_TLS_F_SERVER);
    size_t i = 0;
    while (i < n) {
        if (c->hs_len < 4) {
            c->hs_part[c->hs_len++] = p[i++];
            if (c->hs_len == 1 && c->hs_part[0] != HS_KEY_UPDATE &&
                !(client && c->hs_part[0] == HS_NEW_SESSION_TICKET))
                return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
            if (c->hs_len < 4)
                continue;
            uint32_t mlen =
                (uint32_t)c->hs_part[1] << 16 | (uint32_t)c->hs_part[2] << 8 | c->hs_part[3];
            if (c->hs_part[0] == HS_KEY_UPDATE ? mlen != 1 : mlen < NST_MIN_LEN)
                return fail(c, s, out, -EILSEQ, RB_TLS_ALERT_DECODE_ERROR);
            continue;
        }
        if (c->hs_part[0] == HS_NEW_SESSION_TICKET) {
            uint32_t left =
                (uint32_t)c->hs_part[1] << 16 | (uint32_t)c->hs_part[2] << 8 | c->hs_part[3];
            uint32_t take = left < n - i ? left : (uint32_t)(n - i);
            i += take;
            left -= take;
            c->hs_part[1] = (uint8_t)(left >> 16);
            c->hs_part[2] = (uint8_t)(left >> 8);
            c->hs_part[3] = (uint8_t)left;
            if (left == 0)
                c->hs_len = 0;
            continue;
        }
        uint8_t request = p[i++];
        c->hs_len = 0;
        if (request > 1)
            return fail(c, s, out, -EDOM, ALERT_ILLEGAL_PARAMETER);
        if (i != n) /* a key change must end its record (RFC 8446 5.1) */
            return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
        if (dir_update(&c->rd, c->suite) < 0)
            return fail(c, s, out, -EIO, RB_TLS_ALERT_INTERNAL_ERROR);
        if (request && !(c->flags & RB_TLS_F_WR_CLOSED)) {
            int r = rb_tls_seal_keyupdate(c, s, out->reply, false);
            if (r < 0)
                return fail(c, s, out, r, RB_TLS_ALERT_NONE);
            out->reply_len = (uint8_t)r;
        }
    }
    return RB_TLS_NOTHING;
}

int rb_tls_open(struct rb_tls_conn *c, struct rb_tls_scratch *s, uint8_t *rec, size_t len,
                struct rb_tls_opened *out)
{
    out->data = NULL;
    out->len = 0;
    out->alert = RB_TLS_ALERT_NONE;
    out->reply_len = 0;
    if (c->flags & (RB_TLS_F_FAILED | RB_TLS_F_RD_CLOSED))
        return -EPIPE;
    if (len < RB_TLS_HDR_LEN)
        return -EINVAL;
    int want = rb_tls_record_len(rec);
    if (want == -EMSGSIZE)
        return fail(c, s, out, -EMSGSIZE, RB_TLS_ALERT_RECORD_OVERFLOW);
    if (want < 0)
        return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    if ((size_t)want != len)
        return -EINVAL; /* the caller's framing is wrong, not the peer */
    size_t clen = len - RB_TLS_HDR_LEN;
    if (clen < RB_TLS_TAG_LEN)
        return fail(c, s, out, -EBADMSG, RB_TLS_ALERT_BAD_RECORD_MAC);
    if (c->rd.seq == UINT64_MAX)
        return fail(c, s, out, -EOVERFLOW, RB_TLS_ALERT_NONE);
    uint8_t *p = rec + RB_TLS_HDR_LEN;
    size_t n = clen - RB_TLS_TAG_LEN;
    int rc = aead(s, c->suite, 0, &c->rd, rec, p, n);
    if (rc == -EBADMSG)
        return fail(c, s, out, -EBADMSG, RB_TLS_ALERT_BAD_RECORD_MAC);
    if (rc < 0)
        return fail(c, s, out, rc, RB_TLS_ALERT_INTERNAL_ERROR);
    c->rd.seq++;

    while (n > 0 && p[n - 1] == 0) /* padding */
        n--;
    if (n == 0)
        return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    uint8_t type = p[--n];
    if (n > RB_TLS_MAX_PLAIN)
        return fail(c, s, out, -EMSGSIZE, RB_TLS_ALERT_RECORD_OVERFLOW);
    if (c->hs_len > 0 && type != RB_TLS_CT_HANDSHAKE) /* no interleaving inside a message */
        return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);

    switch (type) {
    case RB_TLS_CT_APPDATA:
        out->data = p;
        out->len = n;
        return RB_TLS_DATA;
    case RB_TLS_CT_HANDSHAKE:
        return handshake_bytes(c, s, p, n, out);
    case RB_TLS_CT_ALERT:
        if (n != 2) /* alerts are never fragmented nor coalesced */
            return fail(c, s, out, -EILSEQ, RB_TLS_ALERT_DECODE_ERROR);
        if (p[1] == RB_TLS_ALERT_CLOSE_NOTIFY) {
            c->flags |= RB_TLS_F_RD_CLOSED;
            if (!(c->flags & RB_TLS_F_WR_CLOSED)) {
                int r = rb_tls_seal_alert(c, s, out->reply, RB_TLS_ALERT_CLOSE_NOTIFY);
                if (r > 0)
                    out->reply_len = (uint8_t)r;
            }
            return RB_TLS_CLOSED;
        }
        if (p[1] == RB_TLS_ALERT_USER_CANCELED)
            return RB_TLS_NOTHING;
        c->flags |= RB_TLS_F_FAILED;
        out->alert = p[1];
        return -ECONNRESET;
    default: /* change_cipher_spec is only tolerated before the peer's Finished */
        return fail(c, s, out, -EPROTO, RB_TLS_ALERT_UNEXPECTED_MESSAGE);
    }
}
