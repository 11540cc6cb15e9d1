/* codec_v1.c — protocol v1 behind the codec interface: frames to session events, and encoders. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * The record's codec bytes hold a split frame: byte 0 its length, bytes 1-7 the frame (enough
 * for a header). A longer split frame lives in ext->codec (struct rb__v1_split), sized for
 * exactly that frame.
 */
_Static_assert(RB__CODEC_INLINE - 1 >= RB_FRAME_HEADER_LEN, "a header fits inline");

struct v1_ctx {
    struct rb__worker *w;
    struct rb__conn *c;
};

static struct rb__v1_split **v1_slot(void *ctx, bool create)
{
    struct v1_ctx *x = ctx;
    struct rb__conn_ext *ext = create ? rb__conn_ext(x->w, x->c) : x->c->ext;
    return ext ? (struct rb__v1_split **)&ext->codec : NULL;
}

/* The first frame of a connection opens it: a HELLO with what it asks for, anything else with
 * the defaults (and no WELCOME: such a client does not expect one). */
static int v1_open(struct rb__worker *w, struct rb__conn *c, const struct rb__frame_hdr *h,
                   const uint8_t *p)
{
    struct rb__open_params op = {0};
    if (h->type != RB_FRAME_HELLO)
        return rb__sess_open(w, c, &op, false);
    struct rb__hello hello;
    if (rb__hello_parse(p, h->len, &hello) < 0)
        return -EPROTO;
    op.has_mode = true;
    op.mode = (enum rb_mode)hello.mode;
    op.interval_ms = hello.interval_ms;
    op.timeout_ms = hello.timeout_ms;
    op.client_id = hello.client_id;
    op.client_id_len = hello.client_id_len;
    return rb__sess_open(w, c, &op, true);
}

static int v1_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *p)
{
    struct v1_ctx *x = ctx;
    struct rb__worker *w = x->w;
    struct rb__conn *c = x->c;
    RB__INC(w, frames_in[h->type]);
    rb__live_touch(w, c);
    if (!(c->flags & RB__CF_OPEN)) {
        int r = v1_open(w, c, h, p);
        if (r == -EPROTO)
            return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
        if (r < 0 || h->type == RB_FRAME_HELLO)
            return r;
    }
    switch (h->type) {
    case RB_FRAME_PING:
        return rb__sess_ping(w, c, p, h->len);
    case RB_FRAME_PONG:
        return rb__sess_pong(w, c, p, h->len);
    case RB_FRAME_DATA:
        return rb__sess_data(w, c, RB_DATA_BINARY, p, h->len);
    case RB_FRAME_TUNE: {
        struct rb__open_params op = {0};
        if (rb__tune_parse(p, h->len, &op.interval_ms, &op.timeout_ms) < 0 ||
            rb__sess_tune(w, c, &op) == -EPROTO)
            break;
        return rb__conn_lookup(w, rb__conn_id(w, c)) ? 0 : -1;
    }
    case RB_FRAME_CLOSE: {
        uint16_t code;
        const uint8_t *reason;
        size_t reason_len;
        if (rb__close_parse(p, h->len, &code, &reason, &reason_len) < 0)
            break;
        return rb__sess_fail(w, c, RB_CLOSE_PEER, code);
    }
    default: /* a second HELLO, or a WELCOME (only servers send it) */
        break;
    }
    return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
}

static int v1_input(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n)
{
    struct v1_ctx ctx = {.w = w, .c = c};
    const struct rb__v1_rx rx = {.inl_len = &c->codec[0],
                                 .inl = &c->codec[1],
                                 .inl_cap = RB__CODEC_INLINE - 1,
                                 .max_frame = w->e->cfg.max_frame,
                                 .slot = v1_slot,
                                 .frame = v1_frame,
                                 .ctx = &ctx};
    int r = rb__v1_feed(&rx, p, n);
    if (r == -EMSGSIZE)
        return rb__sess_fail(w, c, RB_CLOSE_TOO_BIG, 0);
    if (r == -EPROTO)
        return rb__sess_fail(w, c, RB_CLOSE_PROTOCOL, 0);
    if (r == -ENOMEM)
        return rb__sess_fail(w, c, RB_CLOSE_RESET, 0);
    if (r < 0)
        return -1;
    if (c->ext && !c->ext->codec)
        rb__conn_ext_trim(c); /* a split frame completed */
    return 0;
}

static uint32_t v1_put_ping(uint8_t *out, bool pong, const uint8_t *payload, uint32_t len)
{
    (void)len; /* v1 pings are always RB__PING_LEN bytes (checked from the header) */
    return (uint32_t)rb__put_ping(out, pong ? RB_FRAME_PONG : RB_FRAME_PING, rb__get_u64(payload));
}

static uint32_t v1_put_data(uint8_t *out, enum rb_data_kind kind, const void *data, uint32_t len)
{
    (void)kind; /* v1 has one kind of message */
    return (uint32_t)rb__put_data(out, data, (uint16_t)len);
}

static uint32_t v1_put_welcome(uint8_t *out, const struct rb__conn *c,
                               const struct rb__welcome_info *wi)
{
    (void)c;
    struct rb__welcome wl = {.version = RB_PROTO_VERSION,
                             .mode = (uint8_t)wi->mode,
                             .interval_ms = wi->interval_ms,
                             .timeout_ms = wi->timeout_ms,
                             .conn_id = wi->conn_id};
    return (uint32_t)rb__put_welcome(out, &wl);
}

/* v1 codes are the reasons themselves; a peer that closed or vanished is sent nothing, and an
 * application's own code (rb_close) goes out as given. */
static uint32_t v1_put_close(uint8_t *out, const struct rb__conn *c, int reason, int peer_code)
{
    (void)c;
    if (reason >= RB_CLOSE_PEER && reason < RB_CLOSE_REASON_MAX)
        return 0;
    (void)peer_code;
    return (uint32_t)rb__put_close(out, (uint16_t)reason, NULL);
}

static void v1_release(struct rb__conn *c, void *state)
{
    (void)c;
    free(state); /* a split frame */
}

const struct rb__codec rb__codec_v1 = {
    .name = "v1",
    .protocol = RB_PROTOCOL_V1,
    .input = v1_input,
    .put_ping = v1_put_ping,
    .put_data = v1_put_data,
    .put_welcome = v1_put_welcome,
    .put_close = v1_put_close,
    .release = v1_release,
    .control_max = RB__CONTROL_MAX,
    .data_overhead = RB_FRAME_HEADER_LEN,
    .welcome_max = RB_FRAME_HEADER_LEN + RB__WELCOME_LEN,
};

const struct rb__codec *rb__codec_find(enum rb_protocol p)
{
    switch (p) {
    case RB_PROTOCOL_V1:
        return &rb__codec_v1;
    default:
        return NULL;
    }
}
