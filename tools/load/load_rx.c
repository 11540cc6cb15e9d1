/* load_rx.c — ringbeat-load receive side: completions, v1/WebSocket/TLS decoding, frames. */
#include "load_int.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- protocol frames (engine/proto.c codec) ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The client id of connection number id (--client-ids). */
static int client_id_of(const struct load_cfg *cfg, uint32_t id, char out[RB_CLIENT_ID_MAX + 1])
{
    switch (cfg->client_ids) {
    case LOAD_IDS_NONE:
        out[0] = '\0';
        return 0;
    case LOAD_IDS_UUID: {
        uint64_t a = mix64(cfg->seed ^ (U64(id) << 1)), b = mix64(a ^ id);
        return snprintf(out, RB_CLIENT_ID_MAX + 1, "%08x-%04x-4%03x-%04x-%012llx",
                        (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
                        (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
                        (unsigned long long)(b & 0xffffffffffffull));
    }
    default:
        return snprintf(out, RB_CLIENT_ID_MAX + 1, "load-%u", id);
    }
}

static uint32_t frame_hello(uint8_t *out, const struct load_cfg *cfg, uint32_t id)
{
    char cid[RB_CLIENT_ID_MAX + 1], tok[RB_TOKEN_MAX + 1];
    int n = client_id_of(cfg, id, cid);
    struct rb__hello h = {.version = RB_PROTO_VERSION,
                          .mode = cfg->mode,
                          .interval_ms = cfg->interval_ms,
                          .timeout_ms = cfg->timeout_ms,
                          .client_id = (const uint8_t *)cid,
                          .client_id_len = (size_t)n};
    int tn = cfg->auth
                 ? rb_auth_mint(cfg->auth, cid, (size_t)n, cfg->token_expiry_s, tok, sizeof(tok))
                 : 0;
    if (tn > 0) {
        h.token = (const uint8_t *)tok;
        h.token_len = (size_t)tn;
    }
    return (uint32_t)rb__put_hello(out, &h);
}

void ld_rx_reset(struct lconn *c)
{
    c->rx_len = 0;
    if (c->flags & CF_WS_DEC)
        rb__ws_split_free(c->ws_split);
    else
        free(c->split);
    c->split = NULL;
    c->flags &= (uint8_t)~CF_WS_DEC;
}

/* One complete frame (payload may be truncated to what fits in rx for long CLOSE/DATA). */
static void handle_frame(struct lworker *w, struct lring *r, uint32_t slot, uint8_t type,
                         const uint8_t *p, uint32_t avail, uint32_t plen, uint64_t now)
{
    struct lconn *c = &r->c[slot];
    const struct load_cfg *cfg = w->L->cfg;
    switch (type) {
    case RB_FRAME_WELCOME: {
        struct rb__welcome wel;
        if (c->state != CS_HELLO || rb__welcome_parse(p, avail, &wel) < 0) {
            ld_protocol_error(w, r, slot, now);
            return;
        }
        uint32_t timeout_ms = wel.timeout_ms;
        c->timeout_ms = timeout_ms;
        if (timeout_ms > w->cnt.timeout_ms_max)
            CSET(w, timeout_ms_max, timeout_ms);
        c->state = CS_UP;
        c->t_us = now;
        c->attempts = 0;
        ld_pending_leave(w, r, c);
        CADD(w, up_now, 1);
        if (c->flags & CF_EVER_UP) {
            CADD(w, reconnected, 1);
        } else {
            c->flags |= CF_EVER_UP;
            CADD(w, established, 1);
            CSET(w, last_established_us, now);
        }
        return;
    }
    case RB_FRAME_PING: {
        CADD(w, pings_received, 1);
        if (c->state != CS_UP || (c->flags & CF_SILENT))
            return;
        uint8_t f[16];
        uint32_t n = ld_put_ping(cfg, f, RB_FRAME_PONG, rb__get_u64(p));
        r->pong_read_us = now ? now : 1;
        if (ld_send_bytes(w, r, slot, f, n, now) == 0)
            CADD(w, pongs_sent, 1);
        r->pong_read_us = 0;
        return;
    }
    case RB_FRAME_PONG: {
        CADD(w, pongs_received, 1);
        uint64_t token = rb__get_u64(p);
        uint64_t sched = token >> 24;
        if ((token & 0xffffff) != slot || sched > now || cfg->mode != RB_MODE_CLIENT) {
            CADD(w, pong_unmatched, 1);
            return;
        }
        lh_record(&w->rtt_us, now - sched);
        return;
    }
    case RB_FRAME_CLOSE: {
        uint16_t code = rb__get_u16(p);
        const uint8_t *reason;
        size_t reason_len;
        /* a reason longer than rx keeps was cut: only its code is known, and enough */
        if (avail == plen && rb__close_parse(p, avail, &code, &reason, &reason_len) < 0) {
            ld_protocol_error(w, r, slot, now);
            return;
        }
        ld_peer_closed(w, r, slot, code ? code : RB_CLOSE_REASON_MAX, false, now);
        return;
    }
    case RB_FRAME_DATA:
        CADD(w, data_received, 1);
        return;
    default:
        ld_protocol_error(w, r, slot, now);
        return;
    }
}

struct feed_ctx {
    struct lworker *w;
    struct lring *r;
    uint32_t slot;
    uint64_t now;
};

static struct rb__v1_split **feed_slot(void *ctx, bool create)
{
    struct feed_ctx *f = ctx;
    (void)create; /* the slot lives in the connection itself */
    return &f->r->c[f->slot].split;
}

/* One frame from the server; stops the decoder (1) once the connection is closing. */
static int feed_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload)
{
    struct feed_ctx *f = ctx;
    if (h->type == RB_FRAME_HELLO) { /* only clients send it */
        ld_protocol_error(f->w, f->r, f->slot, f->now);
        return 1;
    }
    handle_frame(f->w, f->r, f->slot, h->type, payload, h->len, h->len, f->now);
    uint8_t st = f->r->c[f->slot].state;
    return st == CS_UP || st == CS_HELLO ? 0 : 1;
}

/* Splits received bytes into frames with the engine's own v1 decoder. */
static void feed(struct lworker *w, struct lring *r, uint32_t slot, uint8_t *d, uint32_t len,
                 uint64_t now)
{
    struct lconn *c = &r->c[slot];
    struct feed_ctx f = {.w = w, .r = r, .slot = slot, .now = now};
    if (w->L->cfg->protocol == RB_PROTOCOL_WS) {
        const struct lws_conn lc = {.flags = &c->flags,
                                    .flag_dec = CF_WS_DEC,
                                    .head = &c->split,
                                    .dec = &c->ws_split,
                                    .handshaking = c->state == CS_HELLO,
                                    .id = c->id,
                                    .nonce = c->gen,
                                    .mode = w->L->cfg->mode,
                                    .frame = feed_frame,
                                    .ctx = &f};
        if (lws_feed(&lc, d, len) < 0)
            ld_protocol_error(w, r, slot, now);
        return;
    }
    const struct rb__v1_rx rx = {.inl_len = &c->rx_len,
                                 .inl = c->rx,
                                 .inl_cap = RXCAP,
                                 .max_frame = UINT16_MAX,
                                 .slot = feed_slot,
                                 .frame = feed_frame,
                                 .ctx = &f};
    int rc = rb__v1_feed(&rx, d, len);
    if (rc < 0)
        ld_protocol_error(w, r, slot, now); /* a header v1 does not allow, or no memory */
}

static void send_hello(struct lworker *w, struct lring *r, uint32_t slot, uint64_t now)
{
    uint8_t f[LWS_REQUEST_MAX];
    const struct load_cfg *cfg = w->L->cfg;
    const struct lconn *c = &r->c[slot];
    uint32_t n = cfg->protocol == RB_PROTOCOL_WS
                     ? lws_request(f, sizeof(f), cfg, c->id, c->gen,
                                   &cfg->targets[c->id % cfg->target_count])
                     : frame_hello(f, cfg, c->id);
    ld_send_bytes(w, r, slot, f, n, now);
}

/* ---- --tls: the transport under v1 (load_tls.c) ---- */

struct tls_cb {
    struct lworker *w;
    struct lring *r;
    uint32_t slot;
    uint64_t now;
};

static int tls_wire(void *x, const uint8_t *p, size_t n)
{
    struct tls_cb *t = x;
    return ld_send_wire(t->w, t->r, t->slot, p, (uint32_t)n, t->now);
}

static int tls_plain(void *x, uint8_t *p, size_t n)
{
    struct tls_cb *t = x;
    feed(t->w, t->r, t->slot, p, (uint32_t)n, t->now);
    uint8_t st = t->r->c[t->slot].state;
    return st == CS_UP || st == CS_HELLO ? 0 : 1;
}

static void tls_up(void *x)
{
    struct tls_cb *t = x;
    send_hello(t->w, t->r, t->slot, t->now);
}

/* Received bytes: straight to the v1 decoder, or through TLS first. */
static void rx_bytes(struct lworker *w, struct lring *r, uint32_t slot, uint8_t *d, uint32_t len,
                     uint64_t now)
{
    if (!r->tls) {
        feed(w, r, slot, d, len, now);
        return;
    }
    struct tls_cb t = {.w = w, .r = r, .slot = slot, .now = now};
    const struct ltls_io io = {.ctx = &t, .wire = tls_wire, .plain = tls_plain, .up = tls_up};
    switch (ltls_input(r->tls, slot, d, len, &io)) {
    case LTLS_OK:
    case LTLS_STOPPED:
        return;
    case LTLS_CLOSED:
        ld_peer_closed(w, r, slot, 0, true, now);
        return;
    case LTLS_HS_FAILED:
        CADD(w, connect_failures, 1);
        ld_begin_close(w, r, slot, false, false, now);
        return;
    default:
        ld_protocol_error(w, r, slot, now);
        return;
    }
}

static void handle_cqe(struct lworker *w, struct lring *r, const struct io_uring_cqe *cqe,
                       uint64_t now)
{
    uint64_t ud = cqe->user_data;
    enum op op = (enum op)(ud >> 56);
    uint8_t gen = (uint8_t)(ud >> 32);
    uint32_t slot = (uint32_t)ud;
    int res = cqe->res;

    if (op == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER)) {
        /* process then recycle the buffer at once: buffers are the scarce resource */
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        uint8_t *buf = r->bufs + (size_t)bid * w->L->cfg->buffer_size;
        if (slot < r->nslots && r->c[slot].gen == gen && res > 0 &&
            (r->c[slot].state == CS_UP || r->c[slot].state == CS_HELLO))
            rx_bytes(w, r, slot, buf, (uint32_t)res, now);
        io_uring_buf_ring_add(r->br, buf, w->L->cfg->buffer_size, (unsigned short)bid,
                              io_uring_buf_ring_mask(w->L->cfg->buffers), 0);
        io_uring_buf_ring_advance(r->br, 1);
        r->bufs_back++;
    }
    if (slot >= r->nslots)
        return;
    struct lconn *c = &r->c[slot];
    if (c->gen != gen)
        return; /* a completion of an earlier life of this slot */

    switch (op) {
    case OP_SOCKET:
    case OP_NODELAY:
    case OP_LTIMEOUT:
    case OP_CANCEL:
    case OP_LINGER:
        return; /* failures show up on the connect or close that follows */
    case OP_CONNECT:
        if (!r->tls)
            r->inflight--; /* with --tls: in ld_pending_leave() */
        if (c->state != CS_CONNECTING)
            return;
        if (res < 0) {
            CADD(w, connect_failures, 1);
            CSET(w, last_connect_errno, -res);
            ld_begin_close(w, r, slot, false, false, now);
            return;
        }
        if (LD(&w->L->phase) == PH_STOP) {
            ld_begin_close(w, r, slot, false, false, now);
            return;
        }
        c->state = CS_HELLO;
        c->t_us = now;
        ld_rx_reset(c);
        if (r->tls) { /* the ClientHello now, the HELLO once the handshake is done */
            struct tls_cb t = {.w = w, .r = r, .slot = slot, .now = now};
            const struct ltls_io io = {.ctx = &t, .wire = tls_wire};
            if (ltls_start(r->tls, slot, &io) < 0) {
                CADD(w, connect_failures, 1);
                ld_begin_close(w, r, slot, false, false, now);
                return;
            }
        } else {
            send_hello(w, r, slot, now);
        }
        ld_arm_recv(w, r, slot);
        return;
    case OP_SEND:
        /* A PING can race the server's CLOSE: the CLOSE frame may still wait in our receive
         * queue (behind a re-arm), so how the peer closed is left to the receive side. */
        if (res < 0 && (c->state == CS_UP || c->state == CS_HELLO))
            CADD(w, send_errors, 1);
        return;
    case OP_RECV:
        if (cqe->flags & IORING_CQE_F_MORE)
            return;
        c->flags &= (uint8_t)~CF_RECV;
        if (c->state != CS_UP && c->state != CS_HELLO)
            return;
        if (res == 0) {
            ld_peer_closed(w, r, slot, 0, true, now);
        } else if (res == -ENOBUFS) {
            CADD(w, enobufs, 1);
            ld_rearm_enqueue(r, slot);
        } else if (res < 0 && res != -ECANCELED) {
            ld_peer_closed(w, r, slot, 0, false, now);
        } else {
            /* the multishot ended with data (e.g. CQ pressure): keep reading */
            ld_rearm_enqueue(r, slot);
        }
        return;
    case OP_CLOSE:
        if (c->state == CS_CLOSING)
            ld_finish_close(w, r, slot, now);
        return;
    }
}

void ld_reap(struct lworker *w, struct lring *r)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    if (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
        CADD(w, cq_overflow, 1);
        io_uring_get_events(&r->ring);
    }
    /* One clock read per batch of 64: a completion's time within a few us, no clock storm. */
    uint64_t now = ld_now_us(w->L);
    io_uring_for_each_cqe(&r->ring, head, cqe)
    {
        handle_cqe(w, r, cqe, now);
        if (++n % 64 == 0)
            now = ld_now_us(w->L);
    }
    io_uring_cq_advance(&r->ring, n);
}
