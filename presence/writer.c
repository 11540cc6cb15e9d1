/* writer.c — the presence writer thread: pipelined batches, node key, resync, reconnect. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define BATCH_EVENTS       256  /* events per pipeline: two commands each */
#define SNAP_CHUNK         512  /* sessions per resync pipeline */
#define SWEEP_COUNT        1000 /* stale clients per SWEEP / GC call */
#define GC_CALLS_MAX       50   /* GC calls per node-key refresh */
#define CONNECT_TIMEOUT_MS 1000
#define COMMAND_TIMEOUT_MS 5000

struct writer {
    struct rbp *p;
    redisContext *c;
    char sha[RBP_S_COUNT][41];
    unsigned pending; /* replies owed by Redis */
    uint64_t rng;
    uint32_t backoff_ms;
    uint64_t next_connect_ms, next_refresh_ms;
    char k_events[160], k_nodes[160], k_node[320], k_clients[320], k_stale[320], k_inbox_pfx[160];
    size_t prefix_len;
};

static const char *const event_names[] = {"open", "suspect", "alive", "close"};
static const char *const state_names[] = {"alive", "suspect", "dead"};

static void disconnect(struct writer *w, const char *why)
{
    if (w->c) {
        rb_log(RB_LOG_WARN, "redis_down", "role=writer err=\"%s\" action=reconnect", why);
        redisFree(w->c);
        w->c = NULL;
    }
    w->pending = 0;
    atomic_store(&w->p->st.up, 0);
    atomic_store(&w->p->need_resync, 1); /* whatever was in flight may or may not have landed */
    w->backoff_ms = rbp_backoff_next(w->backoff_ms, &w->rng);
    w->next_connect_ms = rbp_mono_ms() + w->backoff_ms;
}

static void cmd(struct writer *w, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(w->c, argc, argv, lens) == REDIS_OK)
        w->pending++;
}

/* Reads every reply owed; -EIO when the link broke (the caller disconnects). */
static int flush(struct writer *w)
{
    struct rbp_stats *s = &w->p->st;
    uint64_t t0 = rb_clock_ns();
    bool noscript = false;
    while (w->pending) {
        redisReply *r = NULL;
        if (redisGetReply(w->c, (void **)&r) != REDIS_OK || !r)
            return -EIO;
        w->pending--;
        if (r->type == REDIS_REPLY_ERROR) {
            atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
            if (strncmp(r->str, "NOSCRIPT", 8) == 0)
                noscript = true;
            else
                rb_log(RB_LOG_WARN, "redis_error", "err=\"%.200s\"", r->str);
        }
        freeReplyObject(r);
    }
    uint64_t us = (rb_clock_ns() - t0) / 1000;
    unsigned i = 0;
    while (i < RBP_RTT_BUCKETS - 1 && us > rbp_rtt_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&s->rtt_bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->rtt_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->rtt_sum_us, us, memory_order_relaxed);
    if (noscript) /* someone flushed the script cache: load them again and rewrite the state */
        return -EIO;
    return 0;
}

/* A synchronous command outside a batch; NULL (and a disconnect) when the link broke. */
static redisReply *call(struct writer *w, int argc, const char **argv, const size_t *lens)
{
    cmd(w, argc, argv, lens);
    redisReply *r = NULL;
    if (redisGetReply(w->c, (void **)&r) != REDIS_OK || !r) {
        disconnect(w, w->c->errstr[0] ? w->c->errstr : "no reply");
        return NULL;
    }
    w->pending--;
    return r;
}

static size_t presence_key(const struct writer *w, char *out, const char *id, size_t id_len)
{
    memcpy(out, w->p->prefix, w->prefix_len);
    memcpy(out + w->prefix_len, "presence:", 9);
    memcpy(out + w->prefix_len + 9, id, id_len);
    return w->prefix_len + 9 + id_len;
}

static void evalsha(struct writer *w, enum rbp_script s, int nkeys, int argc, const char **argv,
                    size_t *lens)
{
    char nk[4];
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = w->sha[s];
    lens[1] = 40;
    lens[2] = (size_t)snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[2] = nk;
    cmd(w, argc, argv, lens);
}

/* OPEN for one session (from an event or a resync). */
static void put_open(struct writer *w, uint64_t conn, const char *id, size_t id_len, uint8_t state,
                     int64_t since_ms, bool resync)
{
    char key[256], c[24], since[24];
    const char *argv[13];
    size_t lens[13];
    argv[3] = key;
    lens[3] = presence_key(w, key, id, id_len);
    argv[4] = w->k_clients;
    lens[4] = strlen(w->k_clients);
    argv[5] = w->p->node;
    lens[5] = strlen(w->p->node);
    argv[6] = c;
    lens[6] = (size_t)snprintf(c, sizeof(c), "%" PRIu64, conn);
    argv[7] = state_names[state < 2 ? state : 0];
    lens[7] = strlen(argv[7]);
    argv[8] = since;
    lens[8] = (size_t)snprintf(since, sizeof(since), "%" PRId64, since_ms);
    argv[9] = w->p->cfg.single_session ? "1" : "0";
    lens[9] = 1;
    argv[10] = w->p->prefix;
    lens[10] = w->prefix_len;
    argv[11] = id;
    lens[11] = id_len;
    argv[12] = resync ? "resync" : "open";
    lens[12] = strlen(argv[12]);
    evalsha(w, RBP_S_OPEN, 2, 13, argv, lens);
}

static void put_event(struct writer *w, const struct rbp_event *ev)
{
    const struct rbp_entry *e = ev->entry;
    char c[24], t[24], maxlen[24];
    const char *reason = ev->type == RBP_EV_CLOSE ? rb_close_code_name(ev->reason) : "";
    if (ev->type == RBP_EV_CLOSE && ev->reason > RB_CLOSE_REASON_MAX)
        reason = "normal"; /* an application's own code (rb_close) */
    const char *argv[] = {"XADD",   w->k_events,
                          "MAXLEN", "~",
                          maxlen,   "*",
                          "event",  event_names[ev->type],
                          "node",   w->p->node,
                          "conn",   c,
                          "client", e->id,
                          "reason", reason,
                          "t_ms",   t};
    size_t lens[sizeof(argv) / sizeof(argv[0])];
    snprintf(maxlen, sizeof(maxlen), "%" PRIu64, w->p->cfg.events_max);
    snprintf(c, sizeof(c), "%" PRIu64, e->conn);
    snprintf(t, sizeof(t), "%" PRId64, ev->t_ms);
    for (size_t i = 0; i < sizeof(argv) / sizeof(argv[0]); i++)
        lens[i] = i == 13 ? e->id_len : strlen(argv[i]); /* the id is not NUL-terminated */
    cmd(w, (int)(sizeof(argv) / sizeof(argv[0])), argv, lens);
    if (!e->id_len)
        return; /* presence hashes are per client id */

    char key[256];
    const char *a[12];
    size_t l[12];
    a[3] = key;
    l[3] = presence_key(w, key, e->id, e->id_len);
    switch (ev->type) {
    case RBP_EV_OPEN:
        put_open(w, e->conn, e->id, e->id_len, RB_ALIVE, ev->t_ms, false);
        return;
    case RBP_EV_SUSPECT:
    case RBP_EV_ALIVE:
        a[4] = w->p->node;
        l[4] = strlen(w->p->node);
        a[5] = c;
        l[5] = strlen(c);
        a[6] = ev->type == RBP_EV_SUSPECT ? "suspect" : "alive";
        l[6] = strlen(a[6]);
        a[7] = t;
        l[7] = strlen(t);
        evalsha(w, RBP_S_STATE, 1, 8, a, l);
        return;
    case RBP_EV_CLOSE: {
        a[4] = w->k_clients;
        l[4] = strlen(w->k_clients);
        a[5] = w->p->node;
        l[5] = strlen(w->p->node);
        a[6] = c;
        l[6] = strlen(c);
        a[7] = e->id;
        l[7] = e->id_len;
        /* Another session of this client still open here takes the hash over. */
        uint64_t other;
        int argc = 8;
        char c2[24], s2[24];
        if (rbp_table_conns_of(&w->p->table, e->id, e->id_len, e->conn, &other, 1)) {
            a[8] = c2;
            l[8] = (size_t)snprintf(c2, sizeof(c2), "%" PRIu64, other);
            a[9] = "alive";
            l[9] = 5;
            a[10] = s2;
            l[10] = (size_t)snprintf(s2, sizeof(s2), "%" PRId64, ev->t_ms);
            argc = 11;
        }
        evalsha(w, RBP_S_CLOSE, 2, argc, a, l);
        return;
    }
    }
}

/* One batch of queued events: up to `limit`, or up to the queue position `until`. */
static int write_events(struct writer *w, unsigned limit, uint64_t until)
{
    struct rbp_event ev;
    unsigned n = 0;
    while (n < limit && w->p->queue.head < until && rbp_queue_pop(&w->p->queue, &ev)) {
        put_event(w, &ev);
        rbp_entry_unref(ev.entry);
        n++;
    }
    if (!n)
        return 0;
    if (flush(w) < 0) {
        atomic_fetch_add_explicit(&w->p->st.dropped_lost, n, memory_order_relaxed);
        disconnect(w, w->c->err ? w->c->errstr : "script cache flushed");
        return -EIO;
    }
    atomic_fetch_add_explicit(&w->p->st.written, n, memory_order_relaxed);
    return (int)n;
}

static int64_t int_reply(redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

/* Runs SWEEP until the stale set is empty. */
static int sweep(struct writer *w)
{
    char count[16];
    snprintf(count, sizeof(count), "%d", SWEEP_COUNT);
    for (;;) {
        const char *a[8] = {NULL,         NULL,       NULL,         w->k_stale,
                            w->k_clients, w->p->node, w->p->prefix, count};
        size_t l[8] = {0,
                       0,
                       0,
                       strlen(w->k_stale),
                       strlen(w->k_clients),
                       strlen(w->p->node),
                       w->prefix_len,
                       strlen(count)};
        evalsha(w, RBP_S_SWEEP, 2, 8, a, l);
        redisReply *r = NULL;
        if (redisGetReply(w->c, (void **)&r) != REDIS_OK || !r) {
            disconnect(w, w->c->errstr);
            return -EIO;
        }
        w->pending--;
        int64_t left = int_reply(r);
        freeReplyObject(r);
        if (left <= 0)
            return 0;
    }
}

/*
 * Rewrites this node's whole presence: what was queued before it began is written first (older
 * than the snapshot), then every session of the table (OPEN in resync mode), then the sweep
 * removes the hashes of clients this node no longer holds. Events queued meanwhile follow it in
 * order, so they can only bring the hashes forward. A rehash of the table under the snapshot
 * (which could skip sessions) starts it over.
 */
static int resync(struct writer *w, bool sessions)
{
    struct rbp *p = w->p;
    atomic_store(&p->need_resync, 0);
    uint64_t mark = atomic_load(&p->queue.tail);
    while (p->queue.head < mark) {
        int n = write_events(w, BATCH_EVENTS, mark);
        if (n < 0)
            return n;
        if (n == 0)
            usleep(100); /* a producer is between its claim and its store */
    }
    const char *a[5] = {NULL, NULL, NULL, w->k_clients, w->k_stale};
    size_t l[5] = {0, 0, 0, strlen(w->k_clients), strlen(w->k_stale)};
    evalsha(w, RBP_S_BEGIN, 2, 5, a, l);
    if (flush(w) < 0) {
        disconnect(w, "resync begin");
        return -EIO;
    }
    static struct rbp_snap snap[SNAP_CHUNK]; /* this thread's only; too big for its stack */
    for (int attempt = 0; sessions; attempt++) {
        uint32_t cursor = 0;
        uint64_t rehash0 = 0, rehash;
        bool done = false, first = true, restarted = false;
        size_t total = 0;
        while (!done) {
            unsigned n = rbp_table_snapshot(&p->table, &cursor, snap, SNAP_CHUNK, &rehash, &done);
            if (first)
                rehash0 = rehash;
            first = false;
            if (rehash != rehash0) {
                restarted = true;
                break;
            }
            for (unsigned i = 0; i < n; i++)
                put_open(w, snap[i].conn, snap[i].id, snap[i].id_len, snap[i].state,
                         snap[i].since_ms, true);
            total += n;
            if (n && flush(w) < 0) {
                disconnect(w, "resync");
                return -EIO;
            }
        }
        if (!restarted || attempt == 3) {
            rb_log(RB_LOG_INFO, "redis_resync", "node=%s sessions=%zu", p->node, total);
            break;
        }
    }
    if (sweep(w) < 0)
        return -EIO;
    atomic_fetch_add_explicit(&p->st.resyncs, 1, memory_order_relaxed);
    return 0;
}

/* The node key says "this node is alive" for a TTL; dead nodes' leftovers are collected. */
static int refresh_node(struct writer *w)
{
    struct rbp *p = w->p;
    char started[24], pid[16], conns[16], ttl[16];
    snprintf(started, sizeof(started), "%" PRId64, p->started_ms);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    pthread_mutex_lock(&p->table.lock);
    snprintf(conns, sizeof(conns), "%u", p->table.entries);
    pthread_mutex_unlock(&p->table.lock);
    snprintf(ttl, sizeof(ttl), "%u", p->cfg.node_ttl_ms);
    const char *h[] = {"HSET", w->k_node,  "started_ms", started,   "pid",
                       pid,    "sessions", conns,        "version", RB_VERSION_STRING};
    size_t hl[10];
    for (int i = 0; i < 10; i++)
        hl[i] = strlen(h[i]);
    cmd(w, 10, h, hl);
    const char *e[] = {"PEXPIRE", w->k_node, ttl};
    size_t el[] = {7, strlen(w->k_node), strlen(ttl)};
    cmd(w, 3, e, el);
    const char *s[] = {"SADD", w->k_nodes, p->node};
    size_t sl[] = {4, strlen(w->k_nodes), strlen(p->node)};
    cmd(w, 3, s, sl);
    if (flush(w) < 0) {
        disconnect(w, "node refresh");
        return -EIO;
    }
    char count[16];
    snprintf(count, sizeof(count), "%d", SWEEP_COUNT);
    for (int i = 0; i < GC_CALLS_MAX; i++) {
        const char *a[7] = {NULL, NULL, NULL, w->k_nodes, p->prefix, p->node, count};
        size_t l[7] = {0, 0, 0, strlen(w->k_nodes), w->prefix_len, strlen(p->node), strlen(count)};
        evalsha(w, RBP_S_GC, 1, 7, a, l);
        redisReply *r = NULL;
        if (redisGetReply(w->c, (void **)&r) != REDIS_OK || !r) {
            disconnect(w, w->c->errstr);
            return -EIO;
        }
        w->pending--;
        int64_t left = int_reply(r);
        freeReplyObject(r);
        if (left <= 0)
            break;
    }
    w->next_refresh_ms = rbp_mono_ms() + p->cfg.node_ttl_ms / 3;
    return 0;
}

static int try_connect(struct writer *w)
{
    struct rbp *p = w->p;
    char err[256], name[128];
    snprintf(name, sizeof(name), "ringbeat:%s:writer", p->node);
    w->c = rbp_connect(&p->target, p->password, name, CONNECT_TIMEOUT_MS, err, sizeof(err));
    if (!w->c) {
        atomic_fetch_add_explicit(&p->st.connects_failed, 1, memory_order_relaxed);
        w->backoff_ms = rbp_backoff_next(w->backoff_ms, &w->rng);
        w->next_connect_ms = rbp_mono_ms() + w->backoff_ms;
        rb_log(RB_LOG_DEBUG, "redis_connect_failed", "role=writer err=\"%s\" retry_ms=%u", err,
               w->backoff_ms);
        return -ECONNREFUSED;
    }
    struct timeval tv = {.tv_sec = COMMAND_TIMEOUT_MS / 1000};
    redisSetTimeout(w->c, tv);
    for (int s = 0; s < RBP_S_COUNT; s++) {
        const char *a[] = {"SCRIPT", "LOAD", rbp_script_src[s]};
        size_t l[] = {6, 4, strlen(rbp_script_src[s])};
        redisReply *r = call(w, 3, a, l);
        if (!r)
            return -EIO;
        bool ok = r->type == REDIS_REPLY_STRING && r->len == 40;
        if (ok)
            memcpy(w->sha[s], r->str, 41);
        else
            rb_log(RB_LOG_ERROR, "redis_script_failed", "script=%d err=\"%.200s\"", s,
                   r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        if (!ok) {
            disconnect(w, "SCRIPT LOAD");
            return -EIO;
        }
    }
    atomic_fetch_add_explicit(&p->st.connects_ok, 1, memory_order_relaxed);
    atomic_store(&p->st.up, 1);
    atomic_store(&p->need_resync, 1); /* whatever happened meanwhile, rewrite the state */
    w->backoff_ms = 0;
    rb_log(RB_LOG_INFO, "redis_up", "role=writer node=%s", p->node);
    return refresh_node(w);
}

/* On stop: what is still queued, then everything this node held goes, and its key. */
static void leave(struct writer *w, uint64_t deadline_ms)
{
    struct rbp *p = w->p;
    while (w->c && rbp_mono_ms() < deadline_ms && write_events(w, BATCH_EVENTS, UINT64_MAX) > 0)
        ;
    if (!w->c)
        return;
    /* The engine has stopped: whatever is left of this node's presence goes (a resync without
     * sessions), also for connections the drain did not get to close one by one. */
    (void)p;
    if (resync(w, false) < 0)
        return;
    const char *d[] = {"DEL", w->k_node};
    size_t dl[] = {3, strlen(w->k_node)};
    redisReply *r = call(w, 2, d, dl);
    if (r)
        freeReplyObject(r);
}

static void sleep_until_work(struct writer *w, uint64_t until_ms)
{
    struct rbp_queue *q = &w->p->queue;
    uint64_t now = rbp_mono_ms();
    if (until_ms <= now)
        return;
    atomic_store(&q->sleeping, 1);
    if (rbp_queue_depth(q) && w->c) {
        atomic_store(&q->sleeping, 0);
        return;
    }
    /* The Redis socket too: nothing is owed, so it only becomes readable when Redis goes away
     * (EOF), which /metrics should say at once, not at the next write. */
    struct pollfd pfd[2] = {{.fd = q->wake_fd, .events = POLLIN},
                            {.fd = w->c ? w->c->fd : -1, .events = POLLIN | POLLRDHUP}};
    uint64_t wait = until_ms - now;
    int n = poll(pfd, 2, wait > 1000 ? 1000 : (int)wait);
    atomic_store(&q->sleeping, 0);
    if (n > 0 && w->c && pfd[1].revents && redisBufferRead(w->c) != REDIS_OK)
        disconnect(w, w->c->errstr[0] ? w->c->errstr : "connection closed");
    uint64_t v;
    ssize_t r = read(q->wake_fd, &v, sizeof(v));
    (void)r;
}

void *rbp_writer_main(void *arg)
{
    struct rbp *p = arg;
    pthread_setname_np(pthread_self(), "rb-redis-write");
    struct writer *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->p = p;
    w->rng = (uint64_t)rb_clock_ns() | 1;
    w->prefix_len = strlen(p->prefix);
    snprintf(w->k_events, sizeof(w->k_events), "%sevents", p->prefix);
    snprintf(w->k_nodes, sizeof(w->k_nodes), "%snodes", p->prefix);
    snprintf(w->k_node, sizeof(w->k_node), "%snode:%s", p->prefix, p->node);
    snprintf(w->k_clients, sizeof(w->k_clients), "%sclients:%s", p->prefix, p->node);
    snprintf(w->k_stale, sizeof(w->k_stale), "%sclients-stale:%s", p->prefix, p->node);
    while (!atomic_load(&p->stop)) {
        uint64_t now = rbp_mono_ms();
        if (!w->c) {
            if (now >= w->next_connect_ms)
                try_connect(w);
            if (!w->c) {
                sleep_until_work(w, w->next_connect_ms);
                continue;
            }
        }
        if (now >= w->next_refresh_ms && refresh_node(w) < 0)
            continue;
        int n = write_events(w, BATCH_EVENTS, UINT64_MAX);
        if (n < 0)
            continue;
        if (atomic_load(&p->need_resync) && rbp_queue_depth(&p->queue) < BATCH_EVENTS) {
            resync(w, true);
            continue;
        }
        if (n == 0)
            sleep_until_work(w, w->next_refresh_ms);
    }
    uint64_t deadline = rbp_mono_ms() + p->stop_deadline_ms;
    if (!w->c && p->stop_deadline_ms)
        try_connect(w);
    leave(w, deadline);
    if (w->c)
        redisFree(w->c);
    atomic_store(&p->st.up, 0);
    free(w);
    return NULL;
}
