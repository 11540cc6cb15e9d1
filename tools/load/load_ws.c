/* load_ws.c — ringbeat-load's WebSocket client side: the upgrade, masked frames, the decoder glue.
 */
#include "load_ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* Client frames are masked with keys a proxy cannot predict (RFC 6455 5.3); xorshift per thread
 * is enough for that and costs nothing per heartbeat. */
static __thread uint64_t mask_state;

static void mask_key(uint8_t key[4])
{
    if (!mask_state)
        mask_state = (uint64_t)(uintptr_t)&mask_state * 0x9E3779B97F4A7C15ULL | 1;
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 7;
    mask_state ^= mask_state << 17;
    memcpy(key, &mask_state, 4);
}

static void make_key(uint32_t id, uint32_t nonce, char out[RB__WS_KEY_LEN + 1])
{
    uint8_t raw[16];
    uint64_t a = ((uint64_t)id << 32 | nonce) * 0x9E3779B97F4A7C15ULL,
             b = a ^ 0xBF58476D1CE4E5B9ULL;
    b *= 0x94D049BB133111EBULL;
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
    out[RB__WS_KEY_LEN] = '\0';
}

uint32_t lws_request(uint8_t *out, uint32_t cap, const struct load_cfg *cfg, uint32_t id,
                     uint32_t nonce, const struct sockaddr_in *dst)
{
    char target[256], host[32], key[RB__WS_KEY_LEN + 1];
    int n = snprintf(target, sizeof(target), "%s?mode=%s&id=load-%u",
                     cfg->ws_path ? cfg->ws_path : "/", rb_mode_name((enum rb_mode)cfg->mode), id);
    if (cfg->interval_ms && n > 0 && (size_t)n < sizeof(target))
        n += snprintf(target + n, sizeof(target) - (size_t)n, "&interval=%ums", cfg->interval_ms);
    if (cfg->timeout_ms && n > 0 && (size_t)n < sizeof(target))
        n += snprintf(target + n, sizeof(target) - (size_t)n, "&timeout=%ums", cfg->timeout_ms);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &dst->sin_addr, ip, sizeof(ip));
    snprintf(host, sizeof(host), "%s:%u", ip, ntohs(dst->sin_port));
    make_key(id, nonce, key);
    return (uint32_t)rb__ws_put_request(out, cap, host, target, key);
}

uint32_t lws_put_ping(uint8_t *out, uint8_t v1_type, uint64_t token)
{
    uint8_t payload[8], key[4];
    for (int i = 0; i < 8; i++)
        payload[i] = (uint8_t)(token >> (56 - 8 * i));
    mask_key(key);
    uint8_t op = v1_type == RB_FRAME_PONG ? RB__WS_OP_PONG : RB__WS_OP_PING;
    return (uint32_t)rb__ws_put_frame(out, op, payload, sizeof(payload), key);
}

uint32_t lws_put_close(uint8_t *out, uint16_t v1_code)
{
    uint8_t key[4];
    mask_key(key);
    uint16_t code = v1_code == RB_CLOSE_NORMAL     ? RB__WS_CLOSE_NORMAL
                    : v1_code == RB_CLOSE_PROTOCOL ? RB__WS_CLOSE_PROTOCOL
                                                   : (uint16_t)(RB__WS_CLOSE_APP_BASE + v1_code);
    return (uint32_t)rb__ws_put_close(out, code, NULL, key);
}

/* The ringbeat reason a close code stands for (the table of docs/websocket.md, read back). */
static uint16_t reason_of(uint16_t code)
{
    switch (code) {
    case RB__WS_CLOSE_NORMAL:
        return RB_CLOSE_NORMAL;
    case RB__WS_CLOSE_GOING_AWAY:
        return RB_CLOSE_SHUTDOWN;
    case RB__WS_CLOSE_PROTOCOL:
        return RB_CLOSE_PROTOCOL;
    case RB__WS_CLOSE_BAD_PAYLOAD:
        return RB_CLOSE_BAD_PAYLOAD;
    case RB__WS_CLOSE_TOO_BIG:
        return RB_CLOSE_TOO_BIG;
    case RB__WS_CLOSE_TRY_LATER:
        return RB_CLOSE_FULL;
    default:
        if (code > RB__WS_CLOSE_APP_BASE && code < RB__WS_CLOSE_APP_BASE + RB_CLOSE_PEER)
            return (uint16_t)(code - RB__WS_CLOSE_APP_BASE);
        return 0; /* counted as "other" */
    }
}

static int v1_close(const struct lws_conn *lc, uint16_t reason)
{
    uint8_t payload[2] = {(uint8_t)(reason >> 8), (uint8_t)reason};
    struct rb__frame_hdr h = {.type = RB_FRAME_CLOSE, .len = 2};
    return lc->frame(lc->ctx, &h, payload);
}

struct dec_ctx {
    const struct lws_conn *lc;
};

static struct rb__ws_split **dec_slot(void *ctx, bool create)
{
    const struct lws_conn *lc = ((struct dec_ctx *)ctx)->lc;
    if (create)
        *lc->flags |= lc->flag_dec;
    return lc->dec;
}

static int dec_frame(void *ctx, uint8_t opcode, const uint8_t *p, uint32_t len)
{
    const struct lws_conn *lc = ((struct dec_ctx *)ctx)->lc;
    struct rb__frame_hdr h = {.len = (uint16_t)len};
    switch (opcode) {
    case RB__WS_OP_CONT:
        return 0;
    case RB__WS_OP_PING:
    case RB__WS_OP_PONG:
        if (len != RB__PING_LEN)
            return -EPROTO; /* ringbeatd's tokens are 8 bytes; so are our pings' */
        h.type = opcode == RB__WS_OP_PING ? RB_FRAME_PING : RB_FRAME_PONG;
        return lc->frame(lc->ctx, &h, p);
    case RB__WS_OP_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t rlen;
        if (rb__ws_close_parse(p, len, &code, &reason, &rlen) < 0)
            return -EPROTO;
        return v1_close(lc, reason_of(code));
    }
    default: /* text or binary */
        h.type = RB_FRAME_DATA;
        return lc->frame(lc->ctx, &h, p);
    }
}

static int feed_frames(const struct lws_conn *lc, uint8_t *p, size_t n)
{
    struct dec_ctx ctx = {lc};
    const struct rb__ws_rx rx = {.from_client = false,
                                 .max_message = UINT16_MAX,
                                 .slot = dec_slot,
                                 .frame = dec_frame,
                                 .ctx = &ctx};
    int r = rb__ws_feed(&rx, p, n);
    if (!*lc->dec)
        *lc->flags &= (uint8_t)~lc->flag_dec;
    return r;
}

/* The 101 (or a refusal) is complete in head[0..end): a WELCOME, or a CLOSE for a 503. */
static int on_reply(const struct lws_conn *lc, const uint8_t *head, size_t end)
{
    char key[RB__WS_KEY_LEN + 1], accept[RB__WS_ACCEPT_LEN + 1];
    make_key(lc->id, lc->nonce, key);
    if (rb__ws_accept((const uint8_t *)key, RB__WS_KEY_LEN, accept) < 0)
        return -EPROTO;
    struct rb__ws_reply reply;
    int status;
    if (rb__ws_reply_parse(head, end, accept, &status, &reply) < 0)
        return status == 503 ? v1_close(lc, RB_CLOSE_FULL) : -EPROTO; /* full, or stopping */
    if (!reply.interval_ms || reply.timeout_ms <= reply.interval_ms)
        return -EPROTO; /* the lateness accounting needs the timeout in force */
    struct rb__welcome wl = {.version = RB_PROTO_VERSION,
                             .mode = (uint8_t)(reply.mode >= 0 ? reply.mode : lc->mode),
                             .interval_ms = reply.interval_ms,
                             .timeout_ms = reply.timeout_ms,
                             .conn_id = reply.conn_id};
    uint8_t f[RB_FRAME_HEADER_LEN + RB__WELCOME_LEN];
    rb__put_welcome(f, &wl);
    struct rb__frame_hdr h = {.type = RB_FRAME_WELCOME, .len = RB__WELCOME_LEN};
    return lc->frame(lc->ctx, &h, f + RB_FRAME_HEADER_LEN);
}

int lws_feed(const struct lws_conn *lc, uint8_t *p, size_t n)
{
    if (!lc->handshaking)
        return feed_frames(lc, p, n);
    struct rb__v1_split *hs = *lc->head;
    size_t end, used;
    int r;
    if (!hs && (end = rb__http_head_end(p, n, 0)) != 0) {
        /* The usual case: the whole response in one read. */
        if ((r = on_reply(lc, p, end)) != 0)
            return r;
        used = end;
    } else {
        uint32_t from = hs ? hs->len : 0;
        size_t take = RB__WS_HEAD_MAX - from < n ? RB__WS_HEAD_MAX - from : n;
        if (!hs || hs->len + take > hs->cap) {
            uint32_t cap = RB__WS_HEAD_MAX;
            struct rb__v1_split *g = realloc(hs, sizeof(*g) + cap);
            if (!g)
                return -ENOMEM;
            if (!hs)
                g->len = 0;
            g->cap = cap;
            *lc->head = hs = g;
        }
        memcpy(hs->data + hs->len, p, take);
        hs->len += (uint32_t)take;
        if (!(end = rb__http_head_end(hs->data, hs->len, from)))
            return hs->len >= RB__WS_HEAD_MAX ? -EPROTO : 0;
        *lc->head = NULL; /* detached: the decoder's state takes the same slot */
        r = on_reply(lc, hs->data, end);
        /* Bytes behind the head in the buffer are frames; so is the rest of this read. */
        size_t behind = hs->len - end;
        used = take;
        if (r == 0 && behind) {
            struct lws_conn up = *lc;
            up.handshaking = false;
            r = feed_frames(&up, hs->data + end, behind);
        }
        free(hs);
        if (r)
            return r;
    }
    if (n == used)
        return 0;
    struct lws_conn up = *lc;
    up.handshaking = false;
    return feed_frames(&up, p + used, n - used);
}
