/* conn.c — connection records: lookup by id, slow-path extension, creation and release. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct rb__conn *rb__conn_lookup(struct rb__worker *w, uint64_t id)
{
    uint32_t gring = rb__id_ring(id);
    if (gring >= w->e->nworkers * w->e->rings_per_worker_max)
        return NULL;
    struct rb__ring *r = w->e->ring_by_gindex[gring];
    if (!r || r->w != w)
        return NULL;
    uint32_t slot = rb__id_slot(id);
    if (slot >= r->slots)
        return NULL;
    struct rb__conn *c = r->by_slot[slot];
    if (!c || c->gen != rb__id_gen(id) || (c->flags & RB__CF_CLOSING))
        return NULL;
    return c;
}

struct rb__conn_ext *rb__conn_ext(struct rb__worker *w, struct rb__conn *c)
{
    (void)w; /* a TLS connection's comes from the worker's TLS slab, at accept (rb__tls_start) */
    if (!c->ext)
        c->ext = calloc(1, sizeof(*c->ext));
    return c->ext;
}

void rb__conn_ext_trim(struct rb__conn *c)
{
    struct rb__conn_ext *x = c->ext;
    if (x && !c->tls && !x->codec && !x->out && !x->peer) {
        free(x);
        c->ext = NULL;
    }
}

struct rb__conn *rb__conn_new(struct rb__worker *w, struct rb__ring *r, uint32_t slot,
                              unsigned listener)
{
    const struct rb_config *cfg = &w->e->cfg;
    struct rb__conn *c = rb__slab_alloc(&w->slab);
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    rb__timer_init(&c->timer);
    c->gen = (uint32_t)(++w->gen_counter[r->index] & ((1u << RB__GEN_BITS) - 1));
    if (!c->gen)
        c->gen = (uint32_t)++w->gen_counter[r->index];
    c->slot = slot;
    c->listener = listener & (RB_LISTEN_MAX - 1);
    c->tls = w->e->listeners[c->listener].spec.transport == RB_TRANSPORT_TLS;
    c->ring = r->index;
    c->last_rx_ms = w->now_ms + 1; /* rounded up, as in rb__live_touch() */
    c->interval_ms = cfg->interval_ms;
    c->timeout_ms = cfg->timeout_ms;
    c->proxy_pending = cfg->proxy_protocol;
    rb__conn_set_mode(c, cfg->mode);
    unsigned wmax = rb__live_weight_max(c);
    c->state = (uint8_t)((c->state & 0x0c) | RB_ALIVE | wmax << 4);
    r->by_slot[slot] = c;
    r->used++;
    RB__INC(w, accepted);
    RB__INC(w, conns);
    RB__INC(w, by_liveness[RB_ALIVE]);
    RB__INC(w, by_weight[wmax]);
    enum rb_protocol p = rb__conn_protocol(w, c);
    RB__INC(w, proto[p].accepted);
    RB__INC(w, proto[p].conns);
    /* Over TLS the codec starts once the handshake is done (transport_tls.c). */
    const struct rb__codec *codec = rb__conn_codec(w, c);
    if (!c->tls && codec->start)
        codec->start(w, c);
    return c;
}

void rb__conn_release(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code)
{
    struct rb__ring *r = rb__conn_ring(w, c);
    const struct rb__codec *codec = rb__conn_codec(w, c);
    enum rb_protocol p = rb__conn_protocol(w, c);
    uint64_t id = rb__conn_id(w, c);
    c->flags |= RB__CF_CLOSING;
    rb__wheel_del(&w->wheel, &c->timer);

    /* Behind blocked output a close frame would jump the queue: the socket just closes then. */
    uint8_t *frame = NULL;
    uint32_t len = 0;
    if (c->tls) {
        if (!(c->flags & RB__CF_BLOCKED))
            len = rb__tls_close_bytes(w, c, reason, peer_code, &frame);
    } else if (!(c->flags & RB__CF_BLOCKED) && (frame = rb__out_alloc(w, codec->control_max)) &&
               (len = codec->put_close(frame, c, reason, peer_code)) > 0) {
        RB__INC(w, proto[p].closes_out);
    }
    rb__slot_close(w, r, c->slot, frame, len);

    /* Reasons count in a bounded table; an application's own close code counts as normal. */
    int counted = reason > 0 && reason < RB_CLOSE_REASON_MAX ? reason : RB_CLOSE_NORMAL;
    RB__DEC(w, by_liveness[rb__conn_liveness(c)]);
    RB__DEC(w, by_weight[rb__conn_weight(c)]);
    RB__DEC(w, conns);
    RB__DEC(w, proto[p].conns);
    RB__INC(w, closed[counted]);
    RB__INC(w, proto[p].closed[counted]);
    if (w->e->cfg.cb.on_close && (c->flags & RB__CF_OPEN))
        w->e->cfg.cb.on_close(w->e, id, reason, peer_code, w->e->cfg.user);

    struct rb__conn_ext *x = c->ext;
    if (x) {
        if (x->codec && c->proxy_pending)
            free(x->codec); /* a PROXY header split across reads (recv.c): the codec's turn never
                               came */
        else if (x->codec)
            codec->release(c, x->codec);
        x->codec = NULL;
        free(x->peer);
        x->peer = NULL;
        rb__out_release(c, x);
        if (c->tls)
            rb__tls_release(w, c, reason); /* the ext with it */
        else
            free(x);
        c->ext = NULL;
    }
    if (r->ip_key && r->ip_key[c->slot]) {
        rb__ip_release(w->e, r->ip_key[c->slot]);
        r->ip_key[c->slot] = 0;
    }
    r->by_slot[c->slot] = NULL;
    r->used--;
    atomic_fetch_sub_explicit(&w->e->conns, 1, memory_order_relaxed);
    rb__slab_free(&w->slab, c);
}
