/* fuzz_tls_record.c — libFuzzer target: the TLS 1.3 record opener on valid and broken streams. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Random bytes almost never pass an AEAD tag, so the input is a program for the peer: byte 0
 * picks the suite, then ops, each an op byte and its operands:
 *   op % 4 == 0: seal the next L bytes (L = next byte, or 2 bytes when op & 4) as an inner
 *                plaintext (content, type, padding: anything) under the peer's write keys;
 *   op % 4 == 1: append the next L raw bytes (headers, garbage, truncation);
 *   op % 4 == 2: the peer's KeyUpdate (update_requested when op & 4);
 *   op % 4 == 3: seal as in 0, then flip one byte of the record (position = next byte).
 * The stream is opened twice through the engine's own collector (tls_feed.c: records opened in
 * place where they lie, split ones in a part): cut at points taken from the input, and whole.
 * Both must give the same events; every reply must be readable by the peer; data is checked
 * against an independent reading of the inner plaintext while the stream has only well-formed
 * records.
 */

#define MAX_STREAM (1 << 18)
#define MAX_EVENTS 512

struct event {
    int rc, alert;
    size_t len;
    uint32_t sum;
};

struct run {
    struct rb_tls_conn srv, peer;
    struct rb_tls_part *part;
    struct event ev[MAX_EVENTS];
    int n_ev;
    int dead;
};

static struct rb_tls_scratch *S;
static uint8_t STREAM[MAX_STREAM], STREAM_B[MAX_STREAM]; /* opened in place: one copy per run */
static uint8_t REC[RB_TLS_MAX_RECORD + 64];

struct expect {
    int valid; /* 1: a DATA event with this content is expected at index `at` */
    int at;
    size_t len;
    uint32_t sum;
};
static struct expect EXP[MAX_EVENTS];

static uint32_t sum(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void keys(uint16_t suite, struct rb_tls_conn *srv, struct rb_tls_conn *peer)
{
    uint8_t a[48], b[48];
    for (int i = 0; i < 48; i++)
        a[i] = (uint8_t)(i + 1), b[i] = (uint8_t)(200 - i);
    size_t h = rb__tls_hash_len(suite);
    FUZZ_CHECK(rb_tls_conn_init(srv, suite, true, a, b, h, 0, 0) == 0);
    FUZZ_CHECK(rb_tls_conn_init(peer, suite, false, b, a, h, 0, 0) == 0);
}

static void event(struct run *r, int rc, int alert, const uint8_t *p, size_t n)
{
    if (r->n_ev < MAX_EVENTS)
        r->ev[r->n_ev++] = (struct event){rc, alert, n, p ? sum(p, n) : 0};
}

static int open_one(void *ctx, uint8_t *rec, size_t len)
{
    struct run *r = ctx;
    struct rb_tls_opened o;
    FUZZ_CHECK(len >= RB_TLS_HDR_LEN && len <= RB_TLS_MAX_RECORD &&
               rb_tls_record_len(rec) == (int)len);
    int rc = rb_tls_open(&r->srv, S, rec, len, &o);
    FUZZ_CHECK(o.reply_len <= RB_TLS_REPLY_MAX);
    if (rc == RB_TLS_DATA) {
        FUZZ_CHECK(o.len <= RB_TLS_MAX_PLAIN);
        FUZZ_CHECK(o.data == rec + RB_TLS_HDR_LEN);
    }
    event(r, rc, o.alert, rc == RB_TLS_DATA ? o.data : NULL, o.len);
    if (o.reply_len) { /* the peer must be able to read what we answered */
        struct rb_tls_opened p;
        uint8_t rep[RB_TLS_REPLY_MAX];
        memcpy(rep, o.reply, o.reply_len);
        int pr = rb_tls_open(&r->peer, S, rep, o.reply_len, &p);
        FUZZ_CHECK(pr == RB_TLS_NOTHING || pr == RB_TLS_CLOSED || pr == -ECONNRESET);
        if (pr == -ECONNRESET)
            FUZZ_CHECK(p.alert == o.alert);
        r->peer.flags &= (uint8_t) ~(RB_TLS_F_FAILED | RB_TLS_F_RD_CLOSED);
    }
    if (rc < 0 && rc != -EINVAL) {
        r->dead = 1;
        struct rb_tls_opened again;
        FUZZ_CHECK(rb_tls_open(&r->srv, S, rec, len, &again) == -EPIPE);
    }
    if (rc == RB_TLS_CLOSED)
        r->dead = 1;
    return r->dead;
}

/* What the transport does (transport_tls.c): the collector, then each whole record opened. */
static void feed(struct run *r, uint8_t *p, size_t n)
{
    if (r->dead)
        return;
    const struct rb_tls_rx rx = {.part = &r->part, .record = open_one, .ctx = r};
    int rc = rb_tls_feed(&rx, p, n);
    FUZZ_CHECK(rc == 0 || rc == 1 || rc == -EMSGSIZE || rc == -EPROTO);
    FUZZ_CHECK(rc != 1 || r->dead);
    if (rc < 0) {
        event(r, rc, 0, NULL, 0);
        r->dead = 1;
    }
    FUZZ_CHECK(rc < 0 || !r->part || r->part->have < r->part->cap);
}

static struct run A, B;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t suites[3] = {RB_TLS_AES_128_GCM_SHA256, RB_TLS_AES_256_GCM_SHA384,
                                       RB_TLS_CHACHA20_POLY1305_SHA256};
    if (!S && rb_tls_scratch_new(&S) < 0)
        abort();
    if (size < 1)
        return 0;
    uint16_t suite = suites[data[0] % 3];
    struct rb_tls_conn peer, srv0, peer_b;
    keys(suite, &srv0, &peer);
    size_t i = 1, slen = 0;
    int n_exp = 0, clean = 1, records = 0;
    while (i < size && slen < MAX_STREAM - RB_TLS_MAX_RECORD - 64) {
        uint8_t op = data[i++];
        size_t L = 0;
        if (op % 4 == 0 || op % 4 == 1 || op % 4 == 3) {
            if (i >= size)
                break;
            L = data[i++];
            if ((op & 4) && i < size)
                L = L << 8 | data[i++];
            if (L > size - i)
                L = size - i;
        }
        if (op % 4 == 1) {
            memcpy(STREAM + slen, data + i, L);
            slen += L, i += L;
            clean = 0;
            continue;
        }
        int n;
        if (op % 4 == 2) {
            n = rb_tls_seal_keyupdate(&peer, S, REC, op & 4);
        } else {
            if (L > RB_TLS_MAX_CIPHERTEXT - RB_TLS_TAG_LEN)
                L = RB_TLS_MAX_CIPHERTEXT - RB_TLS_TAG_LEN;
            memcpy(REC + RB_TLS_HDR_LEN, data + i, L);
            i += L;
            /* independent reading of the inner plaintext: strip zeros, last byte is the type */
            size_t m = L;
            while (m > 0 && data[i - L + m - 1] == 0)
                m--;
            int is_data = m > 0 && data[i - L + m - 1] == RB_TLS_CT_APPDATA;
            if (!is_data) /* a handshake fragment or alert changes what may follow */
                clean = 0;
            if (clean && op % 4 == 0 && m - 1 <= RB_TLS_MAX_PLAIN && n_exp < MAX_EVENTS)
                EXP[n_exp++] = (struct expect){1, records, m - 1, sum(data + i - L, m - 1)};
            n = rb__tls_seal_inner(&peer, S, REC, L);
        }
        FUZZ_CHECK(n > 0);
        if (op % 4 == 3) {
            REC[(i < size ? data[i++] : 0) % (size_t)n] ^= 0x80;
            clean = 0;
        }
        memcpy(STREAM + slen, REC, (size_t)n);
        slen += (size_t)n;
        records++;
    }

    /* run A: cut at points from the input; run B: whole */
    A.srv = srv0, B.srv = srv0;
    keys(suite, &srv0, &peer_b); /* fresh peer views to read our replies */
    A.peer = peer_b, B.peer = peer_b;
    free(A.part);
    free(B.part);
    A.part = B.part = NULL;
    A.n_ev = B.n_ev = 0;
    A.dead = B.dead = 0;
    memcpy(STREAM_B, STREAM, slen);
    size_t off = 0, k = 0;
    while (off < slen) {
        size_t cut = 1 + (size > 1 ? data[1 + k++ % (size - 1)] : 0) * 3;
        if (cut > slen - off)
            cut = slen - off;
        feed(&A, STREAM + off, cut);
        off += cut;
    }
    feed(&B, STREAM_B, slen);
    FUZZ_CHECK(A.n_ev == B.n_ev);
    for (int e = 0; e < A.n_ev; e++)
        FUZZ_CHECK(A.ev[e].rc == B.ev[e].rc && A.ev[e].alert == B.ev[e].alert &&
                   A.ev[e].len == B.ev[e].len && A.ev[e].sum == B.ev[e].sum);
    /* while nothing malformed came before it, a well-formed data record opens to its content */
    for (int e = 0; e < n_exp; e++) {
        int at = EXP[e].at;
        if (at >= B.n_ev)
            break; /* the connection ended earlier (a failing record before it) */
        if (B.ev[at].rc < 0 || B.ev[at].rc == RB_TLS_CLOSED)
            break;
        FUZZ_CHECK(B.ev[at].rc == RB_TLS_DATA && B.ev[at].len == EXP[e].len &&
                   B.ev[at].sum == EXP[e].sum);
    }
    size_t left = rb_tls_part_bytes(B.part);
    FUZZ_CHECK(rb_tls_at_eof(&B.srv, left) == 0 || rb_tls_at_eof(&B.srv, left) == -ECONNABORTED);
    rb_tls_conn_wipe(&A.srv);
    rb_tls_conn_wipe(&B.srv);
    free(A.part);
    free(B.part);
    A.part = B.part = NULL;
    return 0;
}
