/* transport_tls_out.c — TLS transport, output side: frames sealed in place, a record per batch. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport_tls.h"

/*
 * Output: rb__out_begin gives the codec room inside a record (5 bytes before, 17 after) and
 * rb__out_end seals it in place. While the codec handles one received record (a "batch"),
 * consecutive frames to the connection share one record: the record stays open, the next frame
 * goes where its tail was, and it is sealed and sent when the batch ends or anything else is
 * allocated or submitted (rb__tls_seal_pending in rb__out_alloc, rb__out_send and
 * rb__ring_reserve). Fifty PINGs in one record get fifty PONGs in one record.
 */

/* Seals rec[5..5+len) and sends the record. false: c was released. */
static bool seal_send(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t, uint8_t *rec,
                      uint32_t len)
{
    int n = rb_tls_seal(&t->u.conn, w->tls_scratch, rec, len);
    if (n < 0)
        return true; /* closed or failed: nothing more goes out (the close is on its way) */
    return rb__out_send(w, c, rec, (uint32_t)n);
}

void rb__tls_seal_open(struct rb__worker *w)
{
    struct rb__conn *c = w->tls_open;
    w->tls_open = NULL;
    seal_send(w, c, tx_of(c), w->tls_open_rec, w->tls_open_len);
}

/* An AES-GCM write key near its record limit: our KeyUpdate first (once per 2^24 records). */
static bool key_update(struct rb__worker *w, struct rb__conn *c, struct rb__tls_ext *t)
{
    struct rb_tls_conn *k = &t->u.conn;
    if (k->suite == RB_TLS_CHACHA20_POLY1305_SHA256 || k->wr.seq < WRITE_LIMIT)
        return true;
    uint8_t *b = rb__out_alloc(w, RB_TLS_REPLY_MAX);
    if (!b)
        return false;
    int n = rb_tls_seal_keyupdate(k, w->tls_scratch, b, false);
    if (n < 0)
        return false;
    rb__out_resize_last(w, b + RB_TLS_REPLY_MAX, b + n);
    RB__INC(w, tls.key_updates_out);
    return rb__out_send(w, c, b, (uint32_t)n);
}

uint8_t *rb__tls_out_begin(struct rb__worker *w, struct rb__conn *c, uint32_t max_len)
{
    struct rb__tls_ext *t = tx_of(c);
    uint8_t *p;
    switch (t->state & TX_STATE) {
    case TX_HANDSHAKE:
        return NULL; /* no keys yet (the codec has not even started) */
    case TX_SSL:
        w->tls_begin_kind = BEGIN_SSL;
        break;
    default:
        if (max_len > PLAIN_MAX) { /* a frame over several records: staged, then copied */
            w->tls_begin_kind = BEGIN_BIG;
            break;
        }
        if (w->tls_open == c && w->tls_open_len + max_len <= PLAIN_MAX) {
            /* The next frame of the batch goes where the open record's tail was. */
            uint8_t *end = w->tls_open_rec + RB_TLS_HDR_LEN + w->tls_open_len + RB_TLS_SEAL_TAIL;
            if (rb__out_resize_last(w, end, end + max_len)) {
                w->tls_begin_kind = BEGIN_APPEND;
                w->tls_begin_end = end + max_len;
                return end - RB_TLS_SEAL_TAIL;
            }
        }
        if (w->tls_open == c) { /* sealed before the new one takes the next sequence number */
            uint64_t id = rb__conn_id(w, c);
            rb__tls_seal_open(w);
            if (!rb__conn_lookup(w, id))
                return NULL;
        }
        if (!key_update(w, c, t))
            return NULL;
        if (!(p = rb__out_alloc(w, RB_TLS_HDR_LEN + max_len + RB_TLS_SEAL_TAIL)))
            return NULL;
        w->tls_begin_kind = BEGIN_RECORD;
        w->tls_begin_end = p + RB_TLS_HDR_LEN + max_len + RB_TLS_SEAL_TAIL;
        return p + RB_TLS_HDR_LEN;
    }
    if (!(p = rb__out_alloc(w, max_len)))
        return NULL;
    w->tls_begin_end = p + max_len;
    return p;
}

void rb__tls_out_end(struct rb__worker *w, struct rb__conn *c, uint8_t *buf, uint32_t len)
{
    struct rb__tls_ext *t = tx_of(c);
    switch (w->tls_begin_kind) {
    case BEGIN_SSL: /* OpenSSL seals it into its write BIO */
        rb__out_resize_last(w, w->tls_begin_end, buf + len);
        if (rb_tls12_write(t->u.hs, buf, len) == 0)
            rb__tls_send_ssl_out(w, c, t->u.hs);
        return;
    case BEGIN_BIG:
        rb__out_resize_last(w, w->tls_begin_end, buf + len);
        for (uint32_t off = 0; off < len;) {
            uint32_t k = len - off > PLAIN_MAX ? PLAIN_MAX : len - off;
            uint8_t *rec;
            if (!key_update(w, c, t) ||
                !(rec = rb__out_alloc(w, RB_TLS_HDR_LEN + k + RB_TLS_SEAL_TAIL)))
                return;
            memcpy(rec + RB_TLS_HDR_LEN, buf + off, k);
            if (!seal_send(w, c, t, rec, k))
                return;
            off += k;
        }
        return;
    case BEGIN_APPEND:
        rb__out_resize_last(w, w->tls_begin_end, buf + len + RB_TLS_SEAL_TAIL);
        w->tls_open_len += len;
        return;
    default: {
        uint8_t *rec = buf - RB_TLS_HDR_LEN;
        rb__out_resize_last(w, w->tls_begin_end, buf + len + RB_TLS_SEAL_TAIL);
        if (w->tls_batch == c && !(c->flags & RB__CF_BLOCKED)) {
            w->tls_open = c; /* more frames of this batch may follow into it */
            w->tls_open_rec = rec;
            w->tls_open_len = len;
            return;
        }
        seal_send(w, c, t, rec, len);
    }
    }
}

uint32_t rb__tls_close_bytes(struct rb__worker *w, struct rb__conn *c, int reason, int peer_code,
                             uint8_t **out)
{
    *out = NULL;
    if (!c->ext)
        return 0; /* the transport never started */
    struct rb__tls_ext *t = tx_of(c);
    const struct rb__codec *codec = rb__conn_codec(w, c);
    enum rb_protocol proto = rb__conn_protocol(w, c);
    if (w->tls_open == c)
        rb__tls_seal_open(w); /* the batch's frames go before the close */
    uint8_t *b;
    uint32_t n = 0;
    switch (t->state & TX_STATE) {
    case TX_HANDSHAKE:
        return 0; /* no keys: the socket just closes */
    case TX_SSL: {
        uint8_t *f = rb__out_alloc(w, codec->control_max);
        uint32_t flen = f ? codec->put_close(f, c, reason, peer_code) : 0;
        if (flen && rb_tls12_write(t->u.hs, f, flen) == 0)
            RB__INC(w, proto[proto].closes_out);
        if (rb_tls12_close(t->u.hs) == 0)
            rb__tls_count_alert(w, RB_TLS_ALERT_CLOSE_NOTIFY);
        size_t pend = rb_tls_hs_out_pending(t->u.hs);
        if (!pend || !(b = rb__out_alloc(w, (uint32_t)pend)))
            return 0;
        n = (uint32_t)rb_tls_hs_take_out(t->u.hs, b, pend);
        break;
    }
    default: {
        struct rb_tls_conn *k = &t->u.conn;
        if (k->flags & (RB_TLS_F_FAILED | RB_TLS_F_WR_CLOSED))
            return 0; /* our alert or close_notify went out already */
        uint32_t cap = RB_TLS_SEAL_OVERHEAD + codec->control_max + RB_TLS_REPLY_MAX;
        if (!(b = rb__out_alloc(w, cap)))
            return 0;
        uint32_t flen = codec->put_close(b + RB_TLS_HDR_LEN, c, reason, peer_code);
        int m;
        if (flen && (m = rb_tls_seal(k, w->tls_scratch, b, flen)) > 0) {
            n = (uint32_t)m;
            RB__INC(w, proto[proto].closes_out);
        }
        if ((m = rb_tls_seal_alert(k, w->tls_scratch, b + n, RB_TLS_ALERT_CLOSE_NOTIFY)) > 0) {
            n += (uint32_t)m;
            rb__tls_count_alert(w, RB_TLS_ALERT_CLOSE_NOTIFY);
        }
        rb__out_resize_last(w, b + cap, b + n);
    }
    }
    *out = n ? b : NULL;
    return n;
}
