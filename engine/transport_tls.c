/* transport_tls.c — TLS transport, input side: handshakes within a per-turn budget, records in. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport_tls.h"

/*
 * Between the socket and the codec of a tls:// listener (nginx's swapped recv/send, here the
 * receive path and the output arena). Per connection, in the one allocation its ext already is:
 *
 *   struct rb__conn_ext (24 B) | part (8) | state (8) | union { rb_tls_conn (216) | hs pointer }
 *
 * 256 bytes from the worker's TLS slab (its own jemalloc arena, so the handshakes' garbage never
 * shares its pages). The handshake object (OpenSSL's SSL, ~15 KB) exists only during the
 * handshake (kept for TLS 1.2); `part` only while a record is split across receives (or, during
 * the handshake, while received bytes wait for the turn's handshake step).
 *
 * Input: during the handshake, received bytes are only queued (a copy) and the connection is put
 * on the worker's handshake queue. The loop's handshake step (rb__tls_handshakes, after the
 * turn's completions, mailbox and timers) first submits what the turn produced, so the replies
 * to established connections are on the wire before any handshake work, then runs at most
 * tls_handshake_budget ClientHellos (the expensive record: ECDHE and a signature; every later
 * handshake record, a change_cipher_spec or the client's Finished, counts a quarter) and leaves
 * the rest for the next turn, which then does not sleep. A reconnect storm of full handshakes
 * therefore delays a heartbeat by at most one budget's worth of handshakes.
 * Established: records are collected by tls_feed.c, opened in place in the receive buffer, and
 * their plaintext goes to the codec; replies the record layer makes (KeyUpdate, close_notify,
 * alerts) are sent first, as rb_tls_open requires.
 *
 * Output: transport_tls_out.c.
 */

static enum rb_tls_alert_kind alert_kind(int alert)
{
    switch (alert) {
    case RB_TLS_ALERT_CLOSE_NOTIFY:
        return RB_TLS_ALERT_KIND_CLOSE_NOTIFY;
    case RB_TLS_ALERT_UNEXPECTED_MESSAGE:
        return RB_TLS_ALERT_KIND_UNEXPECTED_MESSAGE;
    case RB_TLS_ALERT_BAD_RECORD_MAC:
        return RB_TLS_ALERT_KIND_BAD_RECORD_MAC;
    case RB_TLS_ALERT_RECORD_OVERFLOW:
        return RB_TLS_ALERT_KIND_RECORD_OVERFLOW;
    case RB_TLS_ALERT_HANDSHAKE_FAILURE:
        return RB_TLS_ALERT_KIND_HANDSHAKE_FAILURE;
    case RB_TLS_ALERT_DECODE_ERROR:
        return RB_TLS_ALERT_KIND_DECODE_ERROR;
    case 47:
        return RB_TLS_ALERT_KIND_ILLEGAL_PARAMETER;
    case RB_TLS_ALERT_PROTOCOL_VERSION:
        return RB_TLS_ALERT_KIND_PROTOCOL_VERSION;
    case RB_TLS_ALERT_INTERNAL_ERROR:
        return RB_TLS_ALERT_KIND_INTERNAL_ERROR;
    default:
        return RB_TLS_ALERT_KIND_OTHER;
    }
}

void rb__tls_count_alert(struct rb__worker *w, int alert)
{
    if (alert >= 0)
        RB__INC(w, tls.alerts_out[alert_kind(alert)]);
}

/* ---- setup ---- */

int rb__tls_engine_init(struct rb_engine *e)
{
    const struct rb_config *c = &e->cfg;
    if (!c->tls_cert_file || !c->tls_key_file)
        return -EINVAL;
    struct rb_tls_config tc = {.cert_file = c->tls_cert_file,
                               .key_file = c->tls_key_file,
                               .allow_tls12 = c->tls_allow_12,
                               .ciphers = c->tls_ciphers,
                               .ciphersuites = c->tls_ciphersuites,
                               .no_tickets = c->tls_no_tickets,
                               .ticket_rotate_s = c->tls_ticket_rotate_s};
    return rb_tls_ctx_new(&tc, &e->tls);
}

void rb__tls_engine_free(struct rb_engine *e)
{
    rb_tls_ctx_free(e->tls);
    e->tls = NULL;
}

int rb__tls_worker_init(struct rb__worker *w)
{
    if (!w->e->tls)
        return 0;
    int ret = rb_tls_scratch_new(&w->tls_scratch);
    if (ret < 0)
        return ret;
    if ((w->e->cfg.tls_allow_12 || w->e->cfg.tls_keep_ssl) && !(w->tls_plain = malloc(PLAIN_MAX)))
        return -ENOMEM;
    return rb__slab_init(&w->tls_slab, TLS_EXT_SIZE, 4096, 0);
}

void rb__tls_worker_free(struct rb__worker *w)
{
    if (w->tls_scratch) {
        rb_tls_scratch_free(w->tls_scratch);
        rb__slab_destroy(&w->tls_slab);
        w->tls_scratch = NULL;
    }
    free(w->tls_plain);
    free(w->tls_cont.v);
    free(w->tls_new.v);
    w->tls_plain = NULL;
    memset(&w->tls_cont, 0, sizeof(w->tls_cont));
    memset(&w->tls_new, 0, sizeof(w->tls_new));
}

/*
 * Once a second: ticket key rotation, and the handshakes' garbage. An SSL object is ~15 KB of
 * small allocations made and freed by this thread; after a burst of handshakes the arena keeps
 * their pages dirty until it allocates again, which an idle server does not do. For 30 s after
 * handshakes, the arena's decay runs here (measured at 10,000 handshakes: 6.6 KB per connection
 * stayed resident without it).
 */
void rb__tls_tick(struct rb__worker *w)
{
    if (!w->e->tls || w->now_ms64 < w->tls_rotate_check_ms)
        return;
    w->tls_rotate_check_ms = w->now_ms64 + 1000;
    rb_tls_ctx_maybe_rotate(w->e->tls, rb_clock_ns());
    const struct rb_tls_stats *k = &w->stats.tls;
    uint64_t ended = k->full + k->resumed + k->failed + k->timeouts + k->aborted;
    if (ended != w->tls_hs_seen) {
        w->tls_hs_seen = ended;
        w->tls_decay_until_ms = w->now_ms64 + 30000;
    }
    if (w->now_ms64 < w->tls_decay_until_ms)
        rb__mem_decay();
}

int rb__tls_start(struct rb__worker *w, struct rb__conn *c)
{
    struct rb__conn_ext *x = rb__slab_alloc(&w->tls_slab);
    if (!x)
        return -ENOMEM;
    memset(x, 0, TLS_EXT_SIZE);
    struct rb__tls_ext *t = (struct rb__tls_ext *)(void *)(x + 1);
    t->state = TX_HANDSHAKE; /* the SSL object comes with the first handshake step (budgeted:
                                a burst of accepts costs no SSL_new each) */
    c->ext = x;
    RB__INC(w, tls.handshaking);
    /* The handshake has its own deadline and no heartbeats: silent mode with interval =
     * timeout = --handshake-timeout, so liveness needs no notion of a handshake (as the
     * WebSocket upgrade does it). The handshake's end restores the defaults. */
    c->interval_ms = c->timeout_ms = w->e->cfg.handshake_timeout_ms;
    rb__conn_set_mode(c, RB_MODE_SILENT);
    rb__live_set_mark(w, c, RB_ALIVE, rb__live_weight_max(c));
    return 0;
}

void rb__tls_release(struct rb__worker *w, struct rb__conn *c, int reason)
{
    struct rb__conn_ext *x = c->ext;
    struct rb__tls_ext *t = tx_of(c);
    if (w->tls_batch == c)
        w->tls_batch = NULL;
    if (w->tls_open == c)
        w->tls_open = NULL; /* (sealed already by rb__tls_close_bytes, unless blocked) */
    switch (t->state & TX_STATE) {
    case TX_HANDSHAKE:
        rb_tls_hs_free(t->u.hs);
        RB__DEC(w, tls.handshaking);
        if (t->state & TX_FAILED)
            break;
        if (reason == RB_CLOSE_TIMEOUT)
            RB__INC(w, tls.timeouts);
        else
            RB__INC(w, tls.aborted);
        break;
    case TX_OPEN:
        rb_tls_conn_wipe(&t->u.conn);
        RB__DEC(w, tls.conns);
        break;
    case TX_SSL:
        rb_tls_hs_free(t->u.hs);
        RB__DEC(w, tls.conns);
        RB__DEC(w, tls.ssl_kept);
        break;
    }
    free(t->part);
    rb__slab_free(&w->tls_slab, x);
}

/* ---- bytes that are TLS already (handshake flights, sealed replies) ---- */

bool rb__tls_send_raw(struct rb__worker *w, struct rb__conn *c, const uint8_t *p, size_t n)
{
    uint8_t *b = rb__out_alloc(w, (uint32_t)n);
    if (!b) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return false;
    }
    memcpy(b, p, n);
    return rb__out_send(w, c, b, (uint32_t)n);
}

/* What OpenSSL queued on the connection's write BIO. false: c was released. */
bool rb__tls_send_ssl_out(struct rb__worker *w, struct rb__conn *c, struct rb_tls_hs *hs)
{
    size_t n = rb_tls_hs_out_pending(hs);
    if (!n)
        return true;
    uint8_t *b = rb__out_alloc(w, (uint32_t)n);
    if (!b) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return false;
    }
    size_t got = rb_tls_hs_take_out(hs, b, n);
    rb__out_resize_last(w, b + n, b + got);
    return got ? rb__out_send(w, c, b, (uint32_t)got) : true;
}

/* ---- plaintext to the codec ---- */

/* One record's plaintext: the codec's frames for c in the meantime share one record. */
static int plaintext(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n)
{
    uint64_t id = rb__conn_id(w, c);
    w->tls_batch = c;
    if (rb__conn_codec(w, c)->input(w, c, p, n) < 0)
        return -1; /* released: the release ended the batch */
    w->tls_batch = NULL;
    rb__tls_seal_pending(w);
    return rb__conn_lookup(w, id) ? 0 : -1;
}

/* ---- established, TLS 1.3: our record layer ---- */

struct rec_ctx {
    struct rb__worker *w;
    struct rb__conn *c;
    struct rb__tls_ext *t;
};

/* One whole record (in the receive buffer or the part): opened in place. 1: c was released. */
static int on_record(void *arg, uint8_t *rec, size_t len)
{
    struct rec_ctx *x = arg;
    struct rb__worker *w = x->w;
    struct rb__conn *c = x->c;
    struct rb_tls_conn *k = &x->t->u.conn;
    struct rb_tls_opened o;
    rb__tls_seal_pending(w); /* a reply is sealed at the current sequence: nothing may be before */
    int r = rb_tls_open(k, w->tls_scratch, rec, len, &o);
    if (o.reply_len) {
        if (r == RB_TLS_NOTHING)
            RB__INC(w, tls.key_updates_out);
        else
            rb__tls_count_alert(w, r == RB_TLS_CLOSED ? RB_TLS_ALERT_CLOSE_NOTIFY : o.alert);
        if (!rb__tls_send_raw(w, c, o.reply, o.reply_len))
            return 1;
    }
    switch (r) {
    case RB_TLS_DATA:
        return o.len && plaintext(w, c, o.data, o.len) < 0 ? 1 : 0;
    case RB_TLS_NOTHING:
        if (k->rd.seq == 0) /* read keys just moved on: a KeyUpdate ended in this record */
            RB__INC(w, tls.key_updates_in);
        return 0;
    case RB_TLS_CLOSED: /* the peer's close_notify; ours went out in the reply */
        rb__conn_release(w, c, RB_CLOSE_EOF, 0);
        return 1;
    case -ECONNRESET: /* the peer's fatal alert: nothing goes back */
        RB__INC(w, tls.alerts_in);
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return 1;
    default: /* bad MAC, bad record: our alert went out in the reply */
        rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
        return 1;
    }
}

static int records(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t, uint8_t *p,
                   size_t n)
{
    struct rec_ctx x = {.w = w, .c = c, .t = t};
    const struct rb_tls_rx rx = {.part = &t->part, .record = on_record, .ctx = &x};
    int r = rb_tls_feed(&rx, p, n);
    if (r == 0)
        return 0;
    if (r == 1)
        return -1;
    if (r == -EMSGSIZE || r == -EPROTO) { /* a header no record may have */
        uint8_t a[RB_TLS_REPLY_MAX];
        int al = r == -EMSGSIZE ? RB_TLS_ALERT_RECORD_OVERFLOW : RB_TLS_ALERT_UNEXPECTED_MESSAGE;
        int m = rb_tls_seal_alert(&t->u.conn, w->tls_scratch, a, al);
        if (m > 0) {
            rb__tls_count_alert(w, al);
            if (!rb__tls_send_raw(w, c, a, (size_t)m))
                return -1;
        }
        rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
        return -1;
    }
    rb__conn_release(w, c, RB_CLOSE_RESET, 0);
    return -1;
}

/* ---- established, SSL object kept (TLS 1.2, or tls_keep_ssl) ---- */

static int ssl_input(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t,
                     const uint8_t *p, size_t n)
{
    struct rb_tls_hs *hs = t->u.hs;
    uint64_t id = rb__conn_id(w, c);
    if (rb_tls12_feed(hs, p, n) < 0) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return -1;
    }
    int r;
    while ((r = rb_tls12_read(hs, w->tls_plain, PLAIN_MAX)) > 0) {
        if (!rb__tls_send_ssl_out(w, c, hs) || plaintext(w, c, w->tls_plain, (size_t)r) < 0)
            return -1;
    }
    if (!rb__tls_send_ssl_out(w, c, hs)) /* a KeyUpdate answer, our close_notify or our alert */
        return -1;
    if (r == 0)
        return rb__conn_lookup(w, id) ? 0 : -1;
    if (r == -ESHUTDOWN) {
        rb__tls_count_alert(w, RB_TLS_ALERT_CLOSE_NOTIFY);
        rb__conn_release(w, c, RB_CLOSE_EOF, 0);
    } else if (r == -ECONNRESET) {
        RB__INC(w, tls.alerts_in);
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
    } else {
        rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
    }
    return -1;
}

/* ---- the handshake ---- */

static int idq_push(struct rb__idq *q, uint64_t id)
{
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 64;
        uint64_t *v = malloc(cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        for (uint32_t i = 0; i < q->len; i++)
            v[i] = q->v[(q->head + i) & (q->cap - 1)];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->len++) & (q->cap - 1)] = id;
    return 0;
}

static uint64_t idq_peek(const struct rb__idq *q, bool back)
{
    return q->v[(q->head + (back ? q->len - 1 : 0)) & (q->cap - 1)];
}

static void idq_pop(struct rb__idq *q, bool back)
{
    if (!back)
        q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
}

/* A handshake whose ClientHello was answered waits in the first queue. */
static struct rb__idq *hs_queue_of(struct rb__worker *w, const struct rb__tls_ext *t)
{
    return t->u.hs && rb_tls_hs_runs(t->u.hs) > 0 ? &w->tls_cont : &w->tls_new;
}

/* Received during the handshake: kept for the turn's handshake step. */
static int hs_queue(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t,
                    const uint8_t *p, size_t n)
{
    struct rb_tls_part *q = t->part;
    size_t have = q ? q->have : 0;
    if (have + n > HS_QUEUE_MAX) { /* no client sends this much before an answer */
        t->state |= TX_FAILED;
        RB__INC(w, tls.failed);
        rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
        return -1;
    }
    if (!q || q->cap < have + n) {
        size_t cap = q ? (size_t)q->cap * 2 : 1024;
        while (cap < have + n)
            cap *= 2;
        struct rb_tls_part *g = realloc(q, sizeof(*g) + cap);
        if (!g) {
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            return -1;
        }
        g->have = (uint32_t)have;
        g->cap = (uint32_t)cap;
        t->part = q = g;
    }
    memcpy(q->data + q->have, p, n);
    q->have += (uint32_t)n;
    if (!(t->state & TX_QUEUED)) {
        if (idq_push(hs_queue_of(w, t), rb__conn_id(w, c)) < 0) {
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            return -1;
        }
        t->state |= TX_QUEUED;
    }
    return 0;
}

/* The handshake is done: the record layer (or the kept SSL object) takes over, liveness gets
 * the defaults, the codec starts; bytes behind the client's Finished are already records. */
static int hs_done(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t, uint8_t *rest,
                   size_t n)
{
    const struct rb_config *cfg = &w->e->cfg;
    struct rb_tls_hs *hs = t->u.hs;
    bool resumed = rb_tls_hs_resumed(hs);
    RB__DEC(w, tls.handshaking);
    RB__INC(w, tls.conns);
    if (resumed)
        RB__INC(w, tls.resumed);
    else
        RB__INC(w, tls.full);
    uint8_t eof = t->state & (TX_EOF | TX_RST); /* a FIN behind the Finished is still due */
    if (rb_tls_hs_version(hs) == 0x0304 && !cfg->tls_keep_ssl) {
        t->state = TX_OPEN | eof;
        if (rb_tls_hs_export(hs, &t->u.conn) < 0) { /* frees hs either way */
            rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            return -1;
        }
    } else {
        rb_tls_hs_keep(hs);
        t->state = TX_SSL | eof;
        RB__INC(w, tls.ssl_kept);
    }
    c->interval_ms = cfg->interval_ms;
    c->timeout_ms = cfg->timeout_ms; /* what the listener's TCP_USER_TIMEOUT says */
    rb__conn_set_mode(c, cfg->mode);
    rb__live_touch(w, c);
    rb__live_set_mark(w, c, RB_ALIVE, rb__live_weight_max(c));
    rb__live_start(w, c);
    const struct rb__codec *codec = rb__conn_codec(w, c);
    if (codec->start)
        codec->start(w, c);
    if (!n)
        return 0;
    return (t->state & TX_STATE) == TX_OPEN ? records(w, c, t, rest, n)
                                            : ssl_input(w, c, t, rest, n);
}

/*
 * Runs a connection's queued handshake input, one record per step, while the budget lasts.
 * 1: input is left (the budget ran out), 0: all of it was used, -1: c was released. The queue is
 * detached while it runs, so a release on the way cannot free it under our feet.
 */
static int hs_work(struct rb__worker *w, struct rb__conn *c, uint32_t *budget)
{
    struct rb__tls_ext *t = tx_of(c);
    if (!t->u.hs && rb_tls_hs_new(w->e->tls, &t->u.hs) < 0) {
        rb__conn_release(w, c, RB_CLOSE_RESET, 0);
        return -1;
    }
    struct rb_tls_part *q = t->part;
    struct rb_tls_hs *hs = t->u.hs;
    t->part = NULL;
    size_t off = 0, n = q ? q->have : 0;
    int ret = 0;
    while (off < n) {
        if (!*budget) {
            memmove(q->data, q->data + off, n - off);
            q->have = (uint32_t)(n - off);
            t->part = q;
            return 1;
        }
        unsigned runs = rb_tls_hs_runs(hs);
        size_t used = 0;
        int r = rb_tls_hs_step(hs, q->data + off, n - off, &used);
        off += used;
        /* In quarters: a ClientHello (the connection's first run) costs 4, a later record 1. */
        unsigned spent = (rb_tls_hs_runs(hs) - runs) * (runs == 0 ? 4 : 1);
        *budget = spent < *budget ? *budget - spent : 0;
        if (!rb__tls_send_ssl_out(w, c, hs)) { /* the server's flight, tickets, or the alert */
            ret = -1;
            break;
        }
        if (r < 0) {
            rb__tls_count_alert(w, rb_tls_hs_alert(hs));
            t->state |= TX_FAILED;
            RB__INC(w, tls.failed);
            rb__conn_release(w, c, RB_CLOSE_PROTOCOL, 0);
            ret = -1;
            break;
        }
        if (r == RB_TLS_HS_DONE) {
            t->state &= (uint8_t)~TX_QUEUED;
            ret = hs_done(w, c, t, q->data + off, n - off) < 0 ? -1 : 0;
            free(q);
            return ret;
        }
    }
    free(q);
    if (ret == 0)
        t->state &= (uint8_t)~TX_QUEUED;
    return ret;
}

/* Everything queued so far goes to the kernel before the handshake work. */
static void submit_all(struct rb__worker *w)
{
    rb__tls_seal_pending(w);
    for (unsigned i = 0; i < w->nrings; i++) {
        unsigned n = io_uring_sq_ready(&w->rings[i].uring);
        if (n && rb__ring_submit(&w->rings[i].uring) == 0) {
            RB__INC(w, submits);
            RB__ADD(w, sqes_submitted, n);
        }
    }
}

/*
 * Under overload (handshakes arrive faster than the budget lets them through) a FIFO would make
 * every connection wait until most of them time out, after their ClientHello was paid for. So
 * handshakes under way go first (their next record, the client's Finished, is cheap and makes a
 * connection of it), and new ones are taken newest first once their queue is longer than this:
 * the oldest would time out anyway, and shedding them costs nothing (adaptive LIFO).
 */
#define HS_LIFO_AFTER 256

bool rb__tls_handshakes(struct rb__worker *w)
{
    if (!rb__tls_pending(w))
        return false;
    submit_all(w);
    uint32_t n = w->e->cfg.tls_handshake_budget;
    uint32_t budget = n > UINT32_MAX / 4 ? UINT32_MAX : n * 4; /* in quarters (hs_work) */
    while (budget && rb__tls_pending(w)) {
        bool cont = w->tls_cont.len > 0;
        struct rb__idq *q = cont ? &w->tls_cont : &w->tls_new;
        bool back = !cont && q->len > HS_LIFO_AFTER;
        uint64_t id = idq_peek(q, back);
        struct rb__conn *c = rb__conn_lookup(w, id);
        if (!c || !c->tls ||
            (tx_of(c)->state & (TX_STATE | TX_QUEUED)) != (TX_HANDSHAKE | TX_QUEUED)) {
            idq_pop(q, back); /* released, or done meanwhile */
            continue;
        }
        int r = hs_work(w, c, &budget);
        if (r == 1) { /* the budget ran out with input left: it keeps its place ... */
            if (!cont && hs_queue_of(w, tx_of(c)) == &w->tls_cont) {
                idq_pop(q, back); /* ... among the handshakes under way, once it is one */
                if (idq_push(&w->tls_cont, id) < 0)
                    rb__conn_release(w, c, RB_CLOSE_RESET, 0);
            }
            break;
        }
        idq_pop(q, back);
        if (r == 0 && (c = rb__conn_lookup(w, id)) && (tx_of(c)->state & TX_EOF))
            rb__conn_release(w, c, (tx_of(c)->state & TX_RST) ? RB_CLOSE_RESET : RB_CLOSE_EOF, 0);
    }
    if (!rb__tls_pending(w))
        return false;
    RB__INC(w, tls.budget_exhausted);
    return true;
}

bool rb__tls_eof(struct rb__conn *c, int reason)
{
    struct rb__tls_ext *t = c->ext ? tx_of(c) : NULL;
    if (!t || (t->state & (TX_STATE | TX_QUEUED)) != (TX_HANDSHAKE | TX_QUEUED))
        return false;
    /* The handshake step judges the input first: a client's alert is a failed handshake, not
     * one the peer just walked away from. */
    t->state |= TX_EOF | (reason == RB_CLOSE_RESET ? TX_RST : 0);
    return true;
}

int rb__tls_input(struct rb__worker *w, struct rb__conn *c, uint8_t *p, size_t n)
{
    struct rb__tls_ext *t = tx_of(c);
    switch (t->state & TX_STATE) {
    case TX_HANDSHAKE:
        return hs_queue(w, c, t, p, n);
    case TX_OPEN:
        return records(w, c, t, p, n);
    default:
        return ssl_input(w, c, t, p, n);
    }
}
