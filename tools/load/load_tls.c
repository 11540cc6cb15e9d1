/* load_tls.c — ringbeat-load's TLS client: handshakes and the engine's record layer per slot. */
#include "load_tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

enum { ST_NONE = 0, ST_HANDSHAKE, ST_UP };

/* Per slot: the handshake object while it runs, then the 216-byte record state. */
struct ltls_conn {
    union {
        struct rb_tls_conn conn; /* ST_UP */
        struct rb_tls_hs *hs;    /* ST_HANDSHAKE */
    } u;
    struct rb_tls_part *part; /* a record split across receives */
    uint8_t state;
};

struct ltls_ring {
    struct rb_tls_ctx *ctx;
    struct rb_tls_scratch *scratch; /* the ring's worker thread is its only user */
    struct ltls_conn *c;
    uint32_t nslots;
};

int ltls_global_init(bool resume, const char *ciphersuites, struct rb_tls_ctx **out)
{
    struct rb_tls_client_config cfg = {.ciphersuites = ciphersuites, .resume = resume};
    return rb_tls_ctx_new_client(&cfg, out);
}

void ltls_global_free(struct rb_tls_ctx *ctx)
{
    rb_tls_ctx_free(ctx);
}

int ltls_ring_new(struct rb_tls_ctx *ctx, uint32_t nslots, struct ltls_ring **out)
{
    struct ltls_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->ctx = ctx;
    r->nslots = nslots;
    r->c = calloc(nslots, sizeof(*r->c));
    int ret = r->c ? rb_tls_scratch_new(&r->scratch) : -ENOMEM;
    if (ret < 0) {
        free(r->c);
        free(r);
        return ret;
    }
    *out = r;
    return 0;
}

void ltls_reset(struct ltls_ring *r, uint32_t slot)
{
    struct ltls_conn *c = &r->c[slot];
    if (c->state == ST_HANDSHAKE)
        rb_tls_hs_free(c->u.hs);
    else if (c->state == ST_UP)
        rb_tls_conn_wipe(&c->u.conn);
    free(c->part);
    memset(c, 0, sizeof(*c));
}

void ltls_ring_free(struct ltls_ring *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < r->nslots; i++)
        ltls_reset(r, i);
    rb_tls_scratch_free(r->scratch);
    free(r->c);
    free(r);
}

/* What the handshake driver queued for the server. */
static int flush_hs(struct rb_tls_hs *hs, const struct ltls_io *io)
{
    uint8_t buf[4096];
    size_t n;
    while ((n = rb_tls_hs_take_out(hs, buf, sizeof(buf))) > 0) {
        int ret = io->wire(io->ctx, buf, n);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int ltls_start(struct ltls_ring *r, uint32_t slot, const struct ltls_io *io)
{
    struct ltls_conn *c = &r->c[slot];
    ltls_reset(r, slot);
    int ret = rb_tls_hs_new(r->ctx, &c->u.hs);
    if (ret < 0)
        return ret;
    c->state = ST_HANDSHAKE;
    return flush_hs(c->u.hs, io);
}

struct rec_ctx {
    struct ltls_ring *r;
    struct ltls_conn *c;
    const struct ltls_io *io;
    enum ltls_result res;
};

static int on_record(void *arg, uint8_t *rec, size_t len)
{
    struct rec_ctx *x = arg;
    struct rb_tls_opened o;
    int rc = rb_tls_open(&x->c->u.conn, x->r->scratch, rec, len, &o);
    if (o.reply_len && x->io->wire(x->io->ctx, o.reply, o.reply_len) < 0)
        rc = -EIO;
    if (rc == RB_TLS_DATA) {
        if (o.len && x->io->plain(x->io->ctx, o.data, o.len)) {
            x->res = LTLS_STOPPED;
            return 1;
        }
        return 0;
    }
    if (rc == RB_TLS_NOTHING) /* a KeyUpdate, or a ticket we skip */
        return 0;
    x->res = rc == RB_TLS_CLOSED ? LTLS_CLOSED : LTLS_FAILED;
    return 1;
}

static enum ltls_result records(struct ltls_ring *r, struct ltls_conn *c, uint8_t *p, size_t n,
                                const struct ltls_io *io)
{
    struct rec_ctx x = {.r = r, .c = c, .io = io, .res = LTLS_OK};
    const struct rb_tls_rx rx = {.part = &c->part, .record = on_record, .ctx = &x};
    int rc = rb_tls_feed(&rx, p, n);
    if (rc < 0)
        return LTLS_FAILED;
    return x.res;
}

enum ltls_result ltls_input(struct ltls_ring *r, uint32_t slot, uint8_t *p, size_t n,
                            const struct ltls_io *io)
{
    struct ltls_conn *c = &r->c[slot];
    if (c->state == ST_UP)
        return records(r, c, p, n, io);
    if (c->state != ST_HANDSHAKE)
        return LTLS_FAILED;
    while (n > 0) {
        size_t used = 0;
        int rc = rb_tls_hs_step(c->u.hs, p, n, &used);
        p += used, n -= used;
        if (flush_hs(c->u.hs, io) < 0 || rc < 0)
            return LTLS_HS_FAILED;
        if (rc != RB_TLS_HS_DONE)
            continue;
        struct rb_tls_hs *hs = c->u.hs;
        c->state = ST_UP;
        if (rb_tls_hs_export(hs, &c->u.conn) < 0) /* frees hs */
            return LTLS_HS_FAILED;
        io->up(io->ctx);
        return n ? records(r, c, p, n, io) : LTLS_OK;
    }
    return LTLS_OK;
}

int ltls_seal(struct ltls_ring *r, uint32_t slot, const uint8_t *frame, size_t n, uint8_t *out,
              size_t cap)
{
    struct ltls_conn *c = &r->c[slot];
    if (c->state != ST_UP)
        return -EAGAIN;
    if (n + RB_TLS_SEAL_OVERHEAD > cap)
        return -EMSGSIZE;
    memmove(out + RB_TLS_HDR_LEN, frame, n);
    int len = rb_tls_seal(&c->u.conn, r->scratch, out, n);
    if (len == -EKEYEXPIRED) /* 2^24 records on one AES-GCM key: a load run never gets there */
        return -EPIPE;
    return len;
}

int ltls_close_notify(struct ltls_ring *r, uint32_t slot, uint8_t *out)
{
    struct ltls_conn *c = &r->c[slot];
    if (c->state != ST_UP)
        return 0;
    int n = rb_tls_seal_alert(&c->u.conn, r->scratch, out, RB_TLS_ALERT_CLOSE_NOTIFY);
    return n > 0 ? n : 0;
}

void ltls_counts(struct rb_tls_ctx *ctx, uint64_t *full, uint64_t *resumed, uint64_t *failed)
{
    struct rb_tls_counters k;
    rb_tls_ctx_counters(ctx, &k);
    *full = k.full;
    *resumed = k.resumed;
    *failed = k.failed;
}
