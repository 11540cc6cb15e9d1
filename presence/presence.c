/* presence.c — the component's life cycle, the engine callbacks that feed it, its metrics. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

const uint32_t rbp_rtt_bounds_us[RBP_RTT_BUCKETS - 1] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};

void rbp_config_init(struct rbp_config *c)
{
    memset(c, 0, sizeof(*c));
    c->prefix = "ringbeat:";
    c->events_max = 1000000;
    c->node_ttl_ms = 30000;
    c->queue_events = 65536;
}

int rbp_create(const struct rbp_config *cfg, struct rbp **out)
{
    if (!cfg->node || !cfg->node[0] || strlen(cfg->node) > 64 || !cfg->prefix ||
        strlen(cfg->prefix) > 100 || cfg->node_ttl_ms < 3 || !cfg->queue_events ||
        (cfg->queue_events & (cfg->queue_events - 1)))
        return -EINVAL;
    struct rbp *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cfg = *cfg;
    int ret = 0;
    if (cfg->url) {
        if ((ret = rbp_url_parse(cfg->url, &p->target)) < 0) {
            free(p);
            return ret;
        }
        p->have_target = true;
    }
    p->node = strdup(cfg->node);
    p->prefix = strdup(cfg->prefix);
    p->password = cfg->password ? strdup(cfg->password) : NULL;
    if (!p->node || !p->prefix || (cfg->password && !p->password) ||
        (ret = rbp_table_init(&p->table)) < 0 ||
        (ret = rbp_queue_init(&p->queue, cfg->queue_events)) < 0) {
        rbp_destroy(p);
        return ret < 0 ? ret : -ENOMEM;
    }
    p->cfg.node = p->node;
    p->cfg.prefix = p->prefix;
    p->cfg.password = p->password;
    p->started_ms = rbp_wall_ms();
    atomic_init(&p->need_resync, 1); /* the first connection clears what an earlier run left */
    *out = p;
    return 0;
}

/* ---- callbacks (on the engine's worker threads: a lock and a queue push, nothing more) ---- */

static void push(struct rbp *p, struct rbp_entry *e, enum rbp_event_type type, int reason,
                 int64_t t_ms)
{
    if (!p->have_target) {
        rbp_entry_unref(e);
        return;
    }
    struct rbp_event ev = {
        .entry = e, .t_ms = t_ms, .type = (uint8_t)type, .reason = (uint16_t)reason};
    if (rbp_queue_push(&p->queue, &ev) < 0) {
        /* Redis cannot keep up or is away: the event is counted and the state rewritten later. */
        atomic_fetch_add_explicit(&p->st.dropped_full, 1, memory_order_relaxed);
        atomic_store(&p->need_resync, 1);
        rbp_entry_unref(e);
    }
}

static void on_open(struct rb_engine *eng, const struct rb_conn_info *info, void *user)
{
    struct rbp *p = user;
    if (info->proxy_local)
        return; /* the balancer's own connection (a health check) is nobody's presence */
    int64_t now = rbp_wall_ms();
    if (p->cfg.single_session && info->client_id_len) {
        /* Sessions of this id on this node go at once; those on other nodes get a close order
         * through their inbox when the open reaches Redis (the OPEN script). */
        uint64_t old[16];
        unsigned n =
            rbp_table_conns_of(&p->table, info->client_id, info->client_id_len, info->id, old, 16);
        for (unsigned i = 0; i < n; i++)
            if (rb_close(eng, old[i], RB_CLOSE_REPLACED) == 0)
                atomic_fetch_add_explicit(&p->st.replaced_local, 1, memory_order_relaxed);
    }
    struct rbp_entry *e =
        rbp_table_add(&p->table, info->id, info->client_id, info->client_id_len, now);
    if (!e) {
        atomic_fetch_add_explicit(&p->st.dropped_full, 1, memory_order_relaxed);
        atomic_store(&p->need_resync, 1);
        return;
    }
    rbp_entry_ref(e);
    push(p, e, RBP_EV_OPEN, 0, now);
}

static void on_liveness(struct rb_engine *eng, uint64_t id, enum rb_liveness from,
                        enum rb_liveness to, void *user)
{
    (void)eng;
    (void)from;
    struct rbp *p = user;
    if (to == RB_DEAD)
        return; /* the close follows */
    int64_t now = rbp_wall_ms();
    struct rbp_entry *e = rbp_table_set_state(&p->table, id, (uint8_t)to, now);
    if (e)
        push(p, e, to == RB_SUSPECT ? RBP_EV_SUSPECT : RBP_EV_ALIVE, 0, now);
}

static void on_close(struct rb_engine *eng, uint64_t id, int reason, int peer_code, void *user)
{
    (void)eng;
    (void)peer_code;
    struct rbp *p = user;
    struct rbp_entry *e = rbp_table_remove(&p->table, id);
    if (e)
        push(p, e, RBP_EV_CLOSE, reason, rbp_wall_ms()); /* the table's reference goes along */
}

void rbp_attach(struct rbp *p, struct rb_config *cfg)
{
    cfg->cb.on_open = on_open;
    cfg->cb.on_liveness = on_liveness;
    cfg->cb.on_close = on_close;
    cfg->user = p;
}

/* ---- life cycle ---- */

int rbp_start(struct rbp *p, struct rb_engine *e)
{
    p->engine = e;
    if (!p->have_target)
        return 0;
    int ret = pthread_create(&p->writer, NULL, rbp_writer_main, p);
    if (ret)
        return -ret;
    p->writer_started = true;
    ret = pthread_create(&p->inbox, NULL, rbp_inbox_main, p);
    if (ret) {
        rbp_stop(p, 0);
        return -ret;
    }
    p->inbox_started = true;
    return 0;
}

void rbp_stop(struct rbp *p, uint32_t deadline_ms)
{
    p->stop_deadline_ms = deadline_ms;
    atomic_store(&p->stop, 1);
    uint64_t one = 1;
    ssize_t r = write(p->queue.wake_fd, &one, sizeof(one));
    (void)r;
    if (p->inbox_started)
        pthread_join(p->inbox, NULL);
    if (p->writer_started)
        pthread_join(p->writer, NULL);
    p->inbox_started = p->writer_started = false;
}

void rbp_destroy(struct rbp *p)
{
    if (!p)
        return;
    rbp_stop(p, 0);
    rbp_queue_free(&p->queue);
    rbp_table_free(&p->table);
    free(p->node);
    free(p->prefix);
    if (p->password) {
        memset(p->password, 0, strlen(p->password));
        free(p->password);
    }
    free(p);
}

/* ---- metrics ---- */

struct out {
    char *buf;
    size_t cap, len;
};

static void __attribute__((format(printf, 2, 3))) emit(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = o->len < o->cap ? o->buf + o->len : NULL;
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static unsigned long long ld(_Atomic uint64_t *v)
{
    return (unsigned long long)atomic_load_explicit(v, memory_order_relaxed);
}

#define SERIES(o, name, type, help) emit(o, "# HELP " name " " help "\n# TYPE " name " " type "\n")

size_t rbp_metrics(char *buf, size_t cap, void *arg)
{
    struct rbp *p = arg;
    struct rbp_stats *s = &p->st;
    struct out o = {.buf = buf, .cap = cap};
    SERIES(&o, "ringbeat_redis_up", "gauge", "1 while the presence writer is connected to Redis.");
    emit(&o, "ringbeat_redis_up %d\n", atomic_load(&s->up));
    SERIES(&o, "ringbeat_redis_inbox_up", "gauge", "1 while the inbox reader is connected.");
    emit(&o, "ringbeat_redis_inbox_up %d\n", atomic_load(&s->inbox_up));
    SERIES(&o, "ringbeat_redis_queue_depth", "gauge", "Presence events waiting for the writer.");
    emit(&o, "ringbeat_redis_queue_depth %llu\n", (unsigned long long)rbp_queue_depth(&p->queue));
    SERIES(&o, "ringbeat_redis_queue_capacity", "gauge", "Bound of the presence event queue.");
    emit(&o, "ringbeat_redis_queue_capacity %u\n", p->cfg.queue_events);
    SERIES(&o, "ringbeat_redis_events_written_total", "counter",
           "Presence events written to Redis (stream entry and presence hash).");
    emit(&o, "ringbeat_redis_events_written_total %llu\n", ld(&s->written));
    SERIES(&o, "ringbeat_redis_events_dropped_total", "counter",
           "Presence events not written: queue full, or in flight when the link broke.");
    emit(&o, "ringbeat_redis_events_dropped_total{why=\"queue_full\"} %llu\n",
         ld(&s->dropped_full));
    emit(&o, "ringbeat_redis_events_dropped_total{why=\"link_lost\"} %llu\n", ld(&s->dropped_lost));
    SERIES(&o, "ringbeat_redis_resyncs_total", "counter",
           "Full rewrites of this node's presence (after a reconnect or dropped events).");
    emit(&o, "ringbeat_redis_resyncs_total %llu\n", ld(&s->resyncs));
    SERIES(&o, "ringbeat_redis_connects_total", "counter", "Connection attempts to Redis.");
    emit(&o, "ringbeat_redis_connects_total{result=\"ok\"} %llu\n", ld(&s->connects_ok));
    emit(&o, "ringbeat_redis_connects_total{result=\"failed\"} %llu\n", ld(&s->connects_failed));
    SERIES(&o, "ringbeat_redis_errors_total", "counter", "Error replies from Redis.");
    emit(&o, "ringbeat_redis_errors_total %llu\n", ld(&s->errors));
    SERIES(&o, "ringbeat_redis_roundtrip_seconds", "histogram",
           "Round trip of one pipelined batch of presence writes.");
    uint64_t cum = 0;
    for (int i = 0; i < RBP_RTT_BUCKETS - 1; i++) {
        cum += ld(&s->rtt_bucket[i]);
        emit(&o, "ringbeat_redis_roundtrip_seconds_bucket{le=\"%g\"} %llu\n",
             rbp_rtt_bounds_us[i] * 1e-6, (unsigned long long)cum);
    }
    cum += ld(&s->rtt_bucket[RBP_RTT_BUCKETS - 1]);
    uint64_t count = ld(&s->rtt_count);
    if (cum > count)
        count = cum;
    emit(&o, "ringbeat_redis_roundtrip_seconds_bucket{le=\"+Inf\"} %llu\n",
         (unsigned long long)count);
    emit(&o, "ringbeat_redis_roundtrip_seconds_sum %.9g\n", (double)ld(&s->rtt_sum_us) * 1e-6);
    emit(&o, "ringbeat_redis_roundtrip_seconds_count %llu\n", (unsigned long long)count);
    SERIES(&o, "ringbeat_inbox_messages_total", "counter",
           "Inbox stream entries, by what became of them (every one is acknowledged).");
    emit(&o, "ringbeat_inbox_messages_total{result=\"delivered\"} %llu\n", ld(&s->inbox_delivered));
    emit(&o, "ringbeat_inbox_messages_total{result=\"undeliverable\"} %llu\n",
         ld(&s->inbox_undeliverable));
    emit(&o, "ringbeat_inbox_messages_total{result=\"failed\"} %llu\n", ld(&s->inbox_failed));
    emit(&o, "ringbeat_inbox_messages_total{result=\"malformed\"} %llu\n", ld(&s->inbox_malformed));
    SERIES(&o, "ringbeat_sessions_replaced_total", "counter",
           "Sessions closed as replaced (--single-session), by where the newer one opened.");
    emit(&o, "ringbeat_sessions_replaced_total{where=\"this_node\"} %llu\n",
         ld(&s->replaced_local));
    emit(&o, "ringbeat_sessions_replaced_total{where=\"other_node\"} %llu\n",
         ld(&s->replaced_remote));
    emit(&o, "ringbeat_sessions_replaced_total{where=\"stale_order\"} %llu\n",
         ld(&s->replaced_stale));
    pthread_mutex_lock(&p->table.lock);
    uint32_t entries = p->table.entries, with_id = p->table.with_id;
    pthread_mutex_unlock(&p->table.lock);
    SERIES(&o, "ringbeat_presence_sessions", "gauge",
           "Sessions in this node's client table, with and without a client id.");
    emit(&o, "ringbeat_presence_sessions{client_id=\"yes\"} %u\n", with_id);
    emit(&o, "ringbeat_presence_sessions{client_id=\"no\"} %u\n", entries - with_id);
    return o.len;
}
