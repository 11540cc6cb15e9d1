/* engine.c — engine life cycle: configuration, listeners, worker threads, cross-thread calls. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

void rb_config_init(struct rb_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = RB_MODE_SERVER;
    cfg->interval_ms = 30000;
    cfg->min_interval_ms = 1000;
    cfg->max_interval_ms = 3600000;
    cfg->tick_ms = 10;
    cfg->max_conns = 1048576;
    cfg->max_frame = 4096;
    cfg->ring_entries = 512;
    cfg->buffers = 128;
    cfg->buffer_size = 1024;
    cfg->batch_size = 64;
    cfg->drain_timeout_ms = 5000;
    cfg->max_pending_out = 65536;
}

/* Fills in derived defaults and refuses settings the engine cannot honour. */
static int config_normalize(struct rb_config *c)
{
    if (!c->timeout_ms)
        c->timeout_ms = c->interval_ms > UINT32_MAX / 3 ? UINT32_MAX : c->interval_ms * 3;
    if (!c->max_timeout_ms)
        c->max_timeout_ms =
            c->max_interval_ms > UINT32_MAX / 4 ? UINT32_MAX : c->max_interval_ms * 4;
    if (!c->listen_count) {
        c->listen[0] = "0.0.0.0:7600";
        c->listen_count = 1;
    }
    if (!c->workers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (unsigned)n : 1;
    }
    if (!c->batch_size)
        c->batch_size = 1;
    if (c->proxy_protocol && !c->proxy_from_count) {
        /* Only a balancer on this machine, unless the operator names others. */
        rb_parse_cidr("127.0.0.0/8", &c->proxy_from[0]);
        rb_parse_cidr("::1", &c->proxy_from[1]);
        c->proxy_from_count = 2;
    }
    /* One limit for any opening handshake (TLS, a WebSocket upgrade): 5 s, or the heartbeat
     * timeout when that is shorter (a peer is never given longer to open than to live). */
    if (!c->handshake_timeout_ms)
        c->handshake_timeout_ms = c->timeout_ms < 5000 ? c->timeout_ms : 5000;
    if (!c->tls_handshake_budget)
        c->tls_handshake_budget = 8;
    if (c->interval_ms == 0 || c->timeout_ms <= c->interval_ms || c->tick_ms == 0 ||
        c->min_interval_ms == 0 || c->min_interval_ms > c->max_interval_ms ||
        c->max_timeout_ms <= c->min_interval_ms || c->listen_count > RB_LISTEN_MAX ||
        c->max_conns == 0 || c->max_frame == 0 || c->max_frame > 65535 || c->workers > 256 ||
        c->ring_entries < 8 || c->ring_entries > 32768 || c->buffers == 0 ||
        (c->buffers & (c->buffers - 1)) || c->buffers > 32768 || c->buffer_size < 64 ||
        c->max_pending_out < RB__CONTROL_MAX + c->max_frame + RB_FRAME_HEADER_LEN ||
        c->timeout_ms > (1u << 30) || c->mode > RB_MODE_KERNEL ||
        c->handshake_timeout_ms > (1u << 30))
        return -EINVAL;
    return 0;
}

/* Every listener's protocol and transport, known before anything starts: a TLS listener needs
 * the certificate loaded at create time, where a bad file is reported. A listener that does not
 * parse is reported by rb_engine_start, as it always was. */
static int parse_listeners(struct rb_engine *e)
{
    bool tls = false;
    for (unsigned i = 0; i < e->cfg.listen_count && !e->listen_error; i++) {
        struct rb__listener *l = &e->listeners[i];
        int ret = rb_parse_listen(e->cfg.listen[i], &l->spec);
        if (ret == 0 && !(l->codec = rb__codec_find(l->spec.protocol)))
            ret = -EPROTONOSUPPORT;
        e->listen_error = ret;
        tls |= ret == 0 && l->spec.transport == RB_TRANSPORT_TLS;
    }
    /* Over TLS the queue also holds one record's overhead per frame, and a close_notify. */
    if (tls && e->cfg.max_pending_out < RB__CONTROL_MAX + e->cfg.max_frame + RB_FRAME_HEADER_LEN +
                                            8 * RB_TLS_SEAL_OVERHEAD + RB_TLS_REPLY_MAX)
        return -EINVAL;
    return tls ? rb__tls_engine_init(e) : 0;
}

int rb_engine_create(const struct rb_config *cfg, struct rb_engine **out)
{
    struct rb_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->cfg = *cfg;
    int ret = config_normalize(&e->cfg);
    if (ret < 0) {
        free(e);
        return ret;
    }
    e->nworkers = e->cfg.workers;
    if ((ret = parse_listeners(e)) < 0) {
        free(e);
        return ret;
    }

    /* Direct descriptors do not count against RLIMIT_NOFILE, but each ring's table may not be
     * larger than it: capacity comes from more rings, opened as tables fill. */
    struct rlimit rl;
    uint64_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    uint64_t per_worker = ((uint64_t)e->cfg.max_conns + e->nworkers - 1) / e->nworkers;
    per_worker = per_worker + per_worker / 4 + 1024; /* SO_REUSEPORT spreads unevenly */
    uint64_t slots = e->cfg.slots_per_ring ? e->cfg.slots_per_ring : per_worker;
    if (slots > limit)
        slots = limit;
    if (slots >= RB__MAX_SLOTS)
        slots = RB__MAX_SLOTS - 1;
    if (slots < 16) {
        rb__tls_engine_free(e);
        free(e);
        return -EINVAL;
    }
    e->slots_per_ring = (uint32_t)slots;
    uint64_t rings = (per_worker + slots - 1) / slots + 1;
    if (rings * e->nworkers > RB__MAX_RINGS)
        rings = RB__MAX_RINGS / e->nworkers;
    e->rings_per_worker_max = (unsigned)rings;

    e->ring_by_gindex = calloc((size_t)e->nworkers * rings, sizeof(*e->ring_by_gindex));
    e->workers = calloc(e->nworkers, sizeof(*e->workers));
    if (!e->ring_by_gindex || !e->workers) {
        free(e->ring_by_gindex);
        free(e->workers);
        rb__tls_engine_free(e);
        free(e);
        return -ENOMEM;
    }
    atomic_init(&e->auth, e->cfg.auth);
    e->epoch_ns = rb_clock_ns() - 1000000000ULL; /* keeps the clock's first values non-zero */
    if (getrandom(&e->token_key, sizeof(e->token_key), GRND_NONBLOCK) != sizeof(e->token_key))
        e->token_key = rb_clock_ns() * 0x9E3779B97F4A7C15ULL;
    pthread_mutex_init(&e->start_lock, NULL);
    pthread_mutex_init(&e->ip_lock, NULL);
    pthread_cond_init(&e->start_cond, NULL);
    for (unsigned i = 0; i < e->nworkers; i++) {
        ret = rb__worker_init(&e->workers[i], e, i);
        if (ret < 0) {
            rb_engine_destroy(e);
            return ret;
        }
    }
    *out = e;
    return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/*
 * One listener per worker and address, joined by SO_REUSEPORT, so the kernel spreads arrivals
 * over the workers. Options set here are inherited by every accepted socket, which spares an
 * SQE per connection: TCP_USER_TIMEOUT (a peer that stops acknowledging our data is dropped by
 * the kernel too) and TCP_NODELAY (heartbeats are single small frames).
 */
static int open_listener(struct rb_engine *e, unsigned i, int *out_fd)
{
    struct sockaddr_storage *ss = &e->listeners[i].spec.addr;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    unsigned timeout_ms = e->cfg.timeout_ms;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof(timeout_ms));
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int ret = 0;
    /* A restarted server may find its old sockets still being torn down: retry a moment. */
    for (int attempt = 0; attempt < 40; attempt++) {
        ret = bind(fd, (struct sockaddr *)ss, e->listeners[i].spec.addr_len) == 0 ? 0 : -errno;
        if (ret != -EADDRINUSE)
            break;
        usleep(50000);
    }
    if (ret == 0 && listen(fd, 4096) < 0)
        ret = -errno;
    if (ret == 0 && get_port(ss) == 0) {
        socklen_t len = e->listeners[i].spec.addr_len;
        if (getsockname(fd, (struct sockaddr *)ss, &len) < 0)
            ret = -errno;
    }
    if (ret < 0) {
        close(fd);
        return ret;
    }
    *out_fd = fd;
    return 0;
}

int rb_engine_start(struct rb_engine *e)
{
    int ret;
    if (e->listen_error)
        return e->listen_error;
    for (unsigned i = 0; i < e->cfg.listen_count; i++) {
        struct rb__listener *l = &e->listeners[i];
        if (l->codec->prepare && (ret = l->codec->prepare(&e->cfg)) < 0)
            return ret;
        /* Port 0: the first worker's bind picks the port, the others join it. */
        for (unsigned w = 0; w < e->nworkers; w++) {
            if ((ret = open_listener(e, i, &e->workers[w].listen_fd[i])) < 0)
                return ret;
        }
        l->port = get_port(&l->spec.addr);
        set_port(&l->spec.addr, l->port);
    }
    for (unsigned w = 0; w < e->nworkers; w++) {
        ret = pthread_create(&e->workers[w].thread, NULL, rb__worker_main, &e->workers[w]);
        if (ret) {
            rb_engine_stop(e);
            return -ret;
        }
        e->workers[w].thread_started = true;
    }
    pthread_mutex_lock(&e->start_lock);
    while (e->started + e->start_failed < e->nworkers)
        pthread_cond_wait(&e->start_cond, &e->start_lock);
    ret = e->start_error;
    pthread_mutex_unlock(&e->start_lock);
    if (ret < 0) {
        rb_engine_stop(e);
        return ret;
    }
    for (unsigned i = 0; i < e->cfg.listen_count; i++) {
        char host[INET6_ADDRSTRLEN] = "?";
        const struct rb__listener *l = &e->listeners[i];
        const struct sockaddr_storage *ss = &l->spec.addr;
        inet_ntop(ss->ss_family,
                  ss->ss_family == AF_INET
                      ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                      : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr,
                  host, sizeof(host));
        rb_log(RB_LOG_INFO, "listening",
               ss->ss_family == AF_INET6
                   ? "addr=[%s]:%u protocol=%s transport=%s workers=%u slots_per_ring=%u "
                     "max_rings_per_worker=%u"
                   : "addr=%s:%u protocol=%s transport=%s workers=%u slots_per_ring=%u "
                     "max_rings_per_worker=%u",
               host, l->port, l->codec->name, rb_transport_name(l->spec.transport), e->nworkers,
               e->slots_per_ring, e->rings_per_worker_max);
    }
    return 0;
}

void rb_engine_stop(struct rb_engine *e)
{
    atomic_store_explicit(&e->stop, 1, memory_order_release);
    for (unsigned w = 0; w < e->nworkers; w++)
        if (e->workers[w].wake_fd >= 0)
            rb__worker_wake(&e->workers[w]);
}

int rb_engine_error(struct rb_engine *e)
{
    for (unsigned w = 0; w < e->nworkers; w++) {
        int err = __atomic_load_n(&e->workers[w].error, __ATOMIC_ACQUIRE);
        if (err)
            return err;
    }
    return 0;
}

int rb_engine_wait(struct rb_engine *e)
{
    int ret = 0;
    for (unsigned w = 0; w < e->nworkers; w++) {
        if (e->workers[w].thread_started) {
            pthread_join(e->workers[w].thread, NULL);
            e->workers[w].thread_started = false;
        }
        if (e->workers[w].error && !ret)
            ret = e->workers[w].error;
    }
    return ret;
}

void rb_engine_destroy(struct rb_engine *e)
{
    if (!e)
        return;
    rb_engine_stop(e);
    rb_engine_wait(e);
    for (unsigned w = 0; w < e->nworkers; w++)
        rb__worker_destroy(&e->workers[w]);
    pthread_mutex_destroy(&e->start_lock);
    pthread_mutex_destroy(&e->ip_lock);
    free(e->ip_table);
    pthread_cond_destroy(&e->start_cond);
    free(e->workers);
    free(e->ring_by_gindex);
    rb__tls_engine_free(e);
    free(e);
}

uint16_t rb_engine_port(const struct rb_engine *e, unsigned listener)
{
    return listener < e->cfg.listen_count ? e->listeners[listener].port : 0;
}

int rb_engine_tls_reload(struct rb_engine *e)
{
    if (!e->tls)
        return -ENOTSUP;
    return rb_tls_ctx_reload(e->tls, e->cfg.tls_cert_file, e->cfg.tls_key_file);
}

/* The unit a per-address limit counts: an IPv4 address, or an IPv6 /64 (one subscriber's prefix).
 */
uint64_t rb__ip_key(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return 1ULL << 63 | ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return 1ULL << 63 | (uint64_t)a->s6_addr[12] << 24 | (uint64_t)a->s6_addr[13] << 16 |
                   (uint64_t)a->s6_addr[14] << 8 | a->s6_addr[15];
        uint64_t k = 0;
        for (int i = 0; i < 8; i++)
            k = k << 8 | a->s6_addr[i];
        return (k & ~(1ULL << 63)) | 1;
    }
    return 0;
}

static uint32_t ip_slot(const struct rb_engine *e, uint64_t key)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & e->ip_mask;
}

/* Open addressing with linear probing; the table doubles at half load. Caller holds ip_lock. */
static int ip_grow(struct rb_engine *e)
{
    uint32_t cap = e->ip_table ? (e->ip_mask + 1) * 2 : 1024;
    struct rb__ip_count *old = e->ip_table, *n = calloc(cap, sizeof(*n));
    uint32_t old_cap = old ? e->ip_mask + 1 : 0;
    if (!n)
        return -ENOMEM;
    e->ip_table = n;
    e->ip_mask = cap - 1;
    for (uint32_t i = 0; i < old_cap; i++) {
        if (!old[i].key)
            continue;
        uint32_t j = ip_slot(e, old[i].key);
        while (n[j].key)
            j = (j + 1) & e->ip_mask;
        n[j] = old[i];
    }
    free(old);
    return 0;
}

int rb__ip_acquire(struct rb_engine *e, uint64_t key)
{
    int ret = 0;
    pthread_mutex_lock(&e->ip_lock);
    if ((!e->ip_table || (e->ip_used + 1) * 2 > e->ip_mask + 1) && (ret = ip_grow(e)) < 0)
        goto out;
    uint32_t i = ip_slot(e, key);
    while (e->ip_table[i].key && e->ip_table[i].key != key)
        i = (i + 1) & e->ip_mask;
    if (!e->ip_table[i].key) {
        e->ip_table[i].key = key;
        e->ip_used++;
    } else if (e->ip_table[i].count >= e->cfg.max_conns_per_ip) {
        ret = -EDQUOT;
        goto out;
    }
    e->ip_table[i].count++;
out:
    pthread_mutex_unlock(&e->ip_lock);
    return ret;
}

void rb__ip_release(struct rb_engine *e, uint64_t key)
{
    pthread_mutex_lock(&e->ip_lock);
    uint32_t i = ip_slot(e, key);
    while (e->ip_table && e->ip_table[i].key && e->ip_table[i].key != key)
        i = (i + 1) & e->ip_mask;
    if (e->ip_table && e->ip_table[i].key == key && --e->ip_table[i].count == 0) {
        /* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
        uint32_t hole = i, j = i;
        for (;;) {
            j = (j + 1) & e->ip_mask;
            if (!e->ip_table[j].key)
                break;
            uint32_t home = ip_slot(e, e->ip_table[j].key);
            if (((j - home) & e->ip_mask) >= ((j - hole) & e->ip_mask)) {
                e->ip_table[hole] = e->ip_table[j];
                hole = j;
            }
        }
        e->ip_table[hole].key = 0;
        e->ip_table[hole].count = 0;
        e->ip_used--;
    }
    pthread_mutex_unlock(&e->ip_lock);
}

void rb_engine_set_auth(struct rb_engine *e, const struct rb_auth *auth)
{
    atomic_store_explicit(&e->auth, auth, memory_order_release);
}

void rb_engine_set_metrics_extra(struct rb_engine *e, rb_metrics_extra_fn fn, void *user)
{
    atomic_store_explicit(&e->metrics_extra_user, user, memory_order_relaxed);
    atomic_store_explicit(&e->metrics_extra, fn, memory_order_release);
}

size_t rb__engine_metrics_extra(struct rb_engine *e, char *buf, size_t cap);
size_t rb__engine_metrics_extra(struct rb_engine *e, char *buf, size_t cap)
{
    rb_metrics_extra_fn fn = atomic_load_explicit(&e->metrics_extra, memory_order_acquire);
    if (!fn)
        return 0;
    return fn(buf, cap, atomic_load_explicit(&e->metrics_extra_user, memory_order_relaxed));
}

static struct rb__worker *owner_of(struct rb_engine *e, uint64_t id)
{
    uint32_t gring = rb__id_ring(id);
    if (gring >= e->nworkers * e->rings_per_worker_max)
        return NULL;
    return &e->workers[gring / e->rings_per_worker_max];
}

static int send_kind(struct rb_engine *e, uint64_t id, enum rb_data_kind kind, const void *data,
                     size_t len)
{
    struct rb__worker *w = owner_of(e, id);
    if (!w)
        return -ENOENT;
    if (len > e->cfg.max_frame)
        return -EMSGSIZE;
    if (rb__current_worker == w) {
        struct rb__conn *c = rb__conn_lookup(w, id);
        return c ? rb__sess_send(w, c, kind, data, len) : -ENOENT;
    }
    struct rb__msg m = {
        .id = id, .len = (uint32_t)len, .kind = (uint8_t)kind, .data = malloc(len ? len : 1)};
    if (!m.data)
        return -ENOMEM;
    memcpy(m.data, data, len);
    int ret = rb__worker_post(w, &m);
    if (ret < 0)
        free(m.data);
    return ret;
}

int rb_send(struct rb_engine *e, uint64_t id, const void *data, size_t len)
{
    return send_kind(e, id, RB_DATA_BINARY, data, len);
}

int rb_send_text(struct rb_engine *e, uint64_t id, const char *text, size_t len)
{
    if (!rb__utf8_valid((const uint8_t *)text, len))
        return -EILSEQ;
    return send_kind(e, id, RB_DATA_TEXT, text, len);
}

int rb_close(struct rb_engine *e, uint64_t id, uint16_t code)
{
    struct rb__worker *w = owner_of(e, id);
    if (!w)
        return -ENOENT;
    if (rb__current_worker == w) {
        struct rb__conn *c = rb__conn_lookup(w, id);
        if (!c)
            return -ENOENT;
        rb__conn_release(w, c, code ? code : RB_CLOSE_NORMAL, 0);
        return 0;
    }
    struct rb__msg m = {.id = id, .code = code};
    return rb__worker_post(w, &m);
}

/* v1's per-type output counts are the protocol-neutral ones under v1's names. */
static void derive_v1_frames_out(struct rb_stats *s)
{
    const struct rb_proto_stats *v1 = &s->proto[RB_PROTOCOL_V1];
    s->frames_out[RB_FRAME_WELCOME] = v1->welcomes_out;
    s->frames_out[RB_FRAME_PING] = v1->pings_out;
    s->frames_out[RB_FRAME_PONG] = v1->pongs_out;
    s->frames_out[RB_FRAME_DATA] = v1->data_out;
    s->frames_out[RB_FRAME_CLOSE] = v1->closes_out;
}

int rb_engine_worker_stats(struct rb_engine *e, unsigned worker, struct rb_stats *out)
{
    if (worker >= e->nworkers)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    rb__stats_add(out, &e->workers[worker].stats);
    derive_v1_frames_out(out);
    return 0;
}

void rb_engine_stats(struct rb_engine *e, struct rb_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned w = 0; w < e->nworkers; w++)
        rb__stats_add(out, &e->workers[w].stats);
    derive_v1_frames_out(out);
    if (e->tls) { /* engine-wide, kept by the shared context */
        struct rb_tls_counters k;
        rb_tls_ctx_counters(e->tls, &k);
        out->tls.reloads = k.reloads;
        out->tls.rotations = k.rotations;
    }
}
