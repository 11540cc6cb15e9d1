/* codec_ws.c — WebSocket (RFC 6455) behind the codec interface: the upgrade, frames to events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ws.h"

/*
 * Per-connection state. The record's codec bytes hold the phase (byte 0; a fresh record is 0:
 * the handshake) and, for a refused handshake, why (byte 1: enum rb__ws_refusal), read by
 * put_close to write the HTTP answer. ext->codec exists only while something is incomplete:
 * during the handshake a request head that came in pieces (struct ws_head, at most 8 KiB + 1),
 * once open a split frame or a fragmented message (struct rb__ws_split, ws_frame.c). An idle
 * open connection therefore holds exactly what an idle v1 connection holds: the 64-byte record.
 */
enum { WS_HANDSHAKE = 0, WS_OPEN = 1 };

struct ws_head {
    uint32_t len, cap;
    uint8_t data[];
};

/* libcrypto loads its providers on first use: done here, at start, rather than inside the loop
 * turn of the first handshake (and so that its fixed memory is not taken for per-connection). */
static int ws_prepare(const struct rb_config *cfg)
{
    (void)cfg;
    char accept[RB__WS_ACCEPT_LEN + 1];
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455's example */
    if (rb__ws_accept((const uint8_t *)key, sizeof(key) - 1, accept) < 0 ||
        strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0)
        return -ENOSYS; /* no SHA-1 in this libcrypto */
    return 0;
}

/* The handshake has its own deadline and no heartbeats: the record runs in silent mode with
 * interval = timeout = the handshake timeout until the upgrade, so the liveness code needs no
 * notion of a handshake. The upgrade restores the defaults and rb__sess_open applies the
 * connection's own (and its PING schedule). */
static void ws_start(struct rb__worker *w, struct rb__conn *c)
{
    const struct rb_config *cfg = &w->e->cfg;
    uint32_t t = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : cfg->timeout_ms;
    c->codec[0] = WS_HANDSHAKE;
    c->interval_ms = c->timeout_ms = t;
    rb__conn_set_mode(c, RB_MODE_SILENT);
    rb__live_set_mark(w, c, RB_ALIVE, rb__live_weight_max(c));
}

static int ws_refuse(struct rb__worker *w, struct rb__conn *c, enum rb__ws_refusal why)
{
    c->codec[1] = (uint8_t)why;
    rb_log(RB_LOG_DEBUG, "ws_refused", "conn=%llu status=%u reason=\"%s\"",
           (unsigned long long)rb__conn_id(w, c), rb__ws_refusal_status(why),
           rb__ws_refusal_text(why));
    return rb__sess_fail(
        w, c, why == RB__WS_UNAUTHORIZED ? RB_CLOSE_UNAUTHORIZED : RB_CLOSE_HANDSHAKE, 0);
}

struct ws_ctx {
    struct rb__worker *w;
    struct rb__conn *c;
};

static struct rb__ws_split **ws_slot(void *ctx, bool create)
{
    struct ws_ctx *x = ctx;
    struct rb__conn_ext *ext = create ? rb__conn_ext(x->w, x->c) : x->c->ext;
    return ext ? (struct rb__ws_split **)&ext->codec : NULL;
}

/* One complete frame from the client: any of them is a sign of life, a partial one is not. */
static int ws_frame(void *ctx, uint8_t opcode, const uint8_t *p, uint32_t len)
{
    struct ws_ctx *x = ctx;
    struct rb__worker *w = x->w;
    struct rb__conn *c = x->c;
    rb__live_touch(w, c);
    switch (opcode) {
    case RB__WS_OP_CONT: /* a fragment; its message goes out when it is whole */
        return 0;
    case RB__WS_OP_TEXT:
        return rb__sess_data(w, c, RB_DATA_TEXT, p, len);
    case RB__WS_OP_BINARY:
        return rb__sess_data(w, c, RB_DATA_BINARY, p, len);
    case RB__WS_OP_PING:
        return rb__sess_ping(w, c, p, len); /* answered with the same payload unless silent */
    case RB__WS_OP_PONG:
        return rb__sess_pong(w, c, p, len);
    case RB__WS_OP_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        int r = rb__ws_close_parse(p, len, &code, &reason, &reason_len);
        if (r == -EILSEQ)
            return rb__sess_fail(w, c, RB_CLOSE_BAD_PAYLOAD, 0);
        if (r < 0)
            return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
        return rb__sess_fail(w, c, RB_CLOSE_PEER, code); /* answered with a Close (put_close) */
    }
    default: /* rb__ws_feed hands out nothing else */
        return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
    }
}

static int ws_frames(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n)
{
    struct ws_ctx ctx = {.w = w, .c = c};
    const struct rb__ws_rx rx = {.from_client = true,
                                 .max_message = w->e->cfg.max_frame,
                                 .slot = ws_slot,
                                 .frame = ws_frame,
                                 .ctx = &ctx};
    int r = rb__ws_feed(&rx, p, n);
    if (r == -EMSGSIZE)
        return rb__sess_fail(w, c, RB_CLOSE_TOO_BIG, 0);
    if (r == -EPROTO)
        return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
    if (r == -EILSEQ)
        return rb__sess_fail(w, c, RB_CLOSE_BAD_PAYLOAD, 0);
    if (r == -ENOMEM)
        return rb__sess_fail(w, c, RB_CLOSE_RESET, 0);
    if (r < 0)
        return -1;
    if (c->ext && !c->ext->codec)
        rb__conn_ext_trim(c); /* the split frame or message completed */
    return 0;
}

/*
 * A complete request head: refuse it with an HTTP status, or open the connection. The query is
 * clamped by rb__sess_open exactly like a HELLO, and the 101 is this codec's welcome (it carries
 * the effective values), sent before on_open runs, so whatever on_open sends follows it.
 */
static int ws_upgrade(struct rb__worker *w, struct rb__conn *c, const uint8_t *head, size_t len)
{
    const struct rb_config *cfg = &w->e->cfg;
    struct rb__ws_request rq;
    enum rb__ws_refusal why = rb__ws_request_parse(head, len, cfg, &rq);
    if (why != RB__WS_OK)
        return ws_refuse(w, c, why);
    uint64_t id = rb__conn_id(w, c);
    /* The handshake's timing ends: back to the defaults (what the listener's TCP_USER_TIMEOUT
     * says), which rb__sess_open replaces with the connection's own. */
    c->codec[0] = WS_OPEN;
    c->interval_ms = cfg->interval_ms;
    c->timeout_ms = cfg->timeout_ms;
    rb__conn_set_mode(c, cfg->mode);
    rb__live_touch(w, c); /* the whole request is the first sign of life */
    rq.params.welcome_arg = rq.accept;
    int r = rb__sess_open(w, c, &rq.params, true);
    if (r == -EPROTO || r == -EACCES) {
        c->codec[0] = WS_HANDSHAKE; /* nothing was sent: the refusal is still HTTP */
        return ws_refuse(w, c, r == -EACCES ? RB__WS_UNAUTHORIZED : RB__WS_UNHONOURABLE);
    }
    if (r < 0 || !rb__conn_lookup(w, id))
        return -1;
    rb__live_start(w, c); /* the spread first PING of server mode, whatever apply() changed */
    return 0;
}

/* Keeps a request head that came in pieces, growing to at most RB__WS_HEAD_MAX + 1 bytes. */
static struct ws_head *head_keep(struct rb__worker *w, struct rb__conn *c, const uint8_t *p,
                                 size_t n)
{
    struct rb__conn_ext *x = rb__conn_ext(w, c);
    if (!x)
        return NULL;
    struct ws_head *hs = x->codec;
    uint32_t len = hs ? hs->len : 0, cap = hs ? hs->cap : 0;
    if (len + n > cap) {
        size_t want = cap ? (size_t)cap * 2 : 512;
        while (want < len + n)
            want *= 2;
        if (want > RB__WS_HEAD_MAX + 1)
            want = RB__WS_HEAD_MAX + 1;
        struct ws_head *g = realloc(hs, sizeof(*g) + want);
        if (!g)
            return NULL;
        if (!hs)
            g->len = 0;
        g->cap = (uint32_t)want;
        x->codec = hs = g;
    }
    memcpy(hs->data + hs->len, p, n);
    hs->len += (uint32_t)n;
    return hs;
}

static int ws_handshake(struct rb__worker *w, struct rb__conn *c, uint8_t **pp, size_t *pn)
{
    uint8_t *p = *pp;
    size_t n = *pn;
    struct ws_head *hs = c->ext ? c->ext->codec : NULL;
    if (!hs) {
        /* The usual case: the whole head in one read, parsed where it lies. */
        size_t end = rb__http_head_end(p, n, 0);
        if (end) {
            *pp = p + end;
            *pn = n - end;
            return ws_upgrade(w, c, p, end);
        }
    }
    uint32_t from = hs ? hs->len : 0;
    size_t take = RB__WS_HEAD_MAX + 1 - from < n ? RB__WS_HEAD_MAX + 1 - from : n;
    if (!(hs = head_keep(w, c, p, take)))
        return rb__sess_fail(w, c, RB_CLOSE_RESET, 0);
    *pp = p + take;
    *pn = n - take;
    size_t end = rb__http_head_end(hs->data, hs->len, from);
    if (!end)
        return hs->len > RB__WS_HEAD_MAX ? ws_refuse(w, c, RB__WS_TOO_LARGE) : 0;
    /* Detached for the upgrade: it lives until the bytes behind the head are fed. */
    c->ext->codec = NULL;
    int r = ws_upgrade(w, c, hs->data, end);
    if (r == 0 && hs->len > end)
        r = ws_frames(w, c, hs->data + end, hs->len - end);
    free(hs);
    if (r == 0 && c->ext && !c->ext->codec)
        rb__conn_ext_trim(c);
    return r;
}

static int ws_input(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n)
{
    if (c->codec[0] == WS_HANDSHAKE) {
        /* Bytes after the head (a client that does not wait for the 101) are frames. */
        if (ws_handshake(w, c, &p, &n) < 0)
            return -1;
        if (!n || c->codec[0] == WS_HANDSHAKE)
            return 0;
    }
    return ws_frames(w, c, p, n);
}

static uint32_t ws_put_ping(uint8_t *out, bool pong, const uint8_t *payload, uint32_t len)
{
    return (uint32_t)rb__ws_put_frame(out, pong ? RB__WS_OP_PONG : RB__WS_OP_PING, payload, len,
                                      NULL);
}

static uint32_t ws_put_data(uint8_t *out, enum rb_data_kind kind, const void *data, uint32_t len)
{
    uint8_t op = kind == RB_DATA_TEXT ? RB__WS_OP_TEXT : RB__WS_OP_BINARY;
    return (uint32_t)rb__ws_put_frame(out, op, data, len, NULL);
}

/* The welcome is the 101 response; wi->arg is the request's Sec-WebSocket-Accept (ws_upgrade). */
static uint32_t ws_put_welcome(uint8_t *out, const struct rb__conn *c,
                               const struct rb__welcome_info *wi)
{
    (void)c;
    return wi->arg ? (uint32_t)rb__ws_put_101(out, wi->arg, wi) : 0;
}

/*
 * ringbeat's close reasons as WebSocket close codes (the table in docs/websocket.md). Before the
 * 101 the answer is HTTP: the refusal's status, or 503 with Retry-After when full or stopping; a
 * handshake that times out, or a peer that vanished, is just closed.
 */
static uint32_t ws_put_close(uint8_t *out, const struct rb__conn *c, int reason, int peer_code)
{
    if (!c || c->codec[0] == WS_HANDSHAKE) {
        switch (reason) {
        case RB_CLOSE_FULL:
            return (uint32_t)rb__ws_put_unavailable(out, 5);
        case RB_CLOSE_SHUTDOWN:
            return (uint32_t)rb__ws_put_unavailable(out, 1); /* another process may take it */
        case RB_CLOSE_HANDSHAKE:
        case RB_CLOSE_UNAUTHORIZED: /* 401: the refusal ws_refuse() recorded */
            return (uint32_t)rb__ws_put_refusal(out, (enum rb__ws_refusal)c->codec[1]);
        default:
            return 0;
        }
    }
    uint16_t code;
    const char *text = NULL;
    switch (reason) {
    case RB_CLOSE_PEER: /* the peer's Close is answered with its own code (none: none) */
        code = peer_code == RB__WS_CLOSE_NO_STATUS ? 0 : (uint16_t)peer_code;
        break;
    case RB_CLOSE_EOF:
    case RB_CLOSE_RESET:
        return 0;
    case RB_CLOSE_NORMAL:
        code = RB__WS_CLOSE_NORMAL;
        break;
    case RB_CLOSE_PROTOCOL:
        code = RB__WS_CLOSE_PROTOCOL, text = "protocol error";
        break;
    case RB_CLOSE_SHUTDOWN:
        code = RB__WS_CLOSE_GOING_AWAY, text = "server shutting down";
        break;
    case RB_CLOSE_TOO_BIG:
        code = RB__WS_CLOSE_TOO_BIG, text = "message too big";
        break;
    case RB_CLOSE_BAD_PAYLOAD:
        code = RB__WS_CLOSE_BAD_PAYLOAD, text = "invalid UTF-8";
        break;
    case RB_CLOSE_FULL:
        code = RB__WS_CLOSE_TRY_LATER;
        break;
    case RB_CLOSE_TIMEOUT:
        code = RB__WS_CLOSE_APP_BASE + RB_CLOSE_TIMEOUT, text = "heartbeat timeout";
        break;
    default:
        if (reason > 0 && reason < RB_CLOSE_PEER) /* a ringbeat reason: 4000 + its number */
            code = (uint16_t)(RB__WS_CLOSE_APP_BASE + reason);
        else if (reason <= UINT16_MAX && rb__ws_close_code_valid((uint16_t)reason))
            code = (uint16_t)reason; /* an application's own WebSocket code (rb_close) */
        else
            code = RB__WS_CLOSE_NORMAL;
    }
    return (uint32_t)rb__ws_put_close(out, code, text, NULL);
}

static void ws_release(struct rb__conn *c, void *state)
{
    if (c->codec[0] == WS_HANDSHAKE)
        free(state); /* a request head in pieces */
    else
        rb__ws_split_free(state);
}

_Static_assert(RB__WS_ERROR_MAX >= 2 + RB__WS_CONTROL_MAX, "a close frame fits control_max");

const struct rb__codec rb__codec_ws = {
    .name = "ws",
    .protocol = RB_PROTOCOL_WS,
    .prepare = ws_prepare,
    .start = ws_start,
    .input = ws_input,
    .put_ping = ws_put_ping,
    .put_data = ws_put_data,
    .put_welcome = ws_put_welcome,
    .put_close = ws_put_close,
    .release = ws_release,
    .control_max = RB__WS_ERROR_MAX,
    .data_overhead = 4, /* 2-byte header + 16-bit length: max_frame is at most 65535 */
    .welcome_max = RB__WS_101_MAX,
};
