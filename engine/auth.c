/* auth.c — tokens that prove a client id: HMAC-SHA256 keys from a file, mint and verify. */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringbeat.h"

/*
 * A token is "EXPIRY.MAC": EXPIRY the last second (Unix time, decimal, no leading zero) it is
 * valid, MAC the unpadded base64url of HMAC-SHA256(key, "rb1" NUL EXPIRY NUL client_id). The
 * domain prefix keeps these MACs apart from anything else the same key might sign; the NULs make
 * the split between expiry and id unambiguous. Anyone with the key can mint one with openssl(1):
 *   printf 'rb1\0%s\0%s' "$exp" "$id" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary
 * (docs/presence.md).
 */
#define KEY_MIN           16
#define KEY_MAX           128
#define KEYS_MAX          16
#define MAC_LEN           32
#define MAC_B64_LEN       43
#define EXPIRY_DIGITS_MAX 20

struct rb_auth {
    unsigned count;
    struct {
        size_t len;
        uint8_t bytes[KEY_MAX];
        /* Keyed once at load: each check duplicates it instead of keying HMAC again (the
         * one-shot HMAC() fetches the algorithm and keys it per call, about 4 us). */
        EVP_MAC_CTX *ctx;
    } key[KEYS_MAX];
    EVP_MAC *mac;
};

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One line of the key file: hex digits, surrounding blanks allowed. */
static int parse_key_line(const char *line, uint8_t *out, size_t *out_len)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\n' ||
                 line[n - 1] == '\r'))
        n--;
    if (n % 2 || n / 2 < KEY_MIN || n / 2 > KEY_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(line[i]), lo = hexval(line[i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *out_len = n / 2;
    return 0;
}

int rb_auth_load(const char *path, struct rb_auth **out)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    struct rb_auth *a = calloc(1, sizeof(*a));
    if (!a) {
        fclose(f);
        return -ENOMEM;
    }
    char line[2 * KEY_MAX + 64];
    int ret = 0;
    while (fgets(line, sizeof(line), f)) {
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
            continue;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            ret = -EINVAL; /* longer than any key */
            break;
        }
        if (a->count == KEYS_MAX ||
            parse_key_line(p, a->key[a->count].bytes, &a->key[a->count].len) < 0) {
            ret = -EINVAL;
            break;
        }
        a->count++;
    }
    if (ferror(f))
        ret = -EIO;
    fclose(f);
    if (ret == 0 && a->count == 0)
        ret = -EINVAL;
    if (ret == 0 && !(a->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)))
        ret = -ENOMEM;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    for (unsigned k = 0; ret == 0 && k < a->count; k++)
        if (!(a->key[k].ctx = EVP_MAC_CTX_new(a->mac)) ||
            !EVP_MAC_init(a->key[k].ctx, a->key[k].bytes, a->key[k].len, params))
            ret = -ENOMEM;
    if (ret < 0) {
        rb_auth_free(a);
        return ret;
    }
    *out = a;
    return 0;
}

void rb_auth_free(struct rb_auth *a)
{
    if (!a)
        return;
    for (unsigned k = 0; k < KEYS_MAX; k++)
        EVP_MAC_CTX_free(a->key[k].ctx);
    EVP_MAC_free(a->mac);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

unsigned rb_auth_key_count(const struct rb_auth *a)
{
    return a ? a->count : 0;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 32 bytes to 43 characters of unpadded base64url. */
static void mac_encode(const uint8_t mac[MAC_LEN], char out[MAC_B64_LEN])
{
    size_t o = 0;
    for (size_t i = 0; i < MAC_LEN; i += 3) {
        uint32_t v = (uint32_t)mac[i] << 16;
        if (i + 1 < MAC_LEN)
            v |= (uint32_t)mac[i + 1] << 8;
        if (i + 2 < MAC_LEN)
            v |= mac[i + 2];
        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        if (i + 1 < MAC_LEN)
            out[o++] = b64url[v >> 6 & 63];
        if (i + 2 < MAC_LEN)
            out[o++] = b64url[v & 63];
    }
}

/* HMAC-SHA256 over "rb1" NUL expiry NUL id, from a copy of the key's keyed context. */
static int compute_mac(EVP_MAC_CTX *keyed, const char *expiry, size_t expiry_len, const void *id,
                       size_t id_len, uint8_t mac[MAC_LEN])
{
    uint8_t msg[4 + EXPIRY_DIGITS_MAX + 1 + RB_CLIENT_ID_MAX];
    if (expiry_len > EXPIRY_DIGITS_MAX || id_len > RB_CLIENT_ID_MAX)
        return -EINVAL;
    size_t n = 0;
    memcpy(msg, "rb1", 4); /* with its NUL */
    n = 4;
    memcpy(msg + n, expiry, expiry_len);
    n += expiry_len;
    msg[n++] = 0;
    if (id_len)
        memcpy(msg + n, id, id_len);
    n += id_len;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(keyed);
    size_t mac_len = 0;
    int ok = ctx && EVP_MAC_update(ctx, msg, n) && EVP_MAC_final(ctx, mac, &mac_len, MAC_LEN) &&
             mac_len == MAC_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -ENOMEM;
}

int rb_auth_mint(const struct rb_auth *a, const void *client_id, size_t id_len,
                 uint64_t expiry_unix_s, char *out, size_t cap)
{
    if (cap < RB_TOKEN_MAX + 1)
        return -ENOSPC;
    if (!a || !a->count || id_len > RB_CLIENT_ID_MAX)
        return -EINVAL;
    char expiry[EXPIRY_DIGITS_MAX + 1];
    int elen = snprintf(expiry, sizeof(expiry), "%llu", (unsigned long long)expiry_unix_s);
    uint8_t mac[MAC_LEN];
    int ret = compute_mac(a->key[0].ctx, expiry, (size_t)elen, client_id, id_len, mac);
    if (ret < 0)
        return ret;
    memcpy(out, expiry, (size_t)elen);
    out[elen] = '.';
    mac_encode(mac, out + elen + 1);
    out[elen + 1 + MAC_B64_LEN] = '\0';
    return elen + 1 + MAC_B64_LEN;
}

enum rb_auth_result rb_auth_verify(const struct rb_auth *a, const void *client_id, size_t id_len,
                                   const char *token, size_t token_len, uint64_t now_unix_s)
{
    if (!token || token_len == 0)
        return RB_AUTH_MISSING;
    const char *dot = memchr(token, '.', token_len);
    if (!dot)
        return RB_AUTH_MALFORMED;
    size_t elen = (size_t)(dot - token);
    if (elen == 0 || elen > EXPIRY_DIGITS_MAX || (elen > 1 && token[0] == '0') ||
        token_len - elen - 1 != MAC_B64_LEN || id_len > RB_CLIENT_ID_MAX)
        return RB_AUTH_MALFORMED;
    uint64_t expiry = 0;
    for (size_t i = 0; i < elen; i++) {
        if (token[i] < '0' || token[i] > '9')
            return RB_AUTH_MALFORMED;
        unsigned d = (unsigned)(token[i] - '0');
        if (expiry > (UINT64_MAX - d) / 10)
            return RB_AUTH_MALFORMED;
        expiry = expiry * 10 + d;
    }
    const char *mac_text = dot + 1;
    for (size_t i = 0; i < MAC_B64_LEN; i++)
        if (!memchr(b64url, mac_text[i], sizeof(b64url) - 1) || mac_text[i] == '\0')
            return RB_AUTH_MALFORMED;
    /* The last character carries 2 bits of padding: only one spelling of each MAC is valid,
     * which the comparison of the re-encoded MAC below enforces. */
    int match = 0;
    for (unsigned k = 0; a && k < a->count; k++) {
        uint8_t mac[MAC_LEN];
        char enc[MAC_B64_LEN];
        if (compute_mac(a->key[k].ctx, token, elen, client_id, id_len, mac) < 0)
            continue;
        mac_encode(mac, enc);
        match |= CRYPTO_memcmp(enc, mac_text, MAC_B64_LEN) == 0;
    }
    if (!match)
        return RB_AUTH_FORGED;
    /* The MAC is checked first, so "expired" is only ever said of a token we did issue. */
    return expiry < now_unix_s ? RB_AUTH_EXPIRED : RB_AUTH_OK;
}

const char *rb_auth_result_name(enum rb_auth_result r)
{
    switch (r) {
    case RB_AUTH_OK:
        return "ok";
    case RB_AUTH_MISSING:
        return "missing";
    case RB_AUTH_MALFORMED:
        return "malformed";
    case RB_AUTH_EXPIRED:
        return "expired";
    case RB_AUTH_FORGED:
        return "forged";
    default:
        return "unknown";
    }
}
