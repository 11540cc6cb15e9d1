/* inbox.c — the inbox reader thread: the node's inbox stream, delivered to its connections. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/*
 * A consumer group, not XREAD with a last id kept here: the position and the acknowledgements
 * then live in Redis, where an operator sees a stuck or lagging node (XINFO GROUPS: lag and
 * pending; XPENDING), and a reconnect after a Redis outage continues from the group's position
 * with nothing to remember across the outage. At start the group is recreated at "$": messages
 * queued for an earlier run of this node were addressed to connections that no longer exist.
 * Every entry is acknowledged (XACK) once handled, delivered or not, and the stream is trimmed up
 * to the last one handled, so an inbox holds only what is still to be read.
 */
#define GROUP      "ringbeat"
#define READ_COUNT "256"
#define BLOCK_MS   "1000"
#define TIMEOUT_MS 3000 /* longer than BLOCK_MS */
#define SENDS_MAX  16   /* sessions of one client a message goes to */

struct inbox {
    struct rbp *p;
    redisContext *c;
    char key[200], consumer[96];
    uint32_t backoff_ms;
    uint64_t rng;
    bool started; /* the group was recreated at "$" once in this run */
};

static bool field_is(const redisReply *f, const char *name)
{
    return f->type == REDIS_REPLY_STRING && f->len == strlen(name) &&
           memcmp(f->str, name, f->len) == 0;
}

static int parse_conn(const redisReply *v, uint64_t *out)
{
    if (!v || v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 20)
        return -EINVAL;
    uint64_t n = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->str[i] < '0' || v->str[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(v->str[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -EINVAL;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* One inbox entry: fields client|conn with data (and optional kind=text), or close with client
 * (a replaced session, ordered by the node that has the newer one). */
static void handle_entry(struct inbox *ib, const redisReply *fields)
{
    struct rbp *p = ib->p;
    struct rbp_stats *s = &p->st;
    const redisReply *client = NULL, *conn = NULL, *data = NULL, *kind = NULL, *close = NULL;
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2) {
        atomic_fetch_add_explicit(&s->inbox_malformed, 1, memory_order_relaxed);
        return;
    }
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (field_is(f, "client"))
            client = v;
        else if (field_is(f, "conn"))
            conn = v;
        else if (field_is(f, "data"))
            data = v;
        else if (field_is(f, "kind"))
            kind = v;
        else if (field_is(f, "close"))
            close = v;
    }
    uint64_t id = 0; /* set by parse_conn wherever it is read; gcc -O3 cannot tell */
    if (close) {
        /* Only if that connection is still the session of that client here: a stale order (the
         * session already gone, the id reused by a later run) closes nothing. */
        if (parse_conn(close, &id) == 0 && client && client->len <= RB_CLIENT_ID_MAX &&
            rbp_table_has(&p->table, id, client->str, client->len) &&
            rb_close(p->engine, id, RB_CLOSE_REPLACED) == 0)
            atomic_fetch_add_explicit(&s->replaced_remote, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&s->replaced_stale, 1, memory_order_relaxed);
        return;
    }
    bool text = kind && kind->len == 4 && memcmp(kind->str, "text", 4) == 0;
    if (!data || (!client == !conn) || (client && client->len > RB_CLIENT_ID_MAX) ||
        (conn && parse_conn(conn, &id) < 0)) {
        atomic_fetch_add_explicit(&s->inbox_malformed, 1, memory_order_relaxed);
        return;
    }
    uint64_t ids[SENDS_MAX];
    unsigned n;
    if (client) {
        n = rbp_table_conns_of(&p->table, client->str, client->len, 0, ids, SENDS_MAX);
    } else {
        ids[0] = id;
        n = rbp_table_has_conn(&p->table, id) ? 1 : 0;
    }
    if (!n) {
        atomic_fetch_add_explicit(&s->inbox_undeliverable, 1, memory_order_relaxed);
        return;
    }
    unsigned sent = 0;
    for (unsigned i = 0; i < n; i++) {
        int r = text ? rb_send_text(p->engine, ids[i], data->str, data->len)
                     : rb_send(p->engine, ids[i], data->str, data->len);
        sent += r == 0;
    }
    if (sent)
        atomic_fetch_add_explicit(&s->inbox_delivered, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&s->inbox_failed, 1, memory_order_relaxed); /* too big, full */
}

static void drop_link(struct inbox *ib, const char *why)
{
    if (ib->c) {
        rb_log(RB_LOG_WARN, "redis_down", "role=inbox err=\"%s\" action=reconnect", why);
        redisFree(ib->c);
        ib->c = NULL;
    }
    atomic_store(&ib->p->st.inbox_up, 0);
    ib->backoff_ms = rbp_backoff_next(ib->backoff_ms, &ib->rng);
}

static int connect_inbox(struct inbox *ib)
{
    struct rbp *p = ib->p;
    char err[256];
    ib->c = rbp_connect(&p->target, p->password, ib->consumer, 1000, err, sizeof(err));
    if (!ib->c) {
        ib->backoff_ms = rbp_backoff_next(ib->backoff_ms, &ib->rng);
        return -ECONNREFUSED;
    }
    struct timeval tv = {.tv_sec = TIMEOUT_MS / 1000};
    redisSetTimeout(ib->c, tv);
    redisReply *r;
    if (!ib->started) {
        /* This run starts at the end: an earlier run's backlog and pending list go. */
        r = redisCommand(ib->c, "XGROUP DESTROY %s " GROUP, ib->key);
        if (r)
            freeReplyObject(r);
    }
    r = redisCommand(ib->c, "XGROUP CREATE %s " GROUP " %s MKSTREAM", ib->key,
                     ib->started ? "0" : "$");
    if (!r) {
        drop_link(ib, ib->c->errstr);
        return -EIO;
    }
    /* BUSYGROUP after a reconnect: the group and its position are still there. */
    freeReplyObject(r);
    ib->started = true;
    ib->backoff_ms = 0;
    atomic_store(&p->st.inbox_up, 1);
    /* From here on an entry added to the inbox is delivered (before it, "$" would skip it). */
    rb_log(RB_LOG_INFO, "redis_up", "role=inbox node=%s", p->node);
    return 0;
}

/* Reads one batch, handles it, acknowledges and trims. -EIO: the link broke. */
static int read_batch(struct inbox *ib)
{
    const char *argv[] = {"XREADGROUP", "GROUP",  GROUP,     ib->consumer, "COUNT", READ_COUNT,
                          "BLOCK",      BLOCK_MS, "STREAMS", ib->key,      ">"};
    redisReply *r = redisCommandArgv(ib->c, 11, argv, NULL);
    if (!r) {
        drop_link(ib, ib->c->errstr);
        return -EIO;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* NOGROUP: Redis restarted empty, or someone removed the stream: make it again. */
        bool nogroup = strncmp(r->str, "NOGROUP", 7) == 0;
        freeReplyObject(r);
        if (nogroup) {
            redisReply *c = redisCommand(ib->c, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", ib->key);
            if (!c) {
                drop_link(ib, ib->c->errstr);
                return -EIO;
            }
            freeReplyObject(c);
            return 0;
        }
        usleep(100000);
        return 0;
    }
    /* [[key, [[id, [field, value, ...]], ...]]] or nil after the block timed out. */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements < 2) {
        freeReplyObject(r);
        return 0;
    }
    const redisReply *entries = r->element[0]->element[1];
    size_t n = entries->type == REDIS_REPLY_ARRAY ? entries->elements : 0;
    const char **ack = calloc(n + 3, sizeof(*ack));
    size_t *ack_len = calloc(n + 3, sizeof(*ack_len));
    size_t nack = 3;
    const redisReply *last = NULL;
    if (ack && ack_len) {
        ack[0] = "XACK";
        ack[1] = ib->key;
        ack[2] = GROUP;
        for (int i = 0; i < 3; i++)
            ack_len[i] = strlen(ack[i]);
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING) {
            atomic_fetch_add_explicit(&ib->p->st.inbox_malformed, 1, memory_order_relaxed);
            continue;
        }
        handle_entry(ib, e->element[1]);
        last = e->element[0];
        if (ack && ack_len) {
            ack[nack] = e->element[0]->str;
            ack_len[nack++] = e->element[0]->len;
        }
    }
    int ret = 0;
    if (nack > 3 && ack && ack_len) {
        redisAppendCommandArgv(ib->c, (int)nack, ack, ack_len);
        const char *trim[] = {"XTRIM", ib->key, "MINID", last->str};
        size_t trim_len[] = {5, strlen(ib->key), 5, last->len};
        redisAppendCommandArgv(ib->c, 4, trim, trim_len);
        for (int k = 0; k < 2; k++) {
            redisReply *a = NULL;
            if (redisGetReply(ib->c, (void **)&a) != REDIS_OK || !a) {
                drop_link(ib, ib->c->errstr);
                ret = -EIO;
                break;
            }
            freeReplyObject(a);
        }
    }
    free(ack);
    free(ack_len);
    freeReplyObject(r);
    return ret;
}

void *rbp_inbox_main(void *arg)
{
    struct rbp *p = arg;
    pthread_setname_np(pthread_self(), "rb-redis-inbox");
    struct inbox ib = {.p = p, .rng = (uint64_t)rb_clock_ns() * 7 | 1};
    snprintf(ib.key, sizeof(ib.key), "%sinbox:%s", p->prefix, p->node);
    snprintf(ib.consumer, sizeof(ib.consumer), "ringbeat:%s:inbox", p->node);
    while (!atomic_load(&p->stop)) {
        if (!ib.c && connect_inbox(&ib) < 0) {
            /* Sleeps in short steps so that a stop is seen quickly. */
            for (uint32_t t = 0; t < ib.backoff_ms && !atomic_load(&p->stop); t += 50)
                usleep(50000);
            continue;
        }
        read_batch(&ib);
    }
    if (ib.c)
        redisFree(ib.c);
    atomic_store(&p->st.inbox_up, 0);
    return NULL;
}
