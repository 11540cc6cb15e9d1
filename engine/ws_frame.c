/* ws_frame.c — WebSocket frames: header checks, masking, encoders, the stream decoder. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "ws.h"

int rb__ws_hdr_parse(const uint8_t *p, size_t n, bool from_client, uint32_t max_data,
                     struct rb__ws_hdr *h)
{
    if (n < 1)
        return 0;
    uint8_t b0 = p[0], op = b0 & 0x0F;
    if (b0 & 0x70)
        return -EPROTO; /* RSV1-3: no extension was negotiated (permessage-deflate declined) */
    bool control = op & 0x8;
    if (op > RB__WS_OP_BINARY && (op < RB__WS_OP_CLOSE || op > RB__WS_OP_PONG))
        return -EPROTO;
    if (control && !(b0 & 0x80))
        return -EPROTO; /* a fragmented control frame */
    if (n < 2)
        return 0;
    uint8_t b1 = p[1], len7 = b1 & 0x7F;
    if (!!(b1 & 0x80) != from_client)
        return -EPROTO; /* clients mask every frame, servers none */
    if (control && len7 > RB__WS_CONTROL_MAX)
        return -EPROTO;
    size_t hl = 2;
    uint64_t len = len7;
    if (len7 == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        if (len < 126)
            return -EPROTO; /* not the shortest form (RFC 6455 5.2: MUST be minimal) */
        hl = 4;
    } else if (len7 == 127) {
        /* Decided byte by byte, so a cut header is refused where the whole one is. */
        for (size_t i = 2; i < 10; i++) {
            if (n <= i)
                return 0;
            if (i == 2 && (p[2] & 0x80))
                return -EPROTO; /* the top bit of a 64-bit length must be 0 */
            if (i < 8 && p[i] && max_data < 0x10000)
                return -EMSGSIZE; /* at least 2^16 bytes */
        }
        len = 0;
        for (size_t i = 2; i < 10; i++)
            len = len << 8 | p[i];
        if (len < 0x10000)
            return -EPROTO; /* not the shortest form */
        hl = 10;
    }
    if (!control && len > max_data)
        return -EMSGSIZE; /* decided from the header: the payload is never buffered */
    if (from_client) {
        if (n < hl + 4)
            return 0;
        memcpy(h->mask, p + hl, 4);
        hl += 4;
    } else {
        memset(h->mask, 0, 4);
    }
    h->fin = b0 >> 7;
    h->opcode = op;
    h->masked = from_client;
    h->len = (uint32_t)len;
    h->hdr_len = (uint8_t)hl;
    return (int)hl;
}

void rb__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint32_t offset)
{
    size_t i = 0;
    /* A word at a time once aligned to the key: the payloads that matter are a few KB. */
    for (; i < n && ((offset + i) & 3); i++)
        p[i] ^= mask[(offset + i) & 3];
    uint32_t m32;
    memcpy(&m32, mask, 4);
    for (; i + 4 <= n; i += 4) {
        uint32_t v;
        memcpy(&v, p + i, 4);
        v ^= m32;
        memcpy(p + i, &v, 4);
    }
    for (; i < n; i++)
        p[i] ^= mask[(offset + i) & 3];
}

size_t rb__ws_put_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t len,
                        const uint8_t *mask)
{
    size_t hl = 2;
    out[0] = (uint8_t)(0x80 | opcode);
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[1] = (uint8_t)(m | len);
    } else if (len < 0x10000) {
        out[1] = m | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        hl = 4;
    } else {
        out[1] = m | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        memcpy(out + hl, mask, 4);
        hl += 4;
    }
    if (len)
        memcpy(out + hl, payload, len);
    if (mask)
        rb__ws_mask(out + hl, len, mask, 0);
    return hl + len;
}

bool rb__ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

size_t rb__ws_put_close(uint8_t *out, uint16_t code, const char *reason, const uint8_t *mask)
{
    uint8_t payload[RB__WS_CONTROL_MAX];
    size_t n = 0;
    if (code) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        size_t rlen = reason ? strlen(reason) : 0;
        if (rlen > RB__WS_CONTROL_MAX - 2) {
            rlen = RB__WS_CONTROL_MAX - 2;
            /* Cut on a character boundary so that the peer's UTF-8 check still passes. */
            while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
                rlen--;
        }
        if (rlen)
            memcpy(payload + 2, reason, rlen);
        n = 2 + rlen;
    }
    return rb__ws_put_frame(out, RB__WS_OP_CLOSE, payload, n, mask);
}

int rb__ws_close_parse(const uint8_t *p, size_t len, uint16_t *code, const uint8_t **reason,
                       size_t *reason_len)
{
    *reason = p;
    *reason_len = 0;
    if (len == 0) {
        *code = RB__WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (len == 1)
        return -EPROTO;
    *code = (uint16_t)(p[0] << 8 | p[1]);
    if (!rb__ws_close_code_valid(*code))
        return -EPROTO;
    if (!rb__utf8_valid(p + 2, len - 2))
        return -EILSEQ;
    *reason = p + 2;
    *reason_len = len - 2;
    return 0;
}

/* ---- stream decoder ---- */

struct rb__ws_split {
    uint8_t hdr[RB__WS_HDR_MAX]; /* a header not complete yet */
    uint8_t hdr_len;
    bool in_frame;       /* h is parsed and `got` payload bytes of it have arrived */
    bool in_msg;         /* a data message is being assembled in msg */
    uint8_t msg_op;      /* its opcode: TEXT or BINARY */
    struct rb__ws_hdr h; /* the frame being received */
    uint32_t got;        /* its payload bytes so far */
    uint32_t utf8;       /* rb__utf8_step state of a text message */
    uint32_t msg_len, msg_cap;
    uint8_t *msg;
    uint8_t ctl[RB__WS_CONTROL_MAX]; /* a split control frame's payload */
};

size_t rb__ws_pending(const struct rb__ws_split *s)
{
    if (!s)
        return 0;
    return s->hdr_len + (s->in_frame ? s->got + s->h.hdr_len : 0) + (s->in_msg ? s->msg_len : 0) +
           (s->in_msg || s->in_frame); /* a message or frame in progress, even if empty */
}

void rb__ws_split_free(struct rb__ws_split *s)
{
    if (s)
        free(s->msg);
    free(s);
}

static struct rb__ws_split *split_get(const struct rb__ws_rx *rx)
{
    struct rb__ws_split **slot = rx->slot(rx->ctx, false);
    return slot ? *slot : NULL;
}

static struct rb__ws_split *split_make(const struct rb__ws_rx *rx)
{
    struct rb__ws_split **slot = rx->slot(rx->ctx, true);
    if (!slot)
        return NULL;
    if (!*slot && (*slot = malloc(sizeof(**slot))) != NULL) {
        memset(*slot, 0, offsetof(struct rb__ws_split, ctl));
    }
    return *slot;
}

/* Frees the split once nothing is pending: between frames the decoder holds no memory. */
static void split_trim(const struct rb__ws_rx *rx)
{
    struct rb__ws_split **slot = rx->slot(rx->ctx, false);
    struct rb__ws_split *s = slot ? *slot : NULL;
    if (s && !s->hdr_len && !s->in_frame && !s->in_msg) {
        rb__ws_split_free(s);
        *slot = NULL;
    }
}

/* Room for `more` message bytes: grows geometrically, never past the message's known size. */
static int msg_reserve(struct rb__ws_split *s, uint32_t more, uint32_t max)
{
    uint32_t need = s->msg_len + more;
    if (need <= s->msg_cap)
        return 0;
    uint32_t cap = s->msg_cap * 2 > need ? s->msg_cap * 2 : need;
    if (cap > max)
        cap = max > need ? max : need;
    uint8_t *m = realloc(s->msg, cap ? cap : 1);
    if (!m)
        return -ENOMEM;
    s->msg = m;
    s->msg_cap = cap;
    return 0;
}

/* Checks a data frame against the message in progress; from the header, before any payload. */
static int data_begin(const struct rb__ws_split *s, const struct rb__ws_hdr *h)
{
    bool in_msg = s && s->in_msg;
    if (h->opcode == RB__WS_OP_CONT ? !in_msg : in_msg)
        return -EPROTO; /* a continuation with no start, or a new message inside one */
    return 0;
}

/* Payload bytes of a data frame that is being assembled (unmasked, UTF-8 judged as they come). */
static int msg_append(const struct rb__ws_rx *rx, struct rb__ws_split *s, const uint8_t *p,
                      uint32_t n)
{
    if (n == 0)
        return 0;
    /* The whole frame's room at its first bytes: one allocation per frame, not one per read. */
    if (msg_reserve(s, s->h.len - s->got, rx->max_message) < 0)
        return -ENOMEM;
    uint8_t *dst = s->msg + s->msg_len;
    memcpy(dst, p, n);
    if (s->h.masked)
        rb__ws_mask(dst, n, s->h.mask, s->got);
    if (s->msg_op == RB__WS_OP_TEXT && rb__utf8_step(&s->utf8, dst, n) < 0)
        return -EILSEQ;
    s->msg_len += n;
    return 0;
}

/* A frame whose payload is all in s (a split frame): hand it out. */
static int split_frame_done(const struct rb__ws_rx *rx, struct rb__ws_split *s)
{
    s->in_frame = false;
    uint8_t op = s->h.opcode;
    if (op & 0x8)
        return rx->frame(rx->ctx, op, s->ctl, s->h.len);
    if (!s->h.fin)
        return rx->frame(rx->ctx, RB__WS_OP_CONT, NULL, s->h.len);
    if (s->msg_op == RB__WS_OP_TEXT && s->utf8)
        return -EILSEQ; /* the text ends inside a character */
    s->in_msg = false;
    int r = rx->frame(rx->ctx, s->msg_op, s->msg ? s->msg : s->ctl, s->msg_len);
    if (r)
        return r;
    free(s->msg);
    s->msg = NULL;
    s->msg_len = s->msg_cap = 0;
    return 0;
}

/* A frame whose header is parsed: take what of its payload is in p; *used says how much. */
static int frame_take(const struct rb__ws_rx *rx, struct rb__ws_split *s, uint8_t *p, size_t n,
                      size_t *used)
{
    uint32_t take = s->h.len - s->got < n ? s->h.len - s->got : (uint32_t)n;
    *used = take;
    if (s->h.opcode & 0x8) {
        memcpy(s->ctl + s->got, p, take);
        if (s->h.masked)
            rb__ws_mask(s->ctl + s->got, take, s->h.mask, s->got);
    } else {
        int r = msg_append(rx, s, p, take);
        if (r)
            return r;
    }
    s->got += take;
    if (s->got < s->h.len)
        return 0;
    return split_frame_done(rx, s);
}

/* A frame wholly in p (already unmasked): control frames and whole messages go out in place. */
static int frame_whole(const struct rb__ws_rx *rx, const struct rb__ws_hdr *h, uint8_t *payload)
{
    struct rb__ws_split *s = split_get(rx);
    if (h->opcode & 0x8)
        return rx->frame(rx->ctx, h->opcode, payload, h->len);
    if (h->opcode != RB__WS_OP_CONT && h->fin) {
        if (h->opcode == RB__WS_OP_TEXT && !rb__utf8_valid(payload, h->len))
            return -EILSEQ;
        return rx->frame(rx->ctx, h->opcode, payload, h->len);
    }
    /* A fragment: it joins the message in the split. */
    if (!s && !(s = split_make(rx)))
        return -ENOMEM;
    if (h->opcode != RB__WS_OP_CONT) {
        s->in_msg = true;
        s->msg_op = h->opcode;
        s->utf8 = 0;
    }
    s->h = *h;
    s->h.masked = false; /* unmasked in place already */
    s->got = 0;
    s->in_frame = true;
    size_t used;
    return frame_take(rx, s, payload, h->len, &used);
}

/* Completes a header that was split, with bytes from p; *used says how many it took. */
static int hdr_continue(const struct rb__ws_rx *rx, struct rb__ws_split *s, const uint8_t *p,
                        size_t n, size_t *used)
{
    *used = 0;
    while (n) {
        s->hdr[s->hdr_len++] = *p++;
        n--;
        (*used)++;
        uint32_t max = rx->max_message - (s->in_msg ? s->msg_len : 0);
        int r = rb__ws_hdr_parse(s->hdr, s->hdr_len, rx->from_client, max, &s->h);
        if (r < 0)
            return r;
        if (r > 0) {
            s->hdr_len = 0;
            if (!(s->h.opcode & 0x8) && (r = data_begin(s, &s->h)) < 0)
                return r;
            if (!(s->h.opcode & 0x8) && s->h.opcode != RB__WS_OP_CONT) {
                s->in_msg = true;
                s->msg_op = s->h.opcode;
                s->utf8 = 0;
            }
            s->got = 0;
            s->in_frame = true;
            return s->h.len ? 0 : split_frame_done(rx, s);
        }
    }
    return 0;
}

int rb__ws_feed(const struct rb__ws_rx *rx, uint8_t *p, size_t n)
{
    while (n) {
        struct rb__ws_split *s = split_get(rx);
        int r;
        if (s && (s->hdr_len || s->in_frame)) {
            size_t used;
            r = s->hdr_len ? hdr_continue(rx, s, p, n, &used) : frame_take(rx, s, p, n, &used);
            if (r)
                return r;
            p += used;
            n -= used;
            split_trim(rx);
            continue;
        }
        struct rb__ws_hdr h;
        uint32_t max = rx->max_message - (s && s->in_msg ? s->msg_len : 0);
        r = rb__ws_hdr_parse(p, n, rx->from_client, max, &h);
        if (r < 0)
            return r;
        if (r == 0) {
            /* A header cut by the read: it waits in the split (at most 13 bytes). */
            if (!s && !(s = split_make(rx)))
                return -ENOMEM;
            memcpy(s->hdr, p, n);
            s->hdr_len = (uint8_t)n;
            return 0;
        }
        if (!(h.opcode & 0x8) && (r = data_begin(s, &h)) < 0)
            return r;
        p += h.hdr_len;
        n -= h.hdr_len;
        if (n >= h.len) {
            if (h.masked)
                rb__ws_mask(p, h.len, h.mask, 0);
            if ((r = frame_whole(rx, &h, p)) != 0)
                return r;
            p += h.len;
            n -= h.len;
            split_trim(rx);
            continue;
        }
        /* The payload goes on in later reads. */
        if (!s && !(s = split_make(rx)))
            return -ENOMEM;
        s->h = h;
        s->got = 0;
        s->in_frame = true;
        if (!(h.opcode & 0x8) && h.opcode != RB__WS_OP_CONT) {
            s->in_msg = true;
            s->msg_op = h.opcode;
            s->utf8 = 0;
        }
        size_t used;
        if ((r = frame_take(rx, s, p, n, &used)) != 0)
            return r;
        return 0;
    }
    return 0;
}
