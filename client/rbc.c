/* rbc.c — libringbeat-client's API: lifecycle, the stable descriptor and timer, events, storage. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TAG_TIMER 0 /* epoll data of the timerfd; the socket's is gen << 1 | 1 */

/*
 * The one clock of the client library. CLOCK_BOOTTIME, not CLOCK_MONOTONIC: a phone sleeps, and
 * a NAT's idle timer keeps running while it does; a heartbeat due during the sleep must be due at
 * the wake-up, not an interval of awake time later.
 */
uint64_t rbc_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void lock(struct rbc *c)
{
    pthread_mutex_lock(&c->mu);
}

static void unlock(struct rbc *c)
{
    pthread_mutex_unlock(&c->mu);
}

void rbc__emit(struct rbc *c, const struct rbc_event *ev)
{
    if (c->cfg.on_event)
        c->cfg.on_event(c, ev, c->cfg.user);
}

static void fill_info(const struct rbc *c, struct rbc_heartbeat *h)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->network, c->network, sizeof(h->network));
    h->phase = rbc__smart_phase(&c->smart);
    h->interval_ms = rbc__smart_interval(&c->smart);
    h->learned_ms = c->smart.n.interval_ms;
    h->failures = c->smart.n.failures;
    h->failures_total = c->failures_total;
    h->heartbeats = c->heartbeats;
    h->tune = !c->no_tune;
}

void rbc__report(struct rbc *c)
{
    struct rbc_heartbeat h;
    fill_info(c, &h);
    const struct rbc_heartbeat *o = &c->shown;
    if (h.phase == o->phase && h.interval_ms == o->interval_ms && h.learned_ms == o->learned_ms &&
        h.failures == o->failures && h.tune == o->tune && !strcmp(h.network, o->network))
        return;
    c->shown = h;
    struct rbc_event ev = {.type = RBC_EV_INTERVAL};
    ev.u.interval = h;
    rbc__emit(c, &ev);
}

void rbc__store(struct rbc *c)
{
    if (!c->cfg.store)
        return;
    uint8_t rec[RBC__SMART_REC_LEN];
    size_t len = rbc__smart_save(&c->smart, rec);
    if (c->have_stored && !memcmp(rec, c->stored, len))
        return; /* unchanged: the app's storage is not touched */
    memcpy(c->stored, rec, len);
    c->have_stored = true;
    c->cfg.store(c->cfg.user, c->network, rec, len);
}

static void load(struct rbc *c)
{
    rbc__smart_forget(&c->smart);
    c->have_stored = false;
    if (!c->cfg.load)
        return;
    uint8_t buf[RBC_STATE_MAX];
    int n = c->cfg.load(c->cfg.user, c->network, buf, sizeof(buf));
    if (n <= 0 || (size_t)n > sizeof(buf))
        return;
    if (rbc__smart_load(&c->smart, buf, (size_t)n) == 0 && n == RBC__SMART_REC_LEN) {
        memcpy(c->stored, buf, RBC__SMART_REC_LEN);
        c->have_stored = true;
    }
}

static void set_network(struct rbc *c, const char *label)
{
    size_t n = label ? strlen(label) : 0;
    if (n >= sizeof(c->network))
        n = sizeof(c->network) - 1;
    if (n)
        memcpy(c->network, label, n);
    c->network[n] = '\0';
}

void rbc__sync(struct rbc *c)
{
    if (c->fd >= 0) {
        uint32_t want =
            c->state == RBC__CONNECTING ? EPOLLOUT : EPOLLIN | (c->out_len ? EPOLLOUT : 0);
        struct epoll_event ev = {.events = want, .data.u64 = (uint64_t)c->gen << 1 | 1};
        if (!c->fd_registered) {
            if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0) {
                c->fd_registered = true;
                c->fd_events = want;
            }
        } else if (want != c->fd_events) {
            ev.data.u64 = (uint64_t)c->gen << 1 | 1;
            if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
                c->fd_events = want;
        }
    }
    uint64_t at = rbc__sess_deadline(c);
    if (at == c->timer_at_ms)
        return;
    struct itimerspec its = {0};
    if (at) {
        its.it_value.tv_sec = (time_t)(at / 1000);
        its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
    }
    if (timerfd_settime(c->tfd, at ? TFD_TIMER_ABSTIME : 0, &its, NULL) == 0)
        c->timer_at_ms = at;
}

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

static int check_config(const struct rbc_config *in, struct rbc_config *cfg,
                        struct rbc__smart_params *sp)
{
    *cfg = *in;
    if (cfg->mode != RBC_MODE_CLIENT && cfg->mode != RBC_MODE_SERVER)
        return -EINVAL;
    if (cfg->client_id && strlen(cfg->client_id) > RBC_CLIENT_ID_MAX)
        return -EINVAL;
    int r = rbc__smart_params(&cfg->smart, sp);
    if (r < 0)
        return r;
    cfg->answer_timeout_ms = or_default(cfg->answer_timeout_ms, 10000); /* Mars: noop 10 s */
    cfg->connect_timeout_ms = or_default(cfg->connect_timeout_ms, 10000);
    cfg->backoff_min_ms = or_default(cfg->backoff_min_ms, 1000);
    cfg->backoff_max_ms = or_default(cfg->backoff_max_ms, 120000);
    cfg->max_frame = or_default(cfg->max_frame, 4096);
    cfg->send_buffer = or_default(cfg->send_buffer, 65536);
    if (sp->min_ms < 10 || cfg->answer_timeout_ms < 10 || cfg->connect_timeout_ms < 10)
        return -EINVAL;
    if (cfg->backoff_max_ms < cfg->backoff_min_ms || cfg->max_frame > 65535)
        return -EINVAL;
    if (cfg->send_buffer < cfg->max_frame + RB_FRAME_HEADER_LEN + RBC__CTRL_RESERVE ||
        cfg->send_buffer > (1u << 30))
        return -EINVAL;
    return 0;
}

int rbc_create(const struct rbc_config *in, struct rbc **out)
{
    if (!in || !out)
        return -EINVAL;
    struct rbc_config cfg;
    struct rbc__smart_params sp;
    struct rbc__url url;
    int r = check_config(in, &cfg, &sp);
    if (r < 0 || (r = rbc__url_parse(cfg.url, &url)) < 0)
        return r;
    struct rbc *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->cfg = cfg;
    c->url = url;
    c->cfg.url = NULL; /* the caller's strings are not kept */
    c->cfg.client_id = NULL;
    c->cfg.network = NULL;
    c->epfd = c->tfd = c->fd = c->wakefd = -1;
    if (in->client_id) {
        c->client_id_len = strlen(in->client_id);
        memcpy(c->client_id, in->client_id, c->client_id_len);
    }
    set_network(c, in->network);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    r = -pthread_mutex_init(&c->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (r < 0) {
        free(c);
        return r;
    }
    uint64_t seed = cfg.seed;
    if (!seed && getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = rbc_clock_ms() ^ (uint64_t)(uintptr_t)c; /* no entropy yet: still per handle */
    rbc__backoff_init(&c->backoff, cfg.backoff_min_ms, cfg.backoff_max_ms, seed);
    rbc__smart_init(&c->smart, &sp);
    c->smart.foreground = cfg.foreground;
    c->srv_floor_ms = sp.min_ms;
    c->srv_cap_ms = sp.max_ms;
    c->out_cap = cfg.send_buffer;
    c->out = malloc(c->out_cap);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->tfd = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_TIMER};
    if (!c->out || c->epfd < 0 || c->tfd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->tfd, &ev)) {
        r = !c->out ? -ENOMEM : -errno;
        rbc_destroy(c);
        return r;
    }
    load(c);
    fill_info(c, &c->shown);
    c->ready = true;
    *out = c;
    return 0;
}

void rbc_destroy(struct rbc *c)
{
    if (!c)
        return;
    if (c->thread_on)
        rbc_thread_stop(c);
    lock(c);
    c->cfg.on_event = NULL; /* the app is tearing down: no more events */
    c->started = false;
    if (c->state != RBC__IDLE)
        rbc__sess_close(c, RBC_CLOSED_STOPPED, 0, 0, RB_CLOSE_NORMAL);
    rbc__net_close(c);
    if (c->ready)
        rbc__store(c);
    unlock(c);
    if (c->tfd >= 0)
        close(c->tfd);
    if (c->epfd >= 0)
        close(c->epfd);
    free(c->out);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int rbc_start(struct rbc *c)
{
    lock(c);
    if (!c->started) {
        c->started = true;
        if (c->state == RBC__IDLE) {
            rbc__backoff_reset(&c->backoff);
            rbc__sess_begin(c);
        }
        rbc__sync(c);
    }
    unlock(c);
    return 0;
}

int rbc_stop(struct rbc *c)
{
    lock(c);
    c->started = false;
    if (c->state == RBC__BACKOFF)
        c->state = RBC__IDLE;
    else if (c->state != RBC__IDLE)
        rbc__sess_close(c, RBC_CLOSED_STOPPED, 0, 0, RB_CLOSE_NORMAL);
    rbc__sync(c);
    unlock(c);
    return 0;
}

int rbc_fd(const struct rbc *c)
{
    return c->epfd; /* fixed at creation: no lock needed */
}

int rbc_timeout_ms(struct rbc *c)
{
    lock(c);
    uint64_t at = rbc__sess_deadline(c), now = rbc_clock_ms();
    unlock(c);
    if (!at)
        return -1;
    if (at <= now)
        return 0;
    return at - now > INT32_MAX ? INT32_MAX : (int)(at - now);
}

int rbc_step(struct rbc *c)
{
    struct epoll_event evs[4];
    lock(c);
    int n = epoll_wait(c->epfd, evs, 4, 0);
    int r = n < 0 && errno != EINTR ? -errno : 0;
    for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == TAG_TIMER) {
            uint64_t expirations;
            if (read(c->tfd, &expirations, sizeof(expirations)) > 0)
                c->timer_at_ms = 0; /* fired: armed again below if still needed */
        } else if ((tag >> 1) == c->gen) {
            rbc__net_io(c, evs[i].events);
        }
    }
    rbc__sess_timers(c, rbc_clock_ms());
    rbc__sync(c);
    unlock(c);
    return r;
}

int rbc_send(struct rbc *c, const void *data, size_t len)
{
    if (len && !data)
        return -EINVAL;
    lock(c);
    int r = rbc__sess_send_data(c, data, len);
    rbc__sync(c);
    unlock(c);
    return r;
}

int rbc_network_changed(struct rbc *c, const char *label)
{
    lock(c);
    if (c->state != RBC__IDLE && c->state != RBC__BACKOFF)
        rbc__sess_close(c, RBC_CLOSED_NETWORK, 0, 0, 0); /* stores under the old label */
    else
        rbc__store(c);
    set_network(c, label);
    load(c);
    rbc__report(c);
    if (c->started && c->state == RBC__BACKOFF) {
        rbc__backoff_reset(&c->backoff); /* a new network is no reason to wait */
        rbc__sess_begin(c);
    }
    rbc__sync(c);
    unlock(c);
    return 0;
}

int rbc_set_foreground(struct rbc *c, bool foreground)
{
    lock(c);
    if (rbc__smart_foreground(&c->smart, foreground)) {
        rbc__report(c);
        rbc__sess_tune(c);
    }
    rbc__sync(c);
    unlock(c);
    return 0;
}

int rbc_heartbeat_info(struct rbc *c, struct rbc_heartbeat *out)
{
    lock(c);
    fill_info(c, out);
    unlock(c);
    return 0;
}

int rbc_stats(struct rbc *c, struct rbc_stats *out)
{
    lock(c);
    *out = c->st;
    unlock(c);
    return 0;
}

const char *rbc_close_reason_name(enum rbc_close_reason r)
{
    static const char *const names[] = {
        [RBC_CLOSED_PEER] = "peer",
        [RBC_CLOSED_EOF] = "eof",
        [RBC_CLOSED_ERROR] = "error",
        [RBC_CLOSED_DEAD] = "dead",
        [RBC_CLOSED_CONNECT] = "connect",
        [RBC_CLOSED_RESOLVE] = "resolve",
        [RBC_CLOSED_HANDSHAKE] = "handshake",
        [RBC_CLOSED_PROTOCOL] = "protocol",
        [RBC_CLOSED_TUNE_REFUSED] = "tune_refused",
        [RBC_CLOSED_NETWORK] = "network",
        [RBC_CLOSED_STOPPED] = "stopped",
    };
    unsigned i = (unsigned)r;
    return i < sizeof(names) / sizeof(names[0]) && names[i] ? names[i] : "unknown";
}

const char *rbc_liveness_name(enum rbc_liveness l)
{
    switch (l) {
    case RBC_ALIVE:
        return "alive";
    case RBC_SUSPECT:
        return "suspect";
    case RBC_DEAD:
        return "dead";
    }
    return "unknown";
}

const char *rbc_phase_name(enum rbc_phase p)
{
    static const char *const names[] = {"warmup", "probing", "stable", "foreground", "fixed"};
    unsigned i = (unsigned)p;
    return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown";
}
