/* tls_feed.c — TLS record framing: whole records out of a byte stream, in place where they lie. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

/*
 * The one collector of TLS records, shared by the engine's transport (transport_tls.c), the load
 * generator and the fuzz target. A record that lies whole in the received bytes is handed out
 * where it lies (the caller decrypts it there, in its receive buffer); only a record split across
 * receives is copied, into a part sized for exactly that record (5 bytes while its header is
 * incomplete), which exists only until the record is whole. So a peer can make the caller hold
 * at most one record (RB_TLS_MAX_RECORD bytes) per connection.
 */

static struct rb_tls_part *part_new(uint32_t cap)
{
    struct rb_tls_part *pt = malloc(sizeof(*pt) + cap);
    if (pt) {
        pt->have = 0;
        pt->cap = cap;
    }
    return pt;
}

/* Hands the part's whole record out. The part is detached first: the callback may release the
 * connection (and with it the slot), and the part goes when the callback is done. */
static int part_done(const struct rb_tls_rx *rx)
{
    struct rb_tls_part *pt = *rx->part;
    *rx->part = NULL;
    int r = rx->record(rx->ctx, pt->data, pt->cap);
    free(pt);
    return r ? 1 : 0;
}

int rb_tls_feed(const struct rb_tls_rx *rx, uint8_t *p, size_t n)
{
    struct rb_tls_part *pt = *rx->part;
    if (pt) {
        if (pt->cap == RB_TLS_HDR_LEN) { /* the header is still incomplete */
            size_t t = RB_TLS_HDR_LEN - pt->have < n ? RB_TLS_HDR_LEN - pt->have : n;
            memcpy(pt->data + pt->have, p, t);
            pt->have += (uint32_t)t, p += t, n -= t;
            if (pt->have < RB_TLS_HDR_LEN)
                return 0;
            int len = rb_tls_record_len(pt->data);
            if (len < 0)
                return len;
            if (len > RB_TLS_HDR_LEN) {
                struct rb_tls_part *g = realloc(pt, sizeof(*pt) + (size_t)len);
                if (!g)
                    return -ENOMEM;
                *rx->part = pt = g;
                pt->cap = (uint32_t)len;
            }
        }
        size_t t = pt->cap - pt->have < n ? pt->cap - pt->have : n;
        memcpy(pt->data + pt->have, p, t);
        pt->have += (uint32_t)t, p += t, n -= t;
        if (pt->have < pt->cap)
            return 0;
        if (part_done(rx))
            return 1;
    }
    while (n > 0) {
        if (n < RB_TLS_HDR_LEN) {
            if (!(pt = part_new(RB_TLS_HDR_LEN)))
                return -ENOMEM;
            memcpy(pt->data, p, n);
            pt->have = (uint32_t)n;
            *rx->part = pt;
            return 0;
        }
        int len = rb_tls_record_len(p);
        if (len < 0)
            return len;
        if ((size_t)len > n) {
            if (!(pt = part_new((uint32_t)len)))
                return -ENOMEM;
            memcpy(pt->data, p, n);
            pt->have = (uint32_t)n;
            *rx->part = pt;
            return 0;
        }
        if (rx->record(rx->ctx, p, (size_t)len))
            return 1;
        p += len, n -= (size_t)len;
    }
    return 0;
}

size_t rb_tls_part_bytes(const struct rb_tls_part *pt)
{
    return pt ? pt->have : 0;
}
