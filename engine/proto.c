/* proto.c — wire protocol v1 codec: header checks, payload parsers and frame encoders. */
#include "proto.h"

#include <errno.h>
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

int rb__utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0)
                lo = 0xA0; /* below: overlong */
            else if (c == 0xED)
                hi = 0x9F; /* above: UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0)
                lo = 0x90; /* below: overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above: beyond U+10FFFF */
        } else {
            return 0; /* stray continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        if (len - i < n)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

int rb__hello_parse(const uint8_t *p, size_t len, struct rb__hello *out)
{
    if (len < RB__HELLO_MIN || len > RB__HELLO_MAX)
        return -EPROTO;
    if (p[0] != RB_PROTO_VERSION || p[1] > RB_MODE_SILENT || rb__get_u16(p + 2) != 0)
        return -EPROTO;
    out->version = p[0];
    out->mode = p[1];
    out->interval_ms = rb__get_u32(p + 4);
    out->timeout_ms = rb__get_u32(p + 8);
    out->client_id = p + RB__HELLO_MIN;
    out->client_id_len = len - RB__HELLO_MIN;
    return 0;
}

int rb__welcome_parse(const uint8_t *p, size_t len, struct rb__welcome *out)
{
    if (len != RB__WELCOME_LEN)
        return -EPROTO;
    if (p[0] != RB_PROTO_VERSION || p[1] > RB_MODE_SILENT || rb__get_u16(p + 2) != 0)
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
    size_t id_len = h->client_id_len;
    /* A longer id would make a frame every server refuses; send what fits. */
    if (id_len > RB_CLIENT_ID_MAX)
        id_len = RB_CLIENT_ID_MAX;
    uint8_t *p = out + rb__put_header(out, RB_FRAME_HELLO, (uint16_t)(RB__HELLO_MIN + id_len));
    p[0] = h->version;
    p[1] = h->mode;
    put_u16(p + 2, 0);
    put_u32(p + 4, h->interval_ms);
    put_u32(p + 8, h->timeout_ms);
    if (id_len > 0)
        memcpy(p + RB__HELLO_MIN, h->client_id, id_len);
    return RB_FRAME_HEADER_LEN + RB__HELLO_MIN + id_len;
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
