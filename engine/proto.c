/* proto.c — wire protocol v1 grammar: header checks, payload parsers, encoders, stream decoder. */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int rb__frame_check(const uint8_t hdr[RB_FRAME_HEADER_LEN], uint32_t max_frame,
                    struct rb__frame_hdr *h)
{
    uint8_t type = hdr[0];
    uint16_t len = rb__get_u16(hdr + 2);

    switch (type) {
    case RB_FRAME_HELLO:
        if (len < RB__HELLO_MIN || len > RB__HELLO_MAX)
            return -EPROTO;
        break;
    case RB_FRAME_WELCOME:
        if (len != RB__WELCOME_LEN)
            return -EPROTO;
        break;
    case RB_FRAME_PING:
    case RB_FRAME_PONG:
        if (len != RB__PING_LEN)
            return -EPROTO;
        break;
    case RB_FRAME_TUNE:
        if (len != RB__TUNE_LEN)
            return -EPROTO;
        break;
    case RB_FRAME_DATA:
        if (len > max_frame)
            return -EMSGSIZE;
        break;
    case RB_FRAME_CLOSE:
        if (len < RB__CLOSE_MIN || len > RB__CLOSE_MIN + RB__CLOSE_REASON_MAX)
            return -EPROTO;
        break;
    default:
        return -EPROTO;
    }
    h->type = type;
    h->flags = hdr[1];
    h->len = len;
    return 0;
}

/*
 * Incremental strict UTF-8: *state is 0 between characters; otherwise bits 0-1 count the
 * continuation bytes still due and bits 8-15 / 16-23 the range the next one must lie in (only the
 * first continuation byte has a range narrower than 80..BF: overlongs, surrogates, > U+10FFFF).
 * So a character split across WebSocket fragments or reads is judged as soon as a byte is wrong.
 */
int rb__utf8_step(uint32_t *state, const uint8_t *p, size_t len)
{
    uint32_t st = *state;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (st) {
            if (c < (uint8_t)(st >> 8) || c > (uint8_t)(st >> 16))
                return -EILSEQ;
            st = (st & 3) == 1 ? 0 : ((st & 3) - 1) | 0x80u << 8 | 0xBFu << 16;
            continue;
        }
        if (c < 0x80)
            continue;
        uint32_t need, lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* below: overlong */
            else if (c == 0xED)
                hi = 0x9F; /* above: UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* below: overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above: beyond U+10FFFF */
        } else {
            return -EILSEQ; /* stray continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        st = need | lo << 8 | hi << 16;
    }
    *state = st;
    return 0;
}

int rb__utf8_valid(const uint8_t *p, size_t len)
{
    uint32_t st = 0;
    return rb__utf8_step(&st, p, len) == 0 && st == 0;
}

int rb__hello_parse(const uint8_t *p, size_t len, struct rb__hello *out)
{
    if (len < RB__HELLO_MIN || len > RB__HELLO_MAX)
        return -EPROTO;
    uint16_t flags = rb__get_u16(p + 2);
    if (p[0] != RB_PROTO_VERSION || p[1] > RB_MODE_KERNEL || (flags & ~RB__HELLO_F_TOKEN))
        return -EPROTO;
    out->version = p[0];
    out->mode = p[1];
    out->interval_ms = rb__get_u32(p + 4);
    out->timeout_ms = rb__get_u32(p + 8);
    if (!(flags & RB__HELLO_F_TOKEN)) {
        if (len > RB__HELLO_PLAIN_MAX)
            return -EPROTO;
        out->client_id = p + RB__HELLO_MIN;
        out->client_id_len = len - RB__HELLO_MIN;
        out->token = NULL;
        out->token_len = 0;
        return 0;
    }
    if (len < RB__HELLO_MIN + 1)
        return -EPROTO;
    size_t id_len = p[RB__HELLO_MIN];
    size_t rest = len - RB__HELLO_MIN - 1;
    if (id_len > RB_CLIENT_ID_MAX || id_len >= rest || rest - id_len > RB__HELLO_TOKEN_MAX)
        return -EPROTO; /* the token is 1..255 bytes */
    out->client_id = p + RB__HELLO_MIN + 1;
    out->client_id_len = id_len;
    out->token = out->client_id + id_len;
    out->token_len = rest - id_len;
    return 0;
}

int rb__welcome_parse(const uint8_t *p, size_t len, struct rb__welcome *out)
{
    if (len != RB__WELCOME_LEN)
        return -EPROTO;
    if (p[0] != RB_PROTO_VERSION || p[1] > RB_MODE_KERNEL || rb__get_u16(p + 2) != 0)
        return -EPROTO;
    out->version = p[0];
    out->mode = p[1];
    out->interval_ms = rb__get_u32(p + 4);
    out->timeout_ms = rb__get_u32(p + 8);
    out->conn_id = rb__get_u64(p + 12);
    return 0;
}

int rb__close_parse(const uint8_t *p, size_t len, uint16_t *code, const uint8_t **reason,
                    size_t *reason_len)
{
    if (len < RB__CLOSE_MIN || len > RB__CLOSE_MIN + RB__CLOSE_REASON_MAX)
        return -EPROTO;
    if (!rb__utf8_valid(p + RB__CLOSE_MIN, len - RB__CLOSE_MIN))
        return -EPROTO;
    /* Unknown codes are accepted: a newer peer may send codes this version does not name. */
    *code = rb__get_u16(p);
    *reason = p + RB__CLOSE_MIN;
    *reason_len = len - RB__CLOSE_MIN;
    return 0;
}

int rb__tune_parse(const uint8_t *p, size_t len, uint32_t *interval_ms, uint32_t *timeout_ms)
{
    if (len != RB__TUNE_LEN)
        return -EPROTO;
    *interval_ms = rb__get_u32(p);
    *timeout_ms = rb__get_u32(p + 4);
    return 0;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

size_t rb__put_header(uint8_t *out, uint8_t type, uint16_t payload_len)
{
    out[0] = type;
    out[1] = 0;
    put_u16(out + 2, payload_len);
    return RB_FRAME_HEADER_LEN;
}

size_t rb__put_hello(uint8_t *out, const struct rb__hello *h)
{
    size_t id_len = h->client_id_len, token_len = h->token ? h->token_len : 0;
    /* A longer id or token would make a frame every server refuses; send what fits. */
    if (id_len > RB_CLIENT_ID_MAX)
        id_len = RB_CLIENT_ID_MAX;
    if (token_len > RB__HELLO_TOKEN_MAX)
        token_len = RB__HELLO_TOKEN_MAX;
    size_t len = RB__HELLO_MIN + (token_len ? 1 : 0) + id_len + token_len;
    uint8_t *p = out + rb__put_header(out, RB_FRAME_HELLO, (uint16_t)len);
    p[0] = h->version;
    p[1] = h->mode;
    put_u16(p + 2, token_len ? RB__HELLO_F_TOKEN : 0);
    put_u32(p + 4, h->interval_ms);
    put_u32(p + 8, h->timeout_ms);
    uint8_t *id = p + RB__HELLO_MIN;
    if (token_len)
        *id++ = (uint8_t)id_len;
    if (id_len > 0)
        memcpy(id, h->client_id, id_len);
    if (token_len)
        memcpy(id + id_len, h->token, token_len);
    return RB_FRAME_HEADER_LEN + len;
}

size_t rb__put_welcome(uint8_t *out, const struct rb__welcome *w)
{
    uint8_t *p = out + rb__put_header(out, RB_FRAME_WELCOME, RB__WELCOME_LEN);
    p[0] = w->version;
    p[1] = w->mode;
    put_u16(p + 2, 0);
    put_u32(p + 4, w->interval_ms);
    put_u32(p + 8, w->timeout_ms);
    put_u64(p + 12, w->conn_id);
    return RB_FRAME_HEADER_LEN + RB__WELCOME_LEN;
}

size_t rb__put_ping(uint8_t *out, uint8_t type, uint64_t token)
{
    uint8_t *p = out + rb__put_header(out, type, RB__PING_LEN);
    put_u64(p, token);
    return RB_FRAME_HEADER_LEN + RB__PING_LEN;
}

size_t rb__put_close(uint8_t *out, uint16_t code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > RB__CLOSE_REASON_MAX) {
        rlen = RB__CLOSE_REASON_MAX;
        /* Cut on a character boundary so that the peer's UTF-8 check still passes. */
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    uint8_t *p = out + rb__put_header(out, RB_FRAME_CLOSE, (uint16_t)(RB__CLOSE_MIN + rlen));
    put_u16(p, code);
    if (rlen > 0)
        memcpy(p + RB__CLOSE_MIN, reason, rlen);
    return RB_FRAME_HEADER_LEN + RB__CLOSE_MIN + rlen;
}

size_t rb__put_data(uint8_t *out, const void *data, uint16_t len)
{
    rb__put_header(out, RB_FRAME_DATA, len);
    if (len > 0)
        memcpy(out + RB_FRAME_HEADER_LEN, data, len);
    return RB_FRAME_HEADER_LEN + (size_t)len;
}

size_t rb__put_tune(uint8_t *out, uint32_t interval_ms, uint32_t timeout_ms)
{
    uint8_t *p = out + rb__put_header(out, RB_FRAME_TUNE, RB__TUNE_LEN);
    put_u32(p, interval_ms);
    put_u32(p + 4, timeout_ms);
    return RB_FRAME_HEADER_LEN + RB__TUNE_LEN;
}

/* ---- stream decoder ---- */

size_t rb__v1_pending(const struct rb__v1_rx *rx)
{
    struct rb__v1_split **slot = rx->slot(rx->ctx, false);
    return slot && *slot ? (*slot)->len : *rx->inl_len;
}

/* Keeps n more bytes of a split frame of frame_len bytes: inline while they fit, else in a buffer
 * sized for exactly that frame. */
static int split_store(const struct rb__v1_rx *rx, const uint8_t *p, size_t n, size_t frame_len)
{
    struct rb__v1_split **slot = rx->slot(rx->ctx, false);
    struct rb__v1_split *sp = slot ? *slot : NULL;
    if (!sp && *rx->inl_len + n <= rx->inl_cap) {
        memcpy(rx->inl + *rx->inl_len, p, n);
        *rx->inl_len = (uint8_t)(*rx->inl_len + n);
        return 0;
    }
    if (!sp) {
        if (!(slot = rx->slot(rx->ctx, true)))
            return -ENOMEM;
        if (!(sp = malloc(sizeof(*sp) + frame_len)))
            return -ENOMEM;
        memcpy(sp->data, rx->inl, *rx->inl_len);
        sp->len = *rx->inl_len;
        sp->cap = (uint32_t)frame_len;
        *rx->inl_len = 0;
        *slot = sp;
    }
    memcpy(sp->data + sp->len, p, n);
    sp->len += (uint32_t)n;
    return 0;
}

/* Completes the split frame with what it still lacks from p; *used says how much that was. */
static int split_continue(const struct rb__v1_rx *rx, const uint8_t *p, size_t n, size_t *used)
{
    struct rb__v1_split **slot = rx->slot(rx->ctx, false);
    struct rb__v1_split *sp = slot ? *slot : NULL;
    *used = 0;
    size_t have = sp ? sp->len : *rx->inl_len;
    if (have < RB_FRAME_HEADER_LEN) {
        /* A header always fits inline (inl_cap >= its size), so sp is NULL here. */
        size_t take = RB_FRAME_HEADER_LEN - have < n ? RB_FRAME_HEADER_LEN - have : n;
        memcpy(rx->inl + have, p, take);
        *rx->inl_len = (uint8_t)(have + take);
        *used = take;
        if (*rx->inl_len < RB_FRAME_HEADER_LEN)
            return 0;
        p += take;
        n -= take;
        have = RB_FRAME_HEADER_LEN;
    }
    struct rb__frame_hdr h;
    int err = rb__frame_check(sp ? sp->data : rx->inl, rx->max_frame, &h);
    if (err < 0)
        return err;
    size_t total = RB_FRAME_HEADER_LEN + (size_t)h.len;
    size_t take = total - have < n ? total - have : n;
    if (take && (err = split_store(rx, p, take, total)) < 0)
        return err;
    *used += take;
    slot = rx->slot(rx->ctx, false);
    sp = slot ? *slot : NULL;
    if ((sp ? sp->len : *rx->inl_len) < total)
        return 0;
    const uint8_t *frame = sp ? sp->data : rx->inl;
    int r = rx->frame(rx->ctx, &h, frame + RB_FRAME_HEADER_LEN);
    if (r != 0)
        return r; /* the caller may have freed everything; touch nothing */
    *rx->inl_len = 0;
    if (sp) {
        free(sp);
        *slot = NULL;
    }
    return 0;
}

int rb__v1_feed(const struct rb__v1_rx *rx, const uint8_t *p, size_t n)
{
    if (rb__v1_pending(rx)) {
        size_t used;
        int r = split_continue(rx, p, n, &used);
        if (r != 0)
            return r;
        p += used;
        n -= used;
        if (rb__v1_pending(rx))
            return 0; /* still incomplete: everything was taken */
    }
    while (n) {
        struct rb__frame_hdr h;
        if (n < RB_FRAME_HEADER_LEN)
            return split_store(rx, p, n, RB_FRAME_HEADER_LEN);
        int r = rb__frame_check(p, rx->max_frame, &h);
        if (r < 0)
            return r;
        size_t total = RB_FRAME_HEADER_LEN + (size_t)h.len;
        if (n < total)
            return split_store(rx, p, n, total);
        if ((r = rx->frame(rx->ctx, &h, p + RB_FRAME_HEADER_LEN)) != 0)
            return r;
        p += total;
        n -= total;
    }
    return 0;
}
