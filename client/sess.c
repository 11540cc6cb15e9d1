/* sess.c — protocol v1 on the client's connection: HELLO/TUNE, heartbeats, liveness, reconnects. */
#include <errno.h>
#include <string.h>

#include "internal.h"

static uint32_t u32_sat(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* The timeout the client asks for: one lost heartbeat is tolerated, then the answer time. */
static uint32_t timeout_for(const struct rbc *c, uint32_t interval_ms)
{
    return u32_sat(2 * (uint64_t)interval_ms + c->cfg.answer_timeout_ms);
}

/* The interval heartbeats follow now: the server's (its last WELCOME) unless it cannot be told,
 * in which case the client keeps its own pace inside the server's timeout. */
static uint32_t hb_interval(const struct rbc *c)
{
    if (c->no_tune && c->cfg.mode == RBC_MODE_CLIENT)
        return rbc__smart_interval(&c->smart);
    return c->eff_interval_ms;
}

/* Client mode: the longest silence of ours the server's timeout allows, an answer time spare. */
static uint32_t tx_gap_max(const struct rbc *c)
{
    uint32_t t = c->eff_timeout_ms, a = c->cfg.answer_timeout_ms;
    return t > 2 * (uint64_t)a ? t - a : t / 2;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t next_ping_at(const struct rbc *c)
{
    uint64_t idle_from = max64(c->last_tx_ms, c->last_rx_ms);
    uint64_t at = idle_from + hb_interval(c), latest = c->last_tx_ms + tx_gap_max(c);
    return at < latest ? at : latest;
}

/* Server mode: when the server's next PING is overdue by the whole answer timeout. It PINGs
 * after an interval of our silence (plus up to interval/16 of spread); its first PING after a
 * WELCOME comes after one interval plus a phase of up to another (docs/protocol.md, 3). */
static uint64_t server_ping_dead_at(const struct rbc *c)
{
    uint64_t iv = c->eff_interval_ms;
    return c->last_tx_ms + iv * (c->first_ping ? 2 : 1) + iv / 16 + c->cfg.answer_timeout_ms;
}

static void set_live(struct rbc *c, enum rbc_liveness to)
{
    if (c->live == to)
        return;
    struct rbc_event ev = {.type = RBC_EV_LIVENESS};
    ev.u.liveness.from = c->live;
    ev.u.liveness.to = to;
    c->live = to;
    rbc__emit(c, &ev);
}

/* Queues one control frame (room for it is always kept free of DATA). */
static int put_frame(struct rbc *c, const uint8_t *frame, size_t len, uint64_t now)
{
    uint8_t *out = rbc__out_reserve(c, len);
    if (!out)
        return -ENOBUFS;
    memcpy(out, frame, len);
    rbc__out_commit(c, len);
    c->last_tx_ms = now;
    return rbc__net_flush(c);
}

static void send_or_close(struct rbc *c, const uint8_t *frame, size_t len, uint64_t now)
{
    int r = put_frame(c, frame, len, now);
    if (r < 0)
        rbc__sess_close(c, RBC_CLOSED_ERROR, 0, r, 0);
}

void rbc__sess_begin(struct rbc *c)
{
    c->gen++; /* a new course: callbacks of the last one see it */
    c->st.attempts++;
    c->state = RBC__CONNECTING;
    c->deadline_ms = rbc_clock_ms() + c->cfg.connect_timeout_ms;
    rbc__smart_connected(&c->smart);
    struct rbc_event ev = {.type = RBC_EV_CONNECTING};
    ev.u.connecting.attempt = c->backoff.attempt ? c->backoff.attempt : 1;
    uint32_t gen = c->gen;
    rbc__emit(c, &ev);
    if (c->gen != gen || c->state != RBC__CONNECTING || !c->started)
        return; /* the callback changed course */
    rbc__report(c);
    enum rbc_close_reason reason = RBC_CLOSED_CONNECT;
    int r = rbc__net_connect(c, &reason);
    if (r < 0)
        rbc__sess_close(c, reason, 0, r, 0);
}

void rbc__sess_connected(struct rbc *c)
{
    uint64_t now = rbc_clock_ms();
    c->state = RBC__HANDSHAKE;
    c->deadline_ms = now + c->cfg.connect_timeout_ms;
    uint32_t interval = rbc__smart_interval(&c->smart), timeout = timeout_for(c, interval);
    if (c->no_tune) {
        /* This server cannot follow a TUNE: ask for what it last granted. */
        interval = c->kept_interval_ms;
        timeout = c->kept_timeout_ms;
    }
    struct rb__hello h = {.version = RB_PROTO_VERSION,
                          .mode = c->cfg.mode == RBC_MODE_SERVER ? RB_MODE_SERVER : RB_MODE_CLIENT,
                          .interval_ms = interval,
                          .timeout_ms = timeout,
                          .client_id = (const uint8_t *)c->client_id,
                          .client_id_len = c->client_id_len};
    uint8_t frame[RB_FRAME_HEADER_LEN + RB__HELLO_MAX];
    c->asked_interval_ms = interval;
    send_or_close(c, frame, rb__put_hello(frame, &h), now);
}

/* What the server's WELCOME says about its limits, for the smart heartbeat's range. */
static void learn_bounds(struct rbc *c, uint32_t asked_ms)
{
    uint32_t e = c->eff_interval_ms;
    if (e > asked_ms && e > c->srv_floor_ms)
        c->srv_floor_ms = e; /* its minimum is above ours */
    if (e < asked_ms && e < c->srv_cap_ms)
        c->srv_cap_ms = e; /* its maximum is below what we asked */
    if (c->cfg.mode == RBC_MODE_CLIENT) {
        /* Our silences must fit its timeout: it is shorter than our interval needs, or it
         * cannot be told another (no TUNE) and our own pace must stay inside it. */
        uint32_t gap = tx_gap_max(c);
        if ((c->no_tune || gap < asked_ms) && gap < c->srv_cap_ms)
            c->srv_cap_ms = gap;
    } else if (c->no_tune) {
        c->srv_floor_ms = c->srv_cap_ms = e; /* it PINGs at its pace, which we cannot change */
    }
    if (rbc__smart_bound(&c->smart, c->srv_floor_ms, c->srv_cap_ms))
        rbc__store(c);
}

static int on_welcome(struct rbc *c, const uint8_t *p, size_t len, uint64_t now)
{
    struct rb__welcome w;
    uint8_t mode = c->cfg.mode == RBC_MODE_SERVER ? RB_MODE_SERVER : RB_MODE_CLIENT;
    if (rb__welcome_parse(p, len, &w) < 0 || w.interval_ms == 0 || w.timeout_ms <= w.interval_ms ||
        w.mode != mode)
        return -EPROTO; /* values no server may grant, or a scheme other than the one asked */
    bool open = c->state == RBC__HANDSHAKE;
    if (!open && !(c->state == RBC__OPEN && c->tune_pending))
        return -EPROTO; /* a WELCOME answers a HELLO or a TUNE, nothing else */
    c->eff_interval_ms = w.interval_ms;
    c->eff_timeout_ms = w.timeout_ms;
    c->tune_pending = false;
    c->first_ping = true;
    struct rbc_event ev = {.type = open ? RBC_EV_CONNECTED : RBC_EV_TUNED};
    if (open) {
        c->state = RBC__OPEN;
        c->conn_id = w.conn_id;
        c->live = RBC_ALIVE;
        c->ping_out = false;
        c->st.opened++;
        rbc__backoff_reset(&c->backoff);
    }
    (void)now;
    learn_bounds(c, c->asked_interval_ms);
    ev.u.connected.conn_id = w.conn_id;
    ev.u.connected.interval_ms = w.interval_ms;
    ev.u.connected.timeout_ms = w.timeout_ms;
    uint32_t gen = c->gen;
    rbc__emit(c, &ev);
    if (c->gen != gen)
        return 0;
    rbc__report(c);
    rbc__sess_tune(c);
    return 0;
}

/* One heartbeat's outcome: counted towards the learned interval, stored, reported. */
static void heartbeat_result(struct rbc *c, bool ok, uint32_t used_ms, uint32_t rtt_ms)
{
    if (ok) {
        c->st.heartbeats_ok++;
    } else {
        c->st.heartbeats_failed++;
        c->failures_total++;
    }
    int r = rbc__smart_result(&c->smart, ok, used_ms);
    if (r > 0)
        rbc__store(c);
    struct rbc_event ev = {.type = RBC_EV_HEARTBEAT};
    ev.u.heartbeat.ok = ok;
    ev.u.heartbeat.counted = r >= 0;
    ev.u.heartbeat.interval_ms = used_ms;
    ev.u.heartbeat.rtt_ms = rtt_ms;
    uint32_t gen = c->gen;
    rbc__emit(c, &ev);
    if (c->gen != gen)
        return;
    rbc__report(c);
}

/* The idle interval a heartbeat followed: the interval itself when it was a full one, or
 * short of one by no more than slack_ms. */
static uint32_t idle_used(uint64_t now, uint64_t idle_from, uint32_t interval_ms, uint32_t slack_ms)
{
    uint64_t idle = now > idle_from ? now - idle_from : 0;
    return idle + slack_ms >= interval_ms ? interval_ms : (uint32_t)idle;
}

/* A server-mode PING is due one interval after the previous PING (docs/protocol.md 3), so the
 * silence after our answer to that one falls short of the interval by our answer's delay and
 * the server's timer tick (1 ms was seen under ASan). Such a PING still followed the interval
 * for the smart heartbeat; 1/64 of it is more than that jitter and far below its learning
 * steps, while a PING the server moved earlier to lead us back to our phase (at 3/4) is not. */
static uint32_t server_ping_slack_ms(uint32_t interval_ms)
{
    return interval_ms / 64;
}

static int on_ping(struct rbc *c, const uint8_t *p, uint64_t now, uint64_t prev_rx)
{
    uint8_t frame[RB_FRAME_HEADER_LEN + RB__PING_LEN];
    uint64_t idle_from = max64(c->last_tx_ms, prev_rx);
    c->st.pings_received++;
    c->st.pongs_sent++;
    uint32_t gen = c->gen;
    send_or_close(c, frame, rb__put_ping(frame, RB_FRAME_PONG, rb__get_u64(p)), now);
    if (c->gen != gen || c->state != RBC__OPEN || c->cfg.mode != RBC_MODE_SERVER)
        return 0;
    c->first_ping = false;
    c->heartbeats++;
    heartbeat_result(
        c, true,
        idle_used(now, idle_from, c->eff_interval_ms, server_ping_slack_ms(c->eff_interval_ms)), 0);
    if (c->gen == gen)
        rbc__sess_tune(c);
    return 0;
}

static void on_pong(struct rbc *c, const uint8_t *p, uint64_t now)
{
    c->st.pongs_received++;
    if (!c->ping_out || rb__get_u64(p) != c->ping_token)
        return; /* unsolicited: a sign of life, nothing more */
    c->ping_out = false;
    uint32_t gen = c->gen;
    heartbeat_result(c, true, c->ping_used_ms, u32_sat(now - c->ping_sent_ms));
    if (c->gen == gen)
        rbc__sess_tune(c);
}

static int on_close(struct rbc *c, const uint8_t *p, size_t len)
{
    uint16_t code;
    const uint8_t *reason;
    size_t reason_len;
    if (rb__close_parse(p, len, &code, &reason, &reason_len) < 0)
        return -EPROTO;
    if (code == RB_CLOSE_PROTOCOL && c->tune_pending) {
        /* A server from before TUNE (docs/protocol.md, 4): keep what it granted, say no more. */
        c->no_tune = true;
        c->kept_interval_ms = c->eff_interval_ms;
        c->kept_timeout_ms = c->eff_timeout_ms;
        c->st.tunes_refused++;
        rbc__sess_close(c, RBC_CLOSED_TUNE_REFUSED, code, 0, 0);
        return 0;
    }
    rbc__sess_close(c, RBC_CLOSED_PEER, code, 0, 0);
    return 0;
}

static int dispatch(struct rbc *c, const struct rb__frame_hdr *h, const uint8_t *p, uint64_t now)
{
    uint64_t prev_rx = c->last_rx_ms;
    c->last_rx_ms = now;
    if (c->state == RBC__OPEN && c->live == RBC_SUSPECT) {
        uint32_t gen = c->gen;
        set_live(c, RBC_ALIVE); /* anything complete from the server is a sign of life */
        if (c->gen != gen)
            return 0;
    }
    switch (h->type) {
    case RB_FRAME_WELCOME:
        return on_welcome(c, p, h->len, now);
    case RB_FRAME_PING:
        return on_ping(c, p, now, prev_rx);
    case RB_FRAME_PONG:
        on_pong(c, p, now);
        return 0;
    case RB_FRAME_DATA: {
        c->st.data_received++;
        struct rbc_event ev = {.type = RBC_EV_DATA};
        ev.u.data.data = p;
        ev.u.data.len = h->len;
        rbc__emit(c, &ev);
        return 0;
    }
    case RB_FRAME_CLOSE:
        return on_close(c, p, h->len);
    default: /* HELLO or TUNE: only clients send those */
        return -EPROTO;
    }
}

static struct rb__v1_split **rx_slot(void *ctx, bool create)
{
    (void)create; /* the slot is a field of the handle: it always exists */
    return &((struct rbc *)ctx)->rx_split;
}

static int rx_frame(void *ctx, const struct rb__frame_hdr *h, const uint8_t *payload)
{
    struct rbc *c = ctx;
    uint32_t gen = c->gen;
    int r = dispatch(c, h, payload, rbc_clock_ms());
    if (r < 0)
        return r;
    return c->gen == gen ? 0 : 1; /* the connection ended (or was replaced) inside: stop */
}

int rbc__sess_input(struct rbc *c, const uint8_t *p, size_t n)
{
    const struct rb__v1_rx rx = {.inl_len = &c->rx_inl_len,
                                 .inl = c->rx_inl,
                                 .inl_cap = RBC__INL,
                                 .max_frame = c->cfg.max_frame,
                                 .slot = rx_slot,
                                 .frame = rx_frame,
                                 .ctx = c};
    uint32_t gen = c->gen;
    int r = rb__v1_feed(&rx, p, n);
    if (c->gen != gen)
        return -1;
    if (r == -EPROTO || r == -EMSGSIZE) {
        uint16_t code = r == -EPROTO ? RB_CLOSE_PROTOCOL : RB_CLOSE_TOO_BIG;
        rbc__sess_close(c, RBC_CLOSED_PROTOCOL, 0, r, code);
        return -1;
    }
    if (r < 0) {
        rbc__sess_close(c, RBC_CLOSED_ERROR, 0, r, 0);
        return -1;
    }
    return 0;
}

void rbc__sess_tune(struct rbc *c)
{
    if (c->state != RBC__OPEN || c->no_tune || c->tune_pending || c->ping_out)
        return;
    uint32_t want = rbc__smart_interval(&c->smart);
    if (want == c->asked_interval_ms)
        return;
    uint8_t frame[RB_FRAME_HEADER_LEN + RB__TUNE_LEN];
    uint64_t now = rbc_clock_ms();
    c->asked_interval_ms = want;
    c->tune_pending = true;
    c->first_ping = true; /* the server restarts its PING schedule from the TUNE */
    c->st.tunes_sent++;
    send_or_close(c, frame, rb__put_tune(frame, want, timeout_for(c, want)), now);
}

int rbc__sess_send_data(struct rbc *c, const void *data, size_t len)
{
    if (c->state != RBC__OPEN)
        return -ENOTCONN;
    if (len > c->cfg.max_frame)
        return -EMSGSIZE;
    size_t need = RB_FRAME_HEADER_LEN + len;
    if ((size_t)c->out_len + need + RBC__CTRL_RESERVE > c->out_cap)
        return -ENOBUFS;
    uint8_t *out = rbc__out_reserve(c, need);
    if (!out)
        return -ENOBUFS;
    rbc__out_commit(c, rb__put_data(out, data, (uint16_t)len));
    c->st.data_sent++;
    c->last_tx_ms = rbc_clock_ms();
    int r = rbc__net_flush(c);
    if (r < 0)
        rbc__sess_close(c, RBC_CLOSED_ERROR, 0, r, 0);
    return 0;
}

static void send_ping(struct rbc *c, uint64_t now)
{
    uint8_t frame[RB_FRAME_HEADER_LEN + RB__PING_LEN];
    c->ping_used_ms = idle_used(now, max64(c->last_tx_ms, c->last_rx_ms), hb_interval(c), 0);
    c->ping_token = ++c->token_seq;
    c->ping_sent_ms = now;
    c->ping_out = true;
    c->st.pings_sent++;
    c->heartbeats++;
    send_or_close(c, frame, rb__put_ping(frame, RB_FRAME_PING, c->ping_token), now);
}

uint64_t rbc__sess_deadline(const struct rbc *c)
{
    uint32_t half = c->cfg.answer_timeout_ms / 2;
    switch (c->state) {
    case RBC__BACKOFF:
    case RBC__CONNECTING:
    case RBC__HANDSHAKE:
        return c->deadline_ms;
    case RBC__OPEN:
        if (c->cfg.mode == RBC_MODE_SERVER) {
            uint64_t dead = server_ping_dead_at(c);
            return c->live == RBC_ALIVE ? dead - half : dead;
        }
        if (!c->ping_out)
            return next_ping_at(c);
        return c->ping_sent_ms + (c->live == RBC_ALIVE ? half : c->cfg.answer_timeout_ms);
    default:
        return 0;
    }
}

/* The heartbeat went unanswered: the client's view of the server is DEAD. */
static void dead(struct rbc *c)
{
    uint32_t gen = c->gen;
    set_live(c, RBC_DEAD);
    if (c->gen == gen)
        rbc__sess_close(c, RBC_CLOSED_DEAD, 0, -ETIMEDOUT, 0);
}

static void open_timers(struct rbc *c, uint64_t now)
{
    uint32_t half = c->cfg.answer_timeout_ms / 2;
    if (c->cfg.mode == RBC_MODE_SERVER) {
        uint64_t dead_at = server_ping_dead_at(c);
        if (now >= dead_at)
            dead(c);
        else if (now + half >= dead_at)
            set_live(c, RBC_SUSPECT);
        return;
    }
    if (!c->ping_out) {
        if (now >= next_ping_at(c))
            send_ping(c, now);
        return;
    }
    if (now >= c->ping_sent_ms + c->cfg.answer_timeout_ms)
        dead(c);
    else if (now >= c->ping_sent_ms + half)
        set_live(c, RBC_SUSPECT);
}

void rbc__sess_timers(struct rbc *c, uint64_t now)
{
    /* A few rounds: one deadline's action may make the next one due at once. */
    for (int round = 0; round < 4; round++) {
        uint64_t due = rbc__sess_deadline(c);
        if (!due || due > now)
            return;
        switch (c->state) {
        case RBC__BACKOFF:
            rbc__sess_begin(c);
            return; /* a new attempt: its deadlines lie ahead */
        case RBC__CONNECTING:
            rbc__sess_close(c, RBC_CLOSED_CONNECT, 0, -ETIMEDOUT, 0);
            break;
        case RBC__HANDSHAKE:
            rbc__sess_close(c, RBC_CLOSED_HANDSHAKE, 0, -ETIMEDOUT, 0);
            break;
        case RBC__OPEN:
            open_timers(c, now);
            break;
        default:
            return;
        }
    }
}

void rbc__sess_close(struct rbc *c, enum rbc_close_reason reason, int peer_code, int error,
                     uint16_t wire_code)
{
    if (c->state == RBC__IDLE || c->state == RBC__BACKOFF)
        return;
    uint64_t now = rbc_clock_ms();
    bool was_open = c->state == RBC__OPEN;
    /* A heartbeat failure: no answer in time, or the connection found dead while waiting for
     * one (client mode: a PING out; server mode: the server's PING overdue). */
    bool hb_failed = false;
    uint32_t used = 0;
    if (was_open && c->cfg.mode == RBC_MODE_CLIENT && c->ping_out &&
        (reason == RBC_CLOSED_DEAD || reason == RBC_CLOSED_EOF || reason == RBC_CLOSED_ERROR)) {
        hb_failed = true;
        used = c->ping_used_ms;
    } else if (was_open && c->cfg.mode == RBC_MODE_SERVER && reason == RBC_CLOSED_DEAD) {
        hb_failed = true;
        used = c->last_rx_ms > c->last_tx_ms ? 0 : c->eff_interval_ms;
    }
    if (wire_code && c->fd >= 0 && c->state >= RBC__HANDSHAKE) {
        uint8_t frame[RB__CONTROL_MAX];
        (void)put_frame(c, frame, rb__put_close(frame, wire_code, NULL), now); /* best effort */
    }
    rbc__net_close(c);
    c->ping_out = false;
    c->tune_pending = false;
    c->live = RBC_ALIVE;
    c->state = c->started ? RBC__BACKOFF : RBC__IDLE;
    int32_t retry = -1;
    if (c->started) {
        bool at_once = reason == RBC_CLOSED_TUNE_REFUSED || reason == RBC_CLOSED_NETWORK;
        retry = at_once ? 0 : (int32_t)rbc__backoff_next(&c->backoff);
        c->deadline_ms = now + (uint32_t)retry;
    }
    uint32_t gen = c->gen;
    if (hb_failed)
        heartbeat_result(c, false, used, 0); /* counted: this connection was past its warm-up */
    if (c->gen == gen) {                     /* else the callback already began another attempt */
        rbc__smart_connected(&c->smart);     /* the next connection warms up again */
        rbc__store(c);                       /* progress at a stable value (stable_ms) */
    }
    struct rbc_event ev = {.type = RBC_EV_CLOSED};
    ev.u.closed.reason = reason;
    ev.u.closed.peer_code = peer_code;
    ev.u.closed.error = error;
    ev.u.closed.retry_in_ms = retry;
    rbc__emit(c, &ev);
    if (c->gen == gen)
        rbc__report(c);
}
