/* test_embed.c — the embedding API (callbacks, rb_send/rb_close, stats, stop) over real loopback
 * sockets. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ringbeat.h"

/* ---- time ---------------------------------------------------------------------------------- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- event log: callbacks append on worker threads, the test thread waits with deadlines ---- */

enum ev_kind { EV_OPEN = 1, EV_DATA, EV_LIVENESS, EV_CLOSE };

struct ev {
    enum ev_kind kind;
    uint64_t id;
    uint64_t t_us; /* when the callback ran */
    pthread_t thread;
    /* on_open */
    unsigned worker;
    enum rb_mode mode;
    uint32_t interval_ms, timeout_ms;
    char client_id[RB_CLIENT_ID_MAX];
    size_t client_id_len;
    struct sockaddr_storage peer;
    /* on_data */
    uint8_t data[64];
    size_t len;
    int send_rc; /* what rb_send from inside the callback returned; 1: not called */
    /* on_liveness */
    enum rb_liveness from, to;
    /* on_close */
    int reason, peer_code;
};

#define EV_MAX      512
#define CLIENTS_MAX 48
#define ANY         (-1)

struct client;

struct fx {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct ev ev[EV_MAX];
    size_t nev;
    bool overflow;
    /* Behaviour of the callbacks; set before rb_engine_start, read-only afterwards. */
    bool reply_upper;   /* on_data answers with the payload in upper case, via rb_send */
    bool send_in_close; /* on_close calls rb_send for the id being closed */
    uint64_t probe_id;  /* under lock: on_data "probe" sends to this id from the worker */
    struct rb_engine *e;
    uint16_t port;
    struct client *clients[CLIENTS_MAX];
    struct fx *other; /* a second engine of the same test, torn down with this one */
};

static void ev_push(struct fx *fx, const struct ev *ev)
{
    pthread_mutex_lock(&fx->lock);
    if (fx->nev < EV_MAX) {
        fx->ev[fx->nev] = *ev;
        fx->ev[fx->nev].t_us = mono_us();
        fx->ev[fx->nev].thread = pthread_self();
        fx->nev++;
    } else {
        fx->overflow = true;
    }
    pthread_cond_broadcast(&fx->cond);
    pthread_mutex_unlock(&fx->lock);
}

static void cb_open(struct rb_engine *e, const struct rb_conn_info *info, void *user)
{
    (void)e;
    struct ev ev = {.kind = EV_OPEN,
                    .id = info->id,
                    .worker = info->worker,
                    .mode = info->mode,
                    .interval_ms = info->interval_ms,
                    .timeout_ms = info->timeout_ms,
                    .peer = info->peer};
    ev.client_id_len = info->client_id_len;
    if (info->client_id_len <= RB_CLIENT_ID_MAX && info->client_id_len)
        memcpy(ev.client_id, info->client_id, info->client_id_len);
    ev_push(user, &ev);
}

static void cb_data(struct rb_engine *e, uint64_t id, enum rb_data_kind kind, const void *data,
                    size_t len, void *user)
{
    struct fx *fx = user;
    assert_int_equal(kind, RB_DATA_BINARY); /* v1 DATA is binary */
    struct ev ev = {.kind = EV_DATA, .id = id, .len = len, .send_rc = 1};
    memcpy(ev.data, data, len < sizeof(ev.data) ? len : sizeof(ev.data));
    if (len == 5 && memcmp(data, "probe", 5) == 0) {
        pthread_mutex_lock(&fx->lock);
        uint64_t probe = fx->probe_id;
        pthread_mutex_unlock(&fx->lock);
        ev.send_rc = rb_send(e, probe, "stale", 5);
    } else if (fx->reply_upper) {
        uint8_t up[256];
        size_t n = len < sizeof(up) ? len : sizeof(up);
        for (size_t i = 0; i < n; i++) {
            uint8_t c = ((const uint8_t *)data)[i];
            up[i] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 32) : c;
        }
        ev.send_rc = rb_send(e, id, up, n);
    }
    ev_push(fx, &ev);
}

static void cb_liveness(struct rb_engine *e, uint64_t id, enum rb_liveness from,
                        enum rb_liveness to, void *user)
{
    (void)e;
    struct ev ev = {.kind = EV_LIVENESS, .id = id, .from = from, .to = to};
    ev_push(user, &ev);
}

static void cb_close(struct rb_engine *e, uint64_t id, int reason, int peer_code, void *user)
{
    struct fx *fx = user;
    struct ev ev = {
        .kind = EV_CLOSE, .id = id, .reason = reason, .peer_code = peer_code, .send_rc = 1};
    if (fx->send_in_close)
        ev.send_rc = rb_send(e, id, "late", 4);
    ev_push(fx, &ev);
}

static bool ev_match(const struct ev *ev, enum ev_kind kind, uint64_t id, int aux)
{
    if (ev->kind != kind || (id && ev->id != id))
        return false;
    if (aux == ANY)
        return true;
    if (kind == EV_LIVENESS)
        return (int)ev->to == aux;
    if (kind == EV_CLOSE)
        return ev->reason == aux;
    return true;
}

/*
 * Waits until the log holds an event of `kind` for `id` (0: any id); aux narrows it (liveness:
 * the new state; close: the reason). Copies the first match into *out; false at the deadline.
 */
static bool fx_wait(struct fx *fx, enum ev_kind kind, uint64_t id, int aux, int timeout_ms,
                    struct ev *out)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    bool found = false;
    pthread_mutex_lock(&fx->lock);
    for (;;) {
        for (size_t i = 0; i < fx->nev && !found; i++) {
            if (ev_match(&fx->ev[i], kind, id, aux)) {
                if (out)
                    *out = fx->ev[i];
                found = true;
            }
        }
        if (found || pthread_cond_timedwait(&fx->cond, &fx->lock, &dl) == ETIMEDOUT)
            break;
    }
    if (!found) { /* one last look: the event may have come with the timeout */
        for (size_t i = 0; i < fx->nev && !found; i++) {
            if (ev_match(&fx->ev[i], kind, id, aux)) {
                if (out)
                    *out = fx->ev[i];
                found = true;
            }
        }
    }
    pthread_mutex_unlock(&fx->lock);
    return found;
}

static size_t fx_count(struct fx *fx, enum ev_kind kind, uint64_t id, int aux)
{
    size_t n = 0;
    pthread_mutex_lock(&fx->lock);
    for (size_t i = 0; i < fx->nev; i++)
        n += ev_match(&fx->ev[i], kind, id, aux);
    pthread_mutex_unlock(&fx->lock);
    return n;
}

static struct ev must_wait(struct fx *fx, enum ev_kind kind, uint64_t id, int aux, int timeout_ms)
{
    struct ev ev;
    if (!fx_wait(fx, kind, id, aux, timeout_ms, &ev))
        fail_msg("no event kind=%d id=%#llx aux=%d within %d ms", kind, (unsigned long long)id, aux,
                 timeout_ms);
    return ev;
}

/* ---- engine fixture -------------------------------------------------------------------------- */

static struct fx *fx_new(void)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fx->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&fx->lock, NULL);
    return fx;
}

static void client_free(struct client *cl);

static void fx_free(struct fx *fx)
{
    if (!fx)
        return;
    for (int i = 0; i < CLIENTS_MAX; i++)
        client_free(fx->clients[i]);
    rb_engine_destroy(fx->e); /* stops and waits if still running */
    assert_false(fx->overflow);
    fx_free(fx->other);
    pthread_mutex_destroy(&fx->lock);
    pthread_cond_destroy(&fx->cond);
    free(fx);
}

static int setup(void **state)
{
    *state = fx_new();
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* The defaults of these tests: two workers, an ephemeral loopback port, 1 s / 3 s heartbeats. */
static void fx_config(struct fx *fx, struct rb_config *cfg)
{
    rb_config_init(cfg);
    cfg->listen[0] = "127.0.0.1:0";
    cfg->listen_count = 1;
    cfg->workers = 2;
    cfg->interval_ms = 1000;
    cfg->timeout_ms = 3000;
    cfg->min_interval_ms = 1000;
    cfg->drain_timeout_ms = 2000;
    cfg->cb.on_open = cb_open;
    cfg->cb.on_data = cb_data;
    cfg->cb.on_liveness = cb_liveness;
    cfg->cb.on_close = cb_close;
    cfg->user = fx;
}

static void fx_start(struct fx *fx, const struct rb_config *cfg)
{
    assert_int_equal(rb_engine_create(cfg, &fx->e), 0);
    assert_int_equal(rb_engine_start(fx->e), 0);
    fx->port = rb_engine_port(fx->e, 0);
    assert_int_not_equal(fx->port, 0);
    assert_int_equal(rb_engine_port(fx->e, 1), 0);
}

static void fx_start_default(struct fx *fx)
{
    struct rb_config cfg;
    fx_config(fx, &cfg);
    fx_start(fx, &cfg);
}

/* ---- protocol v1 client ---------------------------------------------------------------------- */

struct client {
    int fd;
    uint16_t local_port;
    size_t len;
    uint8_t buf[16384];
};

struct frame {
    uint8_t type, flags;
    uint16_t len;
    uint8_t payload[8192];
};

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)get_u16(p) << 16 | get_u16(p + 2);
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static struct client *client_open(struct fx *fx, uint16_t port)
{
    struct client *cl = calloc(1, sizeof(*cl));
    assert_non_null(cl);
    cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(cl->fd >= 0);
    int i = 0;
    while (i < CLIENTS_MAX && fx->clients[i])
        i++;
    assert_true(i < CLIENTS_MAX);
    fx->clients[i] = cl; /* registered before anything can fail, so teardown closes it */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int one = 1;
    setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    assert_int_equal(getsockname(cl->fd, (struct sockaddr *)&me, &len), 0);
    cl->local_port = ntohs(me.sin_port);
    return cl;
}

static void client_free(struct client *cl)
{
    if (!cl)
        return;
    if (cl->fd >= 0)
        close(cl->fd);
    free(cl);
}

/* Closes the socket now (the record stays registered and is freed by the teardown). */
static void client_close(struct client *cl)
{
    close(cl->fd);
    cl->fd = -1;
}

static void send_raw(struct client *cl, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r = send(cl->fd, b, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r > 0);
        b += r;
        n -= (size_t)r;
    }
}

static void send_frame(struct client *cl, uint8_t type, const void *payload, uint16_t len)
{
    uint8_t f[4 + 65535];
    f[0] = type;
    f[1] = 0;
    put_u16(f + 2, len);
    if (len)
        memcpy(f + 4, payload, len);
    send_raw(cl, f, 4u + len);
}

static void send_hello(struct client *cl, enum rb_mode mode, uint32_t interval_ms,
                       uint32_t timeout_ms, const char *client_id)
{
    uint8_t p[12 + RB_CLIENT_ID_MAX];
    size_t idlen = client_id ? strlen(client_id) : 0;
    assert_true(idlen <= RB_CLIENT_ID_MAX);
    p[0] = RB_PROTO_VERSION;
    p[1] = (uint8_t)mode;
    put_u16(p + 2, 0);
    put_u32(p + 4, interval_ms);
    put_u32(p + 8, timeout_ms);
    memcpy(p + 12, client_id, idlen);
    send_frame(cl, RB_FRAME_HELLO, p, (uint16_t)(12 + idlen));
}

static void send_ping(struct client *cl, uint64_t token)
{
    uint8_t p[8];
    put_u64(p, token);
    send_frame(cl, RB_FRAME_PING, p, 8);
}

static void send_close(struct client *cl, uint16_t code)
{
    uint8_t p[2];
    put_u16(p, code);
    send_frame(cl, RB_FRAME_CLOSE, p, 2);
}

/* 0 and the next frame; -ETIMEDOUT at the deadline; -EPIPE on EOF; another -errno on error. */
static int read_frame(struct client *cl, struct frame *f, int timeout_ms)
{
    uint64_t deadline = mono_us() + (uint64_t)timeout_ms * 1000u;
    for (;;) {
        if (cl->len >= 4) {
            uint16_t n = get_u16(cl->buf + 2);
            if (n > sizeof(f->payload))
                fail_msg("server frame type %u announces %u bytes", cl->buf[0], n);
            if (cl->len >= 4u + n) {
                f->type = cl->buf[0];
                f->flags = cl->buf[1];
                f->len = n;
                memcpy(f->payload, cl->buf + 4, n);
                memmove(cl->buf, cl->buf + 4 + n, cl->len - 4 - n);
                cl->len -= 4u + n;
                return 0;
            }
        }
        /* Polls at least once, so a zero timeout still sees what has already arrived. */
        uint64_t now = mono_us();
        struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, now >= deadline ? 0 : (int)((deadline - now + 999) / 1000));
        if (pr < 0 && errno == EINTR)
            continue;
        assert_true(pr >= 0);
        if (pr == 0) {
            if (mono_us() >= deadline)
                return -ETIMEDOUT;
            continue;
        }
        ssize_t r = recv(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - cl->len, 0);
        if (r == 0)
            return -EPIPE;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        cl->len += (size_t)r;
    }
}

static void expect_frame(struct client *cl, uint8_t type, struct frame *f, int timeout_ms)
{
    int rc = read_frame(cl, f, timeout_ms);
    if (rc != 0)
        fail_msg("expected frame type %u, got %s", type, strerror(-rc));
    if (f->type != type)
        fail_msg("expected frame type %u, got type %u (len %u)", type, f->type, f->len);
    assert_int_equal(f->flags, 0);
}

static void expect_close_frame(struct client *cl, uint16_t code, int timeout_ms)
{
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    expect_frame(cl, RB_FRAME_CLOSE, f, timeout_ms);
    assert_true(f->len >= 2);
    assert_int_equal(get_u16(f->payload), code);
    free(f);
}

/* The server must close the connection without sending any further frame. */
static void expect_eof(struct client *cl, int timeout_ms)
{
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    int rc = read_frame(cl, f, timeout_ms);
    if (rc == 0)
        fail_msg("frame type %u after the connection should have closed", f->type);
    if (rc != -EPIPE && rc != -ECONNRESET)
        fail_msg("expected EOF, got %s", strerror(-rc));
    assert_int_equal(cl->len, 0);
    free(f);
}

static void expect_silence(struct client *cl, int ms)
{
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    int rc = read_frame(cl, f, ms);
    if (rc == 0)
        fail_msg("expected silence, got frame type %u (len %u)", f->type, f->len);
    assert_int_equal(rc, -ETIMEDOUT);
    free(f);
}

/* PING with a token and the PONG that must echo it. */
static void roundtrip(struct client *cl, uint64_t token)
{
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    send_ping(cl, token);
    expect_frame(cl, RB_FRAME_PONG, f, 2000);
    assert_int_equal(f->len, 8);
    assert_int_equal(get_u64(f->payload), token);
    free(f);
}

struct welcome {
    uint8_t version, mode;
    uint32_t interval_ms, timeout_ms;
    uint64_t conn_id;
};

static struct welcome expect_welcome(struct client *cl)
{
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    expect_frame(cl, RB_FRAME_WELCOME, f, 2000);
    assert_int_equal(f->len, 20);
    struct welcome w = {.version = f->payload[0],
                        .mode = f->payload[1],
                        .interval_ms = get_u32(f->payload + 4),
                        .timeout_ms = get_u32(f->payload + 8),
                        .conn_id = get_u64(f->payload + 12)};
    assert_int_equal(get_u16(f->payload + 2), 0);
    free(f);
    assert_int_equal(w.version, RB_PROTO_VERSION);
    return w;
}

/* HELLO, WELCOME and the on_open it causes; returns the connection id both agree on. */
static uint64_t handshake(struct fx *fx, struct client *cl, enum rb_mode mode, uint32_t interval_ms,
                          uint32_t timeout_ms, const char *client_id)
{
    send_hello(cl, mode, interval_ms, timeout_ms, client_id);
    struct welcome w = expect_welcome(cl);
    assert_int_equal(w.mode, mode);
    assert_int_not_equal(w.conn_id, 0);
    struct ev ev = must_wait(fx, EV_OPEN, w.conn_id, ANY, 2000);
    assert_int_equal(ev.client_id_len, client_id ? strlen(client_id) : 0);
    return w.conn_id;
}

/* Waits until at least n events match (a callback may still be on its way). */
static void wait_event_count(struct fx *fx, enum ev_kind kind, uint64_t id, size_t n,
                             int timeout_ms)
{
    uint64_t deadline = mono_us() + (uint64_t)timeout_ms * 1000u;
    for (;;) {
        size_t have = fx_count(fx, kind, id, ANY);
        if (have >= n)
            return;
        if (mono_us() >= deadline)
            fail_msg("%zu of %zu events kind=%d within %d ms", have, n, kind, timeout_ms);
        fx_wait(fx, (enum ev_kind)0, 0, ANY, 10, NULL); /* sleeps until any event or 10 ms */
    }
}

/*
 * Counters have no event to wait on (an accept that is never followed by a frame raises no
 * callback), so this polls one uint64_t field of rb_stats until it has the value, with a deadline.
 */
static void wait_stats_field(struct fx *fx, size_t offset, uint64_t value, int timeout_ms)
{
    uint64_t deadline = mono_us() + (uint64_t)timeout_ms * 1000u;
    struct rb_stats st;
    uint64_t v;
    for (;;) {
        rb_engine_stats(fx->e, &st);
        memcpy(&v, (const char *)&st + offset, sizeof(v));
        if (v == value)
            return;
        if (mono_us() >= deadline)
            fail_msg("rb_stats field at offset %zu is %llu, expected %llu after %d ms", offset,
                     (unsigned long long)v, (unsigned long long)value, timeout_ms);
        usleep(5000);
    }
}

/* ---- on_open --------------------------------------------------------------------------------- */

static void test_open_hello_fields(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    cfg.peer_addr = true;
    fx_start(fx, &cfg);

    struct client *cl = client_open(fx, fx->port);
    send_hello(cl, RB_MODE_CLIENT, 2000, 7000, "alice@example");
    struct welcome w = expect_welcome(cl);
    assert_int_equal(w.mode, RB_MODE_CLIENT);
    assert_int_equal(w.interval_ms, 2000);
    assert_int_equal(w.timeout_ms, 7000);

    struct ev ev = must_wait(fx, EV_OPEN, 0, ANY, 2000);
    assert_int_equal(ev.id, w.conn_id);
    assert_true(ev.worker < 2);
    assert_int_equal(ev.mode, RB_MODE_CLIENT);
    assert_int_equal(ev.interval_ms, 2000);
    assert_int_equal(ev.timeout_ms, 7000);
    assert_int_equal(ev.client_id_len, strlen("alice@example"));
    assert_memory_equal(ev.client_id, "alice@example", ev.client_id_len);
    assert_false(pthread_equal(ev.thread, pthread_self()));

    assert_int_equal(ev.peer.ss_family, AF_INET);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ev.peer;
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(ntohs(sin->sin_port), cl->local_port);

    /* A HELLO interval below min_interval is clamped, and on_open reports the clamped value. */
    struct client *c2 = client_open(fx, fx->port);
    send_hello(c2, RB_MODE_SILENT, 10, 0, "b");
    struct welcome w2 = expect_welcome(c2);
    assert_int_equal(w2.interval_ms, 1000);
    assert_int_equal(w2.timeout_ms, 3000);
    ev = must_wait(fx, EV_OPEN, w2.conn_id, ANY, 2000);
    assert_int_equal(ev.mode, RB_MODE_SILENT);
    assert_int_equal(ev.interval_ms, 1000);
    assert_int_equal(ev.timeout_ms, 3000);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&ev.peer)->sin_port), c2->local_port);
    assert_int_not_equal(w.conn_id, w2.conn_id);
    assert_int_equal(fx_count(fx, EV_OPEN, 0, ANY), 2);
}

static void test_open_without_hello(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    cfg.mode = RB_MODE_SILENT; /* a non-zero default, so a zeroed info would not pass */
    cfg.interval_ms = 1500;
    cfg.timeout_ms = 4000;
    fx_start(fx, &cfg);

    struct client *cl = client_open(fx, fx->port);
    send_ping(cl, 42);
    struct ev ev = must_wait(fx, EV_OPEN, 0, ANY, 2000);
    assert_int_equal(ev.client_id_len, 0);
    assert_int_equal(ev.mode, RB_MODE_SILENT);
    assert_int_equal(ev.interval_ms, 1500);
    assert_int_equal(ev.timeout_ms, 4000);
    /* Without peer_addr the address is not fetched. */
    assert_int_equal(ev.peer.ss_family, AF_UNSPEC);
    /* Silent mode: the PING is not answered. */
    expect_silence(cl, 300);

    /* A connection that sends nothing is never opened, so its end raises no on_close. */
    struct client *quiet = client_open(fx, fx->port);
    wait_stats_field(fx, offsetof(struct rb_stats, accepted), 2, 2000);
    client_close(quiet);
    wait_stats_field(fx, offsetof(struct rb_stats, conns), 1, 2000);
    assert_int_equal(fx_count(fx, EV_OPEN, 0, ANY), 1);
    assert_int_equal(fx_count(fx, EV_CLOSE, 0, ANY), 0);

    client_close(cl);
    struct ev cev = must_wait(fx, EV_CLOSE, ev.id, ANY, 2000);
    assert_int_equal(cev.reason, RB_CLOSE_EOF);
    assert_int_equal(fx_count(fx, EV_CLOSE, 0, ANY), 1);
}

/* ---- on_data and rb_send -----------------------------------------------------------------------
 */

static void test_on_data_no_echo(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    cfg.echo_data = true; /* on_data wins over echo */
    fx_start(fx, &cfg);

    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "d");
    send_frame(cl, RB_FRAME_DATA, "hello world", 11);
    send_frame(cl, RB_FRAME_DATA, NULL, 0);
    struct ev ev = must_wait(fx, EV_DATA, id, ANY, 2000);
    assert_int_equal(ev.len, 11);
    assert_memory_equal(ev.data, "hello world", 11);
    assert_int_equal(ev.send_rc, 1);
    /* The empty DATA arrives as its own call with len 0, after the first. */
    wait_event_count(fx, EV_DATA, id, 2, 2000);
    pthread_mutex_lock(&fx->lock);
    size_t seen = 0, second_len = SIZE_MAX;
    for (size_t i = 0; i < fx->nev; i++) {
        if (fx->ev[i].kind == EV_DATA && seen++ == 1)
            second_len = fx->ev[i].len;
    }
    pthread_mutex_unlock(&fx->lock); /* before asserting: a failure must not leave it held */
    assert_int_equal(seen, 2);
    assert_int_equal(second_len, 0);
    expect_silence(cl, 300); /* no echo */

    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.frames_in[RB_FRAME_DATA], 2);
    assert_int_equal(st.frames_out[RB_FRAME_DATA], 0);
}

static void test_send_from_other_thread(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "s");
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);

    assert_int_equal(rb_send(fx->e, id, "from-main", 9), 0);
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_int_equal(f->len, 9);
    assert_memory_equal(f->payload, "from-main", 9);

    /* Many hand-offs in a row arrive complete and in order. */
    for (unsigned i = 0; i < 200; i++) {
        char msg[16];
        int n = snprintf(msg, sizeof(msg), "m%03u", i);
        assert_int_equal(rb_send(fx->e, id, msg, (size_t)n), 0);
    }
    for (unsigned i = 0; i < 200; i++) {
        char msg[16];
        int n = snprintf(msg, sizeof(msg), "m%03u", i);
        expect_frame(cl, RB_FRAME_DATA, f, 2000);
        assert_int_equal(f->len, n);
        assert_memory_equal(f->payload, msg, (size_t)n);
    }

    /* Empty and exactly max_frame payloads are fine; one byte more is refused at once. */
    uint8_t *big = malloc(4097);
    assert_non_null(big);
    for (unsigned i = 0; i < 4097; i++)
        big[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(rb_send(fx->e, id, big, 0), 0);
    assert_int_equal(rb_send(fx->e, id, big, 4096), 0);
    assert_int_equal(rb_send(fx->e, id, big, 4097), -EMSGSIZE);
    assert_int_equal(rb_send(fx->e, id, big, 65536), -EMSGSIZE);
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_int_equal(f->len, 0);
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_int_equal(f->len, 4096);
    assert_memory_equal(f->payload, big, 4096);
    expect_silence(cl, 200);
    free(big);
    free(f);

    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.frames_out[RB_FRAME_DATA], 203);
    assert_int_equal(fx_count(fx, EV_CLOSE, 0, ANY), 0);
}

static void test_send_from_callback(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    fx->reply_upper = true;
    fx_start(fx, &cfg);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "u");
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);

    send_frame(cl, RB_FRAME_DATA, "shout, please", 13);
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_int_equal(f->len, 13);
    assert_memory_equal(f->payload, "SHOUT, PLEASE", 13);
    struct ev ev = must_wait(fx, EV_DATA, id, ANY, 2000);
    assert_int_equal(ev.send_rc, 0);
    assert_false(pthread_equal(ev.thread, pthread_self()));

    /* Two frames in one write get two answers, in order. */
    uint8_t two[4 + 3 + 4 + 3] = {RB_FRAME_DATA, 0, 0, 3, 'a', 'b', 'c',
                                  RB_FRAME_DATA, 0, 0, 3, 'x', 'y', 'z'};
    send_raw(cl, two, sizeof(two));
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_memory_equal(f->payload, "ABC", 3);
    expect_frame(cl, RB_FRAME_DATA, f, 2000);
    assert_memory_equal(f->payload, "XYZ", 3);
    free(f);
}

/*
 * ids of closed connections. On the owning worker the lookup is immediate and gives -ENOENT.
 * From another thread only an id that cannot name any ring is refused at once; a closed id of
 * a real ring is posted to the owner's mailbox, where it is dropped: 0 is returned (observed;
 * the header's "-ENOENT: no such connection" does not say it can only be synchronous on the
 * owner). What must hold either way: nothing reaches any live connection.
 */
static void test_send_unknown_id(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    fx->send_in_close = true;
    fx_start(fx, &cfg);

    assert_int_equal(rb_send(fx->e, UINT64_MAX, "x", 1), -ENOENT);
    assert_int_equal(rb_close(fx->e, UINT64_MAX, 1), -ENOENT);

    struct client *gone = client_open(fx, fx->port);
    uint64_t gone_id = handshake(fx, gone, RB_MODE_CLIENT, 1000, 3000, "gone");
    struct ev gone_open = must_wait(fx, EV_OPEN, gone_id, ANY, 0);
    send_close(gone, RB_CLOSE_NORMAL);
    struct ev cev = must_wait(fx, EV_CLOSE, gone_id, RB_CLOSE_PEER, 2000);
    assert_int_equal(cev.send_rc, -ENOENT); /* rb_send inside on_close, for the closing id */
    expect_eof(gone, 2000);
    pthread_mutex_lock(&fx->lock);
    fx->probe_id = gone_id;
    pthread_mutex_unlock(&fx->lock);

    /* Live connections, at least one on the worker that owned the closed id. */
    struct client *same = NULL;
    uint64_t same_id = 0;
    struct client *live[16];
    unsigned nlive = 0;
    for (unsigned i = 0; i < 16 && !same; i++) {
        struct client *c = client_open(fx, fx->port);
        char name[8];
        snprintf(name, sizeof(name), "l%u", i);
        uint64_t id = handshake(fx, c, RB_MODE_CLIENT, 1000, 3000, name);
        assert_int_not_equal(id, gone_id);
        struct ev ev = must_wait(fx, EV_OPEN, id, ANY, 0);
        live[nlive++] = c;
        if (ev.worker == gone_open.worker) {
            same = c;
            same_id = id;
        }
    }
    assert_non_null(same);

    int rc = rb_send(fx->e, gone_id, "stale", 5);
    assert_true(rc == 0 || rc == -ENOENT);
    rc = rb_close(fx->e, gone_id, 1);
    assert_true(rc == 0 || rc == -ENOENT);
    /* On the owner: "probe" makes on_data send to the closed id. */
    send_frame(same, RB_FRAME_DATA, "probe", 5);
    struct ev dev = must_wait(fx, EV_DATA, same_id, ANY, 2000);
    assert_int_equal(dev.send_rc, -ENOENT);

    for (unsigned i = 0; i < nlive; i++)
        expect_silence(live[i], i == 0 ? 300 : 0);
    for (unsigned i = 0; i < nlive; i++)
        roundtrip(live[i], 1000 + i);
    assert_int_equal(fx_count(fx, EV_CLOSE, 0, ANY), 1);
    assert_int_equal(rb_engine_error(fx->e), 0);
}

/* ---- closing -----------------------------------------------------------------------------------
 */

static void test_close_from_other_thread(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    struct client *bystander = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "c");
    uint64_t other = handshake(fx, bystander, RB_MODE_CLIENT, 1000, 3000, "b");

    assert_int_equal(rb_close(fx->e, id, RB_CLOSE_NORMAL), 0);
    expect_close_frame(cl, RB_CLOSE_NORMAL, 2000);
    expect_eof(cl, 2000);
    struct ev ev = must_wait(fx, EV_CLOSE, id, ANY, 2000);
    assert_int_equal(ev.reason, RB_CLOSE_NORMAL);
    assert_int_equal(ev.peer_code, 0);

    /* Closing it again changes nothing, and on_close does not fire twice. */
    int rc = rb_close(fx->e, id, RB_CLOSE_NORMAL);
    assert_true(rc == 0 || rc == -ENOENT);
    roundtrip(bystander, 7);
    assert_int_equal(fx_count(fx, EV_CLOSE, id, ANY), 1);
    assert_int_equal(fx_count(fx, EV_CLOSE, other, ANY), 0);

    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.closed[RB_CLOSE_NORMAL], 1);
    assert_int_equal(st.frames_out[RB_FRAME_CLOSE], 1);
    assert_int_equal(st.conns, 1);
}

static void test_close_by_peer(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "p");
    send_close(cl, RB_CLOSE_NORMAL);
    struct ev ev = must_wait(fx, EV_CLOSE, id, ANY, 2000);
    assert_int_equal(ev.reason, RB_CLOSE_PEER);
    assert_int_equal(ev.peer_code, RB_CLOSE_NORMAL);
    expect_eof(cl, 2000); /* the peer said goodbye: no CLOSE is sent back */

    /* Another code is passed through as the peer sent it. */
    struct client *c2 = client_open(fx, fx->port);
    uint64_t id2 = handshake(fx, c2, RB_MODE_CLIENT, 1000, 3000, "p2");
    send_close(c2, RB_CLOSE_SHUTDOWN);
    ev = must_wait(fx, EV_CLOSE, id2, ANY, 2000);
    assert_int_equal(ev.reason, RB_CLOSE_PEER);
    assert_int_equal(ev.peer_code, RB_CLOSE_SHUTDOWN);
    expect_eof(c2, 2000);
}

static void test_close_eof(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "e");
    assert_int_equal(shutdown(cl->fd, SHUT_WR), 0);
    struct ev ev = must_wait(fx, EV_CLOSE, id, ANY, 2000);
    assert_int_equal(ev.reason, RB_CLOSE_EOF);
    assert_int_equal(ev.peer_code, 0);
    expect_eof(cl, 2000);
}

static void test_close_reset(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "r");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(cl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    client_close(cl); /* RST */
    struct ev ev = must_wait(fx, EV_CLOSE, id, ANY, 2000);
    assert_int_equal(ev.reason, RB_CLOSE_RESET);
    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.closed[RB_CLOSE_RESET], 1);
    assert_int_equal(st.conns, 0);
}

/* ---- liveness ----------------------------------------------------------------------------------
 */

static void test_silent_client_times_out(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t t0 = mono_us();
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "quiet");

    /* One interval plus half an interval of grace without a frame: suspect. */
    struct ev s = must_wait(fx, EV_LIVENESS, id, RB_SUSPECT, 3000);
    assert_int_equal(s.from, RB_ALIVE);
    assert_true(s.t_us - t0 >= 1499000);
    assert_true(s.t_us - t0 < 2500000);

    expect_close_frame(cl, RB_CLOSE_TIMEOUT, 3000);
    expect_eof(cl, 2000);
    struct ev c = must_wait(fx, EV_CLOSE, id, ANY, 1000);
    assert_int_equal(c.reason, RB_CLOSE_TIMEOUT);
    uint64_t after_us = c.t_us - t0;
    if (after_us < 2999000 || after_us >= 3500000)
        fail_msg("timeout close %llu us after the HELLO (expected 3000..3500 ms)",
                 (unsigned long long)after_us);
    struct ev d = must_wait(fx, EV_LIVENESS, id, RB_DEAD, 0);
    assert_int_equal(d.from, RB_SUSPECT);
    assert_true(d.t_us <= c.t_us);
    assert_int_equal(fx_count(fx, EV_LIVENESS, id, RB_ALIVE), 0);

    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.closed[RB_CLOSE_TIMEOUT], 1);
    assert_int_equal(st.conns, 0);
}

static void test_suspect_comes_back(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl = client_open(fx, fx->port);
    uint64_t id = handshake(fx, cl, RB_MODE_CLIENT, 1000, 3000, "back");
    must_wait(fx, EV_LIVENESS, id, RB_SUSPECT, 3000);
    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.by_liveness[RB_SUSPECT], 1);

    roundtrip(cl, 0x1122334455667788ULL);
    struct ev a = must_wait(fx, EV_LIVENESS, id, RB_ALIVE, 2000);
    assert_int_equal(a.from, RB_SUSPECT);
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.by_liveness[RB_ALIVE], 1);
    assert_int_equal(st.by_liveness[RB_SUSPECT], 0);

    /* Still a regular connection: it keeps working and has not been closed. */
    roundtrip(cl, 2);
    assert_int_equal(fx_count(fx, EV_CLOSE, id, ANY), 0);
    assert_int_equal(fx_count(fx, EV_LIVENESS, id, ANY), 2);
}

/* ---- stats -------------------------------------------------------------------------------------
 */

static void test_stats_counts(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    cfg.interval_ms = 10000; /* nothing times out or is pinged while the test runs */
    cfg.timeout_ms = 30000;
    fx_start(fx, &cfg);

    struct client *c1 = client_open(fx, fx->port);
    struct client *c2 = client_open(fx, fx->port);
    struct client *c3 = client_open(fx, fx->port);
    struct client *c4 = client_open(fx, fx->port);
    (void)c4; /* connected, never speaks */
    handshake(fx, c1, RB_MODE_CLIENT, 10000, 30000, "s1");
    uint64_t id2 = handshake(fx, c2, RB_MODE_CLIENT, 10000, 30000, "s2");
    uint64_t id3 = handshake(fx, c3, RB_MODE_CLIENT, 10000, 30000, "s3");
    roundtrip(c1, 1);
    roundtrip(c1, 2);
    send_frame(c2, RB_FRAME_DATA, "hi", 2);
    must_wait(fx, EV_DATA, id2, ANY, 2000);
    send_close(c3, RB_CLOSE_NORMAL);
    must_wait(fx, EV_CLOSE, id3, ANY, 2000);
    wait_stats_field(fx, offsetof(struct rb_stats, accepted), 4, 2000);

    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.accepted, 4);
    assert_int_equal(st.conns, 3);
    assert_int_equal(st.by_liveness[RB_ALIVE], 3);
    assert_int_equal(st.by_liveness[RB_SUSPECT], 0);
    assert_int_equal(st.rejected_full, 0);
    assert_int_equal(st.frames_in[RB_FRAME_HELLO], 3);
    assert_int_equal(st.frames_in[RB_FRAME_WELCOME], 0);
    assert_int_equal(st.frames_in[RB_FRAME_PING], 2);
    assert_int_equal(st.frames_in[RB_FRAME_PONG], 0);
    assert_int_equal(st.frames_in[RB_FRAME_DATA], 1);
    assert_int_equal(st.frames_in[RB_FRAME_CLOSE], 1);
    assert_int_equal(st.frames_out[RB_FRAME_WELCOME], 3);
    assert_int_equal(st.frames_out[RB_FRAME_PONG], 2);
    assert_int_equal(st.frames_out[RB_FRAME_DATA], 0);
    assert_int_equal(st.frames_out[RB_FRAME_CLOSE], 0);
    assert_int_equal(st.closed[RB_CLOSE_PEER], 1);
    /* 3 HELLO (12 + 2 id bytes each), 2 PING, 1 DATA of 2, 1 CLOSE of 2, all with 4-byte headers.
     */
    assert_int_equal(st.bytes_in, 3 * 18 + 2 * 12 + 6 + 6);

    /* The per-worker views add up to the total. */
    struct rb_stats w0, w1;
    assert_int_equal(rb_engine_worker_stats(fx->e, 0, &w0), 0);
    assert_int_equal(rb_engine_worker_stats(fx->e, 1, &w1), 0);
    assert_int_equal(rb_engine_worker_stats(fx->e, 2, &w1), -EINVAL);
    assert_int_equal(rb_engine_worker_stats(fx->e, 1, &w1), 0);
    assert_int_equal(w0.accepted + w1.accepted, 4);
    assert_int_equal(w0.frames_in[RB_FRAME_PING] + w1.frames_in[RB_FRAME_PING], 2);
}

/* ---- stop --------------------------------------------------------------------------------------
 */

static void test_stop_closes_everyone(void **state)
{
    struct fx *fx = *state;
    fx_start_default(fx);
    struct client *cl[5];
    uint64_t id[4];
    for (unsigned i = 0; i < 5; i++)
        cl[i] = client_open(fx, fx->port);
    for (unsigned i = 0; i < 3; i++) {
        char name[4] = {'x', (char)('0' + i), 0};
        id[i] = handshake(fx, cl[i], RB_MODE_CLIENT, 1000, 3000, name);
    }
    send_ping(cl[3], 3); /* opened without HELLO */
    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    expect_frame(cl[3], RB_FRAME_PONG, f, 2000);
    free(f);
    id[3] = 0;
    pthread_mutex_lock(&fx->lock);
    for (size_t i = 0; i < fx->nev; i++)
        if (fx->ev[i].kind == EV_OPEN && fx->ev[i].client_id_len == 0)
            id[3] = fx->ev[i].id;
    pthread_mutex_unlock(&fx->lock);
    assert_int_not_equal(id[3], 0);
    wait_stats_field(fx, offsetof(struct rb_stats, accepted), 5, 2000); /* cl[4] never speaks */

    uint64_t t0 = mono_us();
    rb_engine_stop(fx->e);
    for (unsigned i = 0; i < 5; i++) {
        expect_close_frame(cl[i], RB_CLOSE_SHUTDOWN, 3000);
        expect_eof(cl[i], 2000);
    }
    assert_int_equal(rb_engine_wait(fx->e), 0);
    assert_true(mono_us() - t0 < 3000000);
    for (unsigned i = 0; i < 4; i++) {
        struct ev ev = must_wait(fx, EV_CLOSE, id[i], ANY, 0);
        assert_int_equal(ev.reason, RB_CLOSE_SHUTDOWN);
    }
    assert_int_equal(fx_count(fx, EV_CLOSE, 0, ANY), 4);
    struct rb_stats st;
    rb_engine_stats(fx->e, &st);
    assert_int_equal(st.closed[RB_CLOSE_SHUTDOWN], 5);
    assert_int_equal(st.conns, 0);
    assert_int_equal(rb_engine_error(fx->e), 0);
}

/* ---- configuration -----------------------------------------------------------------------------
 */

static void test_create_rejects_bad_config(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    struct rb_engine *e = NULL;

    fx_config(fx, &cfg);
    cfg.timeout_ms = cfg.interval_ms;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.timeout_ms = cfg.interval_ms - 1;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.buffers = 100;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.buffers = 0;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.interval_ms = 0;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.max_frame = 65536;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    fx_config(fx, &cfg);
    cfg.mode = (enum rb_mode)4; /* 3 is kernel mode */
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    assert_null(e);

    /* The boundary cases just inside are accepted (created, never started). */
    fx_config(fx, &cfg);
    cfg.timeout_ms = cfg.interval_ms + 1;
    cfg.buffers = 128;
    assert_int_equal(rb_engine_create(&cfg, &e), 0);
    assert_non_null(e);
    rb_engine_destroy(e);

    /* A tls:// listener needs a certificate and its key (loaded at create); none at all: no
     * TLS to reload. */
    fx_config(fx, &cfg);
    cfg.listen[0] = "tls://127.0.0.1:0";
    e = NULL;
    assert_int_equal(rb_engine_create(&cfg, &e), -EINVAL);
    cfg.tls_cert_file = "/nonexistent/cert.pem";
    cfg.tls_key_file = "/nonexistent/key.pem";
    assert_int_equal(rb_engine_create(&cfg, &e), -ENOENT);
    assert_null(e);
    fx_config(fx, &cfg);
    assert_int_equal(rb_engine_create(&cfg, &e), 0);
    assert_int_equal(rb_engine_tls_reload(e), -ENOTSUP);
    rb_engine_destroy(e);

    /* A listen address that does not parse fails at start, not later. */
    fx_config(fx, &cfg);
    cfg.listen[0] = "not-an-address";
    e = NULL;
    assert_int_equal(rb_engine_create(&cfg, &e), 0);
    assert_true(rb_engine_start(e) < 0);
    rb_engine_destroy(e);
}

/* ---- two engines -------------------------------------------------------------------------------
 */

/* Reads everything the engine sends until it closes the connection (or the deadline). */
static size_t read_to_eof(struct client *cl, uint8_t *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    uint64_t end = mono_us() + (uint64_t)timeout_ms * 1000;
    while (n < cap && mono_us() < end) {
        struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)((end - mono_us()) / 1000) + 1) <= 0)
            continue;
        ssize_t r = recv(cl->fd, buf + n, cap - n, 0);
        if (r <= 0)
            return n;
        n += (size_t)r;
    }
    fail_msg("the engine did not close the WebSocket within %d ms", timeout_ms);
    return n;
}

/* WebSocket through the embedding API: on_open gets the upgrade's query, rb_send_text and rb_send
 * (from another thread) go out as a text and a binary frame, rb_close(0) as Close 1000. */
static void test_ws_open_send_close(void **state)
{
    struct fx *fx = *state;
    struct rb_config cfg;
    fx_config(fx, &cfg);
    cfg.listen[0] = "ws://127.0.0.1:0";
    fx_start(fx, &cfg);
    struct client *cl = client_open(fx, fx->port);
    static const char req[] = "GET /?mode=client&interval=2s&id=emb%2F1 HTTP/1.1\r\n"
                              "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";
    send_raw(cl, req, sizeof(req) - 1);
    struct ev ev;
    assert_true(fx_wait(fx, EV_OPEN, 0, ANY, 3000, &ev));
    assert_int_equal(ev.mode, RB_MODE_CLIENT);
    assert_int_equal(ev.interval_ms, 2000);
    assert_int_equal(ev.timeout_ms, 6000);
    assert_int_equal(ev.client_id_len, 5);
    assert_memory_equal(ev.client_id, "emb/1", 5);
    assert_int_equal(rb_send_text(fx->e, ev.id, "h\xc3\xa9llo", 6), 0);
    assert_int_equal(rb_send_text(fx->e, ev.id, "\xff", 1), -EILSEQ);
    assert_int_equal(rb_send(fx->e, ev.id, "\x01\x02", 2), 0);
    assert_int_equal(rb_close(fx->e, ev.id, 0), 0);
    uint8_t buf[1024];
    size_t n = read_to_eof(cl, buf, sizeof(buf) - 1, 3000);
    buf[n] = 0;
    const char *end = strstr((const char *)buf, "\r\n\r\n");
    assert_non_null(end);
    assert_memory_equal(buf, "HTTP/1.1 101 ", 13);
    assert_non_null(
        strstr((const char *)buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert_non_null(strstr((const char *)buf, "Ringbeat-Mode: client\r\n"));
    static const uint8_t frames[] = {0x81, 6, 'h', 0xc3, 0xa9, 'l', 'l',  'o',
                                     0x82, 2, 1,   2,    0x88, 2,   0x03, 0xe8};
    size_t head = (size_t)(end + 4 - (const char *)buf);
    assert_int_equal(n - head, sizeof(frames));
    assert_memory_equal(buf + head, frames, sizeof(frames));
    assert_true(fx_wait(fx, EV_CLOSE, ev.id, RB_CLOSE_NORMAL, 3000, NULL));
}

static void test_two_engines(void **state)
{
    struct fx *a = *state;
    struct fx *b = a->other = fx_new();
    fx_start_default(a);
    fx_start_default(b);
    assert_int_not_equal(a->port, b->port);

    struct client *ca = client_open(a, a->port);
    struct client *cb = client_open(b, b->port);
    uint64_t ida = handshake(a, ca, RB_MODE_CLIENT, 1000, 3000, "on-a");
    uint64_t idb = handshake(b, cb, RB_MODE_CLIENT, 1000, 3000, "on-b");
    /* Each engine's callbacks got its own user pointer and only its own connection. */
    assert_int_equal(fx_count(a, EV_OPEN, 0, ANY), 1);
    assert_int_equal(fx_count(b, EV_OPEN, 0, ANY), 1);
    struct ev ev = must_wait(a, EV_OPEN, ida, ANY, 0);
    assert_memory_equal(ev.client_id, "on-a", 4);
    ev = must_wait(b, EV_OPEN, idb, ANY, 0);
    assert_memory_equal(ev.client_id, "on-b", 4);

    struct frame *f = malloc(sizeof(*f));
    assert_non_null(f);
    assert_int_equal(rb_send(a->e, ida, "to-a", 4), 0);
    assert_int_equal(rb_send(b->e, idb, "to-b", 4), 0);
    expect_frame(ca, RB_FRAME_DATA, f, 2000);
    assert_memory_equal(f->payload, "to-a", 4);
    expect_frame(cb, RB_FRAME_DATA, f, 2000);
    assert_memory_equal(f->payload, "to-b", 4);

    /* Stopping one leaves the other running. */
    rb_engine_stop(a->e);
    expect_close_frame(ca, RB_CLOSE_SHUTDOWN, 3000);
    assert_int_equal(rb_engine_wait(a->e), 0);
    roundtrip(cb, 99);
    send_frame(cb, RB_FRAME_DATA, "still", 5);
    ev = must_wait(b, EV_DATA, idb, ANY, 2000);
    assert_memory_equal(ev.data, "still", 5);
    assert_int_equal(fx_count(b, EV_CLOSE, 0, ANY), 0);
    assert_int_equal(fx_count(a, EV_DATA, 0, ANY), 0);
    struct rb_stats st;
    rb_engine_stats(b->e, &st);
    assert_int_equal(st.conns, 1);
    assert_int_equal(st.accepted, 1);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_hello_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_without_hello, setup, teardown),
        cmocka_unit_test_setup_teardown(test_on_data_no_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_from_other_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_unknown_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_other_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_by_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_client_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_suspect_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_closes_everyone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_rejects_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_engines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_open_send_close, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
