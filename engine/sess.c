/* sess.c — the session layer: what every protocol shares once its codec has parsed a frame. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

int rb__sess_clamp(const struct rb_config *cfg, const struct rb__open_params *op,
                   struct rb__welcome_info *out)
{
    uint32_t interval = cfg->interval_ms, timeout = cfg->timeout_ms;
    if (op->interval_ms) {
        interval = op->interval_ms;
        if (interval < cfg->min_interval_ms)
            interval = cfg->min_interval_ms;
        if (interval > cfg->max_interval_ms)
            interval = cfg->max_interval_ms;
        timeout = interval > UINT32_MAX / 3 ? UINT32_MAX : interval * 3;
    }
    if (op->timeout_ms)
        timeout = op->timeout_ms;
    if (timeout > cfg->max_timeout_ms)
        timeout = cfg->max_timeout_ms;
    if (timeout <= interval)
        return -EPROTO; /* a request we cannot honour */
    out->mode = op->has_mode ? op->mode : cfg->mode;
    out->interval_ms = interval;
    out->timeout_ms = timeout;
    return 0;
}

static int send_welcome(struct rb__worker *w, struct rb__conn *c, const struct rb__welcome_info *wi)
{
    const struct rb__codec *codec = rb__conn_codec(w, c);
    uint64_t id = rb__conn_id(w, c);
    uint8_t *out = rb__out_begin(w, c, codec->welcome_max);
    if (!out) /* (over TLS, sealing the record before it may have released c) */
        return rb__conn_lookup(w, id) ? 0 : -1;
    RB__INC(w, proto[rb__conn_protocol(w, c)].welcomes_out);
    rb__out_end(w, c, out, codec->put_welcome(out, c, wi));
    return rb__conn_lookup(w, id) ? 0 : -1;
}

/* One socket option by IORING_OP_URING_CMD (direct descriptors cannot take setsockopt(2)); the
 * value at val (in the turn's arena, valid until the SQE has run: the arena is reused two turns
 * later; byte-granular, so it is copied in, no aligned store). false: no SQE. */
static bool sockopt(struct rb__worker *w, struct rb__conn *c, int level, int name, uint32_t value,
                    uint8_t *val, uint64_t ud, bool link)
{
    struct io_uring_sqe *sqe = rb__ring_sqe(w, rb__conn_ring(w, c));
    if (!sqe)
        return false;
    memcpy(val, &value, sizeof(value));
    rb__prep_setsockopt_direct(sqe, c->slot, level, name, val, sizeof(value));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS | (link ? IOSQE_IO_LINK : 0);
    io_uring_sqe_set_data64(sqe, ud);
    return true;
}

/*
 * Kernel mode: the peer's kernel answers TCP keepalive probes, so a heartbeat wakes neither
 * application. The first probe follows `interval` of silence (TCP_KEEPIDLE), later looks come
 * every TCP_KEEPINTVL, and TCP_USER_TIMEOUT makes the kernel give up at the timeout (it then
 * overrides TCP_KEEPCNT; the count is set to the same effect anyway); the timing and why it is
 * split so are in rb__live_keepalive_plan(). The kernel decides at a look, so the verdict comes
 * in [timeout, timeout + 1 s) plus its timer's rounding. The options are linked in order
 * (SO_KEEPALIVE last, so its timer starts with the idle time already set); a refusal completes
 * with RB__OP_KEEPALIVE and the connection falls back to server mode (loop.c).
 */
static void keepalive(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__keepalive_plan plan;
    rb__live_keepalive_plan(c->interval_ms, c->timeout_ms, &plan);
    uint64_t ud = rb__ud(RB__OP_KEEPALIVE, rb__conn_id(w, c));
    /* Values and SQEs first, all of them: a chain cut short would link whatever SQE came next. */
    uint8_t *v = rb__out_alloc(w, 5 * sizeof(uint32_t));
    if (!v || !rb__ring_reserve(w, rb__conn_ring(w, c), 5)) {
        rb__kernel_mode_failed(w, c, -ENOMEM);
        return;
    }
    sockopt(w, c, IPPROTO_TCP, TCP_KEEPIDLE, plan.idle_s, v, ud, true);
    sockopt(w, c, IPPROTO_TCP, TCP_KEEPINTVL, plan.intvl_s, v + 4, ud, true);
    sockopt(w, c, IPPROTO_TCP, TCP_KEEPCNT, plan.cnt, v + 8, ud, true);
    sockopt(w, c, IPPROTO_TCP, TCP_USER_TIMEOUT, c->timeout_ms, v + 12, ud, true);
    sockopt(w, c, SOL_SOCKET, SO_KEEPALIVE, 1, v + 16, ud, false);
}

void rb__kernel_mode_failed(struct rb__worker *w, struct rb__conn *c, int err)
{
    if (rb__conn_mode(c) != RB_MODE_KERNEL)
        return; /* the rest of a failed chain (-ECANCELED) */
    RB__INC(w, keepalive_failed);
    rb_log(RB_LOG_WARN, "keepalive_refused", "worker=%u conn=%llu error=%s fallback=server",
           w->index, (unsigned long long)rb__conn_id(w, c), strerror(err < 0 ? -err : EIO));
    rb__conn_set_mode(c, RB_MODE_SERVER);
    rb__live_start(w, c);
}

/* Applies new liveness parameters; the socket's TCP_USER_TIMEOUT follows the timeout (and in
 * kernel mode its keepalive, set at the opening and whenever a TUNE changes the timing). */
static void apply(struct rb__worker *w, struct rb__conn *c, const struct rb__welcome_info *wi,
                  bool opening)
{
    bool changed = wi->timeout_ms != c->timeout_ms;
    bool retimed = changed || wi->interval_ms != c->interval_ms;
    bool restart = retimed || wi->mode != rb__conn_mode(c);
    c->interval_ms = wi->interval_ms;
    c->timeout_ms = wi->timeout_ms;
    rb__conn_set_mode(c, wi->mode);
    rb__live_set_mark(w, c, RB_ALIVE, rb__live_weight_max(c));
    if (wi->mode == RB_MODE_KERNEL && (opening || retimed)) {
        keepalive(w, c);
        restart = true;
    } else if (changed) {
        /* The listener's TCP_USER_TIMEOUT was inherited; this connection asked for another. */
        uint8_t *v = rb__out_alloc(w, sizeof(uint32_t));
        if (v)
            sockopt(w, c, IPPROTO_TCP, TCP_USER_TIMEOUT, wi->timeout_ms, v, rb__ud(RB__OP_NONE, 0),
                    false);
    }
    if (restart)
        rb__live_start(w, c);
}

int rb__sess_authorize(struct rb__worker *w, const struct rb__conn *c,
                       const struct rb__open_params *op)
{
    const struct rb_auth *a = atomic_load_explicit(&w->e->auth, memory_order_acquire);
    if (!a || c->proxy_local)
        return 0;
    enum rb_auth_result r =
        rb_auth_verify(a, op->client_id, op->client_id_len, (const char *)op->token, op->token_len,
                       (uint64_t)time(NULL));
    if (r == RB_AUTH_OK)
        return 0;
    RB__INC(w, auth_refused[r]);
    rb_log(RB_LOG_DEBUG, "unauthorized", "worker=%u conn=%llu why=%s client_len=%zu", w->index,
           (unsigned long long)rb__conn_id(w, c), rb_auth_result_name(r), op->client_id_len);
    return -EACCES;
}

int rb__sess_open(struct rb__worker *w, struct rb__conn *c, const struct rb__open_params *op,
                  bool welcome)
{
    struct rb__welcome_info wi;
    if (!op->authorized && rb__sess_authorize(w, c, op) < 0)
        return -EACCES;
    if (rb__sess_clamp(&w->e->cfg, op, &wi) < 0)
        return -EPROTO;
    uint64_t id = wi.conn_id = rb__conn_id(w, c);
    wi.arg = op->welcome_arg;
    apply(w, c, &wi, true);
    if (welcome && send_welcome(w, c, &wi) < 0)
        return -1;
    c->flags |= RB__CF_OPEN;
    RB__INC(w, proto[rb__conn_protocol(w, c)].opened);
    const struct rb_callbacks *cb = &w->e->cfg.cb;
    if (!cb->on_open)
        return 0;
    struct rb_conn_info info = {.id = id,
                                .worker = w->index,
                                .listener = c->listener,
                                .protocol = rb__conn_protocol(w, c),
                                .mode = wi.mode,
                                .interval_ms = wi.interval_ms,
                                .timeout_ms = wi.timeout_ms,
                                .client_id = (const char *)op->client_id,
                                .client_id_len = op->client_id_len,
                                .proxy_local = c->proxy_local};
    info.peer.ss_family = AF_UNSPEC;
    if (c->ext && c->ext->peer) {
        info.peer = *c->ext->peer;
        free(c->ext->peer);
        c->ext->peer = NULL;
        rb__conn_ext_trim(c);
    }
    cb->on_open(w->e, &info, w->e->cfg.user);
    return rb__conn_lookup(w, id) ? 0 : -1;
}

int rb__sess_tune(struct rb__worker *w, struct rb__conn *c, const struct rb__open_params *op)
{
    struct rb__welcome_info wi;
    if (rb__sess_clamp(&w->e->cfg, op, &wi) < 0)
        return -EPROTO;
    wi.mode = rb__conn_mode(c); /* a TUNE changes the timing, never the scheme */
    wi.conn_id = rb__conn_id(w, c);
    apply(w, c, &wi, false);
    return send_welcome(w, c, &wi);
}

static int send_control(struct rb__worker *w, struct rb__conn *c, bool pong, const uint8_t *payload,
                        uint32_t len)
{
    const struct rb__codec *codec = rb__conn_codec(w, c);
    uint64_t id = rb__conn_id(w, c);
    uint8_t *out = rb__out_begin(w, c, codec->control_max);
    if (!out)
        return rb__conn_lookup(w, id) ? 0 : -1;
    enum rb_protocol p = rb__conn_protocol(w, c);
    if (pong)
        RB__INC(w, proto[p].pongs_out);
    else
        RB__INC(w, proto[p].pings_out);
    rb__out_end(w, c, out, codec->put_ping(out, pong, payload, len));
    return rb__conn_lookup(w, id) ? 0 : -1;
}

int rb__sess_ping(struct rb__worker *w, struct rb__conn *c, const uint8_t *payload, uint32_t len)
{
    RB__INC(w, proto[rb__conn_protocol(w, c)].pings_in);
    if (rb__conn_mode(c) == RB_MODE_SILENT)
        return 0;
    return send_control(w, c, true, payload, len);
}

int rb__sess_send_ping(struct rb__worker *w, struct rb__conn *c)
{
    uint8_t token[RB__PING_LEN];
    uint64_t t = rb__live_token(w, rb__conn_id(w, c), rb__worker_now_us(w));
    for (int i = 0; i < RB__PING_LEN; i++)
        token[i] = (uint8_t)(t >> (56 - 8 * i));
    return send_control(w, c, false, token, sizeof(token));
}

int rb__sess_pong(struct rb__worker *w, struct rb__conn *c, const uint8_t *payload, uint32_t len)
{
    uint64_t rtt_us;
    RB__INC(w, proto[rb__conn_protocol(w, c)].pongs_in);
    if (len != RB__PING_LEN ||
        rb__live_pong(w, c, rb__get_u64(payload), rb__worker_now_us(w), &rtt_us) < 0) {
        RB__INC(w, pong_unmatched); /* an unsolicited pong is still a sign of life */
        return 0;
    }
    rb__hist_add(&w->stats.rtt_us, rb_rtt_bounds_us, rtt_us);
    return 0;
}

int rb__sess_send(struct rb__worker *w, struct rb__conn *c, enum rb_data_kind kind,
                  const void *data, size_t len)
{
    if (len > w->e->cfg.max_frame)
        return -EMSGSIZE;
    const struct rb__codec *codec = rb__conn_codec(w, c);
    uint8_t *out = rb__out_begin(w, c, codec->data_overhead + (uint32_t)len);
    if (!out)
        return -ENOMEM;
    RB__INC(w, proto[rb__conn_protocol(w, c)].data_out);
    rb__out_end(w, c, out, codec->put_data(out, kind, data, (uint32_t)len));
    return 0;
}

int rb__sess_data(struct rb__worker *w, struct rb__conn *c, enum rb_data_kind kind,
                  const uint8_t *p, size_t len)
{
    uint64_t id = rb__conn_id(w, c);
    RB__INC(w, proto[rb__conn_protocol(w, c)].data_in);
    const struct rb_config *cfg = &w->e->cfg;
    if (cfg->cb.on_data)
        cfg->cb.on_data(w->e, id, kind, p, len, cfg->user);
    else if (cfg->echo_data)
        rb__sess_send(w, c, kind, p, len);
    else
        return 0;
    return rb__conn_lookup(w, id) ? 0 : -1;
}

int rb__sess_fail(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code)
{
    rb__conn_release(w, c, reason, peer_code);
    return -1;
}
