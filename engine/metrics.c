/* metrics.c — Prometheus text exposition (0.0.4) served on GET /metrics by a thread of its own. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ringbeat.h"

/* A scraper that dawdles holds the only connection slot; this bounds how long it can. */
#define METRICS_IO_TIMEOUT_MS 2000
#define METRICS_REQ_MAX       4096
#define METRICS_BODY_INITIAL  (64 * 1024)

struct rb_metrics {
    struct rb_engine *engine;
    int listen_fd;
    int stop_fd; /* eventfd: wakes the thread out of any poll */
    uint16_t port;
    pthread_t thread;
    char *body;
    size_t body_cap;
};

/* ---- rendering ---- */

struct out {
    char *buf;
    size_t cap;
    size_t len; /* may exceed cap: the length the caller needs */
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

static void help_type(struct out *o, const char *name, const char *type, const char *help)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const frame_type_names[RB_FRAME_TYPE_MAX] = {
    [RB_FRAME_HELLO] = "hello", [RB_FRAME_WELCOME] = "welcome", [RB_FRAME_PING] = "ping",
    [RB_FRAME_PONG] = "pong",   [RB_FRAME_DATA] = "data",       [RB_FRAME_CLOSE] = "close",
    [RB_FRAME_TUNE] = "tune",
};

/* Every protocol this engine knows is exported, listened on or not, so series never appear. */
static const enum rb_protocol protocols[] = {RB_PROTOCOL_V1, RB_PROTOCOL_WS};
#define NPROTOCOLS (sizeof(protocols) / sizeof(protocols[0]))

/* Every reason is always exported, zero or not, so rate() never sees a series appear from nothing.
 */
static const int close_reasons[] = {
    RB_CLOSE_NORMAL,  RB_CLOSE_TIMEOUT,     RB_CLOSE_PROTOCOL, RB_CLOSE_FULL, RB_CLOSE_SHUTDOWN,
    RB_CLOSE_TOO_BIG, RB_CLOSE_SLOW_READER, RB_CLOSE_PEER,     RB_CLOSE_EOF,  RB_CLOSE_RESET,
};

static void counter(struct out *o, const char *name, const char *help, uint64_t v)
{
    help_type(o, name, "counter", help);
    emit(o, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct out *o, const char *name, const char *help, uint64_t v)
{
    help_type(o, name, "gauge", help);
    emit(o, "%s %llu\n", name, (unsigned long long)v);
}

/*
 * rb_hist buckets are disjoint (bucket i holds values in (bounds[i-1], bounds[i]]); Prometheus
 * buckets are cumulative, so they are summed on the way out. `scale` converts the histogram's unit
 * to seconds.
 */
static void histogram(struct out *o, const char *name, const char *help, const struct rb_hist *h,
                      const uint32_t *bounds, double scale)
{
    help_type(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < RB_HIST_BUCKETS - 1; i++) {
        cum += h->bucket[i];
        emit(o, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i] * scale, (unsigned long long)cum);
    }
    cum += h->bucket[RB_HIST_BUCKETS - 1];
    /* Counters are read without a snapshot; +Inf must still equal _count for a valid series. */
    uint64_t count = cum > h->count ? cum : h->count;
    emit(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    emit(o, "%s_sum %.9g\n", name, (double)h->sum * scale);
    emit(o, "%s_count %llu\n", name, (unsigned long long)count);
}

size_t rb_metrics_render(struct rb_engine *e, char *buf, size_t cap)
{
    struct out o = {.buf = buf, .cap = cap, .len = 0};
    if (buf != NULL && cap > 0)
        buf[0] = '\0';

    struct rb_stats s;
    memset(&s, 0, sizeof(s));
    rb_engine_stats(e, &s);

    help_type(&o, "ringbeat_build_info", "gauge", "Version of the ringbeat engine.");
    emit(&o, "ringbeat_build_info{version=\"%s\"} 1\n", RB_VERSION_STRING);
    gauge(&o, "ringbeat_workers", "Worker threads running an io_uring loop.", s.workers);
    gauge(&o, "ringbeat_rings", "io_uring instances.", s.rings);

    /* Per worker, so one overloaded or stuck loop stands out from the sum. */
    struct rb_stats *ws = calloc(s.workers > 0 ? s.workers : 1, sizeof(*ws));
    unsigned nw = ws != NULL ? s.workers : 0;
    for (unsigned w = 0; w < nw; w++) {
        if (rb_engine_worker_stats(e, w, &ws[w]) != 0)
            memset(&ws[w], 0, sizeof(ws[w]));
    }
    static const char *const states[] = {"alive", "suspect", "dead"};
    help_type(&o, "ringbeat_connections", "gauge",
              "Open connections by liveness state and worker (dead ones are closing).");
    for (unsigned i = 0; i < nw; i++) {
        for (int st = 0; st < 3; st++)
            emit(&o, "ringbeat_connections{state=\"%s\",worker=\"%u\"} %llu\n", states[st], i,
                 (unsigned long long)ws[i].by_liveness[st]);
    }
    help_type(&o, "ringbeat_loop_turns_total", "counter",
              "Event loop iterations by worker; a flat line means a stuck loop.");
    for (unsigned i = 0; i < nw; i++)
        emit(&o, "ringbeat_loop_turns_total{worker=\"%u\"} %llu\n", i,
             (unsigned long long)ws[i].loop_turns);
    free(ws);

    help_type(&o, "ringbeat_mark_weight_connections", "gauge",
              "Open connections by the remaining weight of their liveness mark (7 = 7 or more).");
    for (int wgt = 0; wgt < 8; wgt++)
        emit(&o, "ringbeat_mark_weight_connections{weight=\"%d\"} %llu\n", wgt,
             (unsigned long long)s.by_weight[wgt]);

    help_type(&o, "ringbeat_accepted_total", "counter", "Connections accepted, by protocol.");
    for (size_t i = 0; i < NPROTOCOLS; i++)
        emit(&o, "ringbeat_accepted_total{protocol=\"%s\"} %llu\n", rb_protocol_name(protocols[i]),
             (unsigned long long)s.proto[protocols[i]].accepted);
    help_type(&o, "ringbeat_protocol_connections", "gauge", "Open connections by protocol.");
    for (size_t i = 0; i < NPROTOCOLS; i++)
        emit(&o, "ringbeat_protocol_connections{protocol=\"%s\"} %llu\n",
             rb_protocol_name(protocols[i]), (unsigned long long)s.proto[protocols[i]].conns);
    help_type(
        &o, "ringbeat_opened_total", "counter",
        "Connections that identified themselves (HELLO, first frame or upgrade), by protocol.");
    for (size_t i = 0; i < NPROTOCOLS; i++)
        emit(&o, "ringbeat_opened_total{protocol=\"%s\"} %llu\n", rb_protocol_name(protocols[i]),
             (unsigned long long)s.proto[protocols[i]].opened);
    help_type(&o, "ringbeat_rejected_total", "counter", "Connections refused at accept.");
    emit(&o, "ringbeat_rejected_total{reason=\"full\"} %llu\n",
         (unsigned long long)s.rejected_full);
    emit(&o, "ringbeat_rejected_total{reason=\"per_ip\"} %llu\n",
         (unsigned long long)s.rejected_per_ip);
    counter(&o, "ringbeat_accept_paused_total", "Times accepting paused to honour --accept-rate.",
            s.accept_paused);
    help_type(&o, "ringbeat_closed_total", "counter",
              "Connections closed, by protocol and reason.");
    for (size_t p = 0; p < NPROTOCOLS; p++) {
        const struct rb_proto_stats *ps = &s.proto[protocols[p]];
        for (size_t i = 0; i < sizeof(close_reasons) / sizeof(close_reasons[0]); i++) {
            int r = close_reasons[i];
            emit(&o, "ringbeat_closed_total{protocol=\"%s\",reason=\"%s\"} %llu\n",
                 rb_protocol_name(protocols[p]), rb_close_code_name(r),
                 (unsigned long long)ps->closed[r]);
        }
    }
    help_type(&o, "ringbeat_heartbeats_total", "counter",
              "Heartbeats (pings and pongs) by protocol, direction and kind.");
    for (size_t p = 0; p < NPROTOCOLS; p++) {
        const struct rb_proto_stats *ps = &s.proto[protocols[p]];
        const char *name = rb_protocol_name(protocols[p]);
        const struct {
            const char *dir, *kind;
            uint64_t v;
        } hb[] = {{"in", "ping", ps->pings_in},
                  {"in", "pong", ps->pongs_in},
                  {"out", "ping", ps->pings_out},
                  {"out", "pong", ps->pongs_out}};
        for (size_t i = 0; i < sizeof(hb) / sizeof(hb[0]); i++)
            emit(&o,
                 "ringbeat_heartbeats_total{protocol=\"%s\",direction=\"%s\",kind=\"%s\"} %llu\n",
                 name, hb[i].dir, hb[i].kind, (unsigned long long)hb[i].v);
    }
    help_type(&o, "ringbeat_messages_total", "counter",
              "Whole data messages by protocol and direction.");
    for (size_t p = 0; p < NPROTOCOLS; p++) {
        const struct rb_proto_stats *ps = &s.proto[protocols[p]];
        const char *name = rb_protocol_name(protocols[p]);
        emit(&o, "ringbeat_messages_total{protocol=\"%s\",direction=\"in\"} %llu\n", name,
             (unsigned long long)ps->data_in);
        emit(&o, "ringbeat_messages_total{protocol=\"%s\",direction=\"out\"} %llu\n", name,
             (unsigned long long)ps->data_out);
    }

    help_type(&o, "ringbeat_frames_in_total", "counter",
              "Complete protocol v1 frames received, by type.");
    for (int t = 1; t < RB_FRAME_TYPE_MAX; t++)
        emit(&o, "ringbeat_frames_in_total{type=\"%s\"} %llu\n", frame_type_names[t],
             (unsigned long long)s.frames_in[t]);
    help_type(&o, "ringbeat_frames_out_total", "counter",
              "Protocol v1 frames queued for sending, by type.");
    for (int t = 1; t < RB_FRAME_TYPE_MAX; t++)
        emit(&o, "ringbeat_frames_out_total{type=\"%s\"} %llu\n", frame_type_names[t],
             (unsigned long long)s.frames_out[t]);
    counter(&o, "ringbeat_received_bytes_total", "Bytes read from sockets.", s.bytes_in);
    counter(&o, "ringbeat_sent_bytes_total", "Bytes written to sockets.", s.bytes_out);
    counter(&o, "ringbeat_pong_unmatched_total", "PONGs whose token the server did not issue.",
            s.pong_unmatched);

    histogram(&o, "ringbeat_heartbeat_rtt_seconds",
              "Server-initiated PING to its PONG, as seen by the server.", &s.rtt_us,
              rb_rtt_bounds_us, 1e-6);
    histogram(&o, "ringbeat_detection_lateness_seconds",
              "Dead-peer detection time minus (last frame + timeout).", &s.lateness_ms,
              rb_lateness_bounds_ms, 1e-3);

    /*
     * The TLS transport as series of its own, not a label on the protocol series: every TLS
     * connection is already counted under its protocol (v1 or ws), its handshakes and alerts have
     * no plain counterpart, and a label would double every per-protocol series (and the
     * per-worker counters behind them) for the one deployment that mixes transports.
     */
    help_type(&o, "ringbeat_tls_connections", "gauge",
              "Open TLS connections by phase (ssl: served by an OpenSSL object, TLS 1.2).");
    emit(&o, "ringbeat_tls_connections{phase=\"handshake\"} %llu\n",
         (unsigned long long)s.tls.handshaking);
    emit(&o, "ringbeat_tls_connections{phase=\"established\"} %llu\n",
         (unsigned long long)s.tls.conns);
    emit(&o, "ringbeat_tls_connections{phase=\"ssl\"} %llu\n", (unsigned long long)s.tls.ssl_kept);
    help_type(&o, "ringbeat_tls_handshakes_total", "counter",
              "TLS handshakes by result (aborted: the peer went away during it).");
    {
        const struct {
            const char *name;
            uint64_t v;
        } hs[] = {{"full", s.tls.full},
                  {"resumed", s.tls.resumed},
                  {"failed", s.tls.failed},
                  {"timeout", s.tls.timeouts},
                  {"aborted", s.tls.aborted}};
        for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
            emit(&o, "ringbeat_tls_handshakes_total{result=\"%s\"} %llu\n", hs[i].name,
                 (unsigned long long)hs[i].v);
    }
    counter(&o, "ringbeat_tls_handshake_budget_exhausted_total",
            "Loop turns that left handshake work for the next (--tls-handshake-budget).",
            s.tls.budget_exhausted);
    help_type(&o, "ringbeat_tls_alerts_sent_total", "counter", "TLS alerts sent, by kind.");
    for (int k = 0; k < RB_TLS_ALERT_KINDS; k++)
        emit(&o, "ringbeat_tls_alerts_sent_total{alert=\"%s\"} %llu\n",
             rb_tls_alert_kind_name((enum rb_tls_alert_kind)k),
             (unsigned long long)s.tls.alerts_out[k]);
    counter(&o, "ringbeat_tls_alerts_received_total", "Fatal TLS alerts received from peers.",
            s.tls.alerts_in);
    help_type(&o, "ringbeat_tls_key_updates_total", "counter", "TLS 1.3 KeyUpdates by direction.");
    emit(&o, "ringbeat_tls_key_updates_total{direction=\"in\"} %llu\n",
         (unsigned long long)s.tls.key_updates_in);
    emit(&o, "ringbeat_tls_key_updates_total{direction=\"out\"} %llu\n",
         (unsigned long long)s.tls.key_updates_out);
    counter(&o, "ringbeat_tls_reloads_total", "Certificate reloads (SIGHUP) that succeeded.",
            s.tls.reloads);
    counter(&o, "ringbeat_tls_ticket_key_rotations_total", "Session ticket key rotations.",
            s.tls.rotations);

    counter(&o, "ringbeat_submits_total", "io_uring_enter calls that submitted work.", s.submits);
    counter(&o, "ringbeat_sqes_submitted_total",
            "SQEs submitted; divided by submits_total gives the batch size.", s.sqes_submitted);
    counter(&o, "ringbeat_enobufs_total", "Receives that found no provided buffer (ENOBUFS).",
            s.enobufs);
    counter(&o, "ringbeat_cq_overflow_total", "Turns that saw the completion queue overflow.",
            s.cq_overflow);
    counter(&o, "ringbeat_send_retries_total", "Sends that had to be retried (short or EAGAIN).",
            s.send_retries);
    counter(&o, "ringbeat_timer_fires_total", "Timer wheel expiries handled.", s.timer_fires);
    counter(&o, "ringbeat_pings_deferred_total",
            "PINGs held back a tick by pacing (bursts beyond twice the average rate).",
            s.pings_deferred);

    uint64_t allocated = 0, resident = 0;
    rb_memory_stats(&allocated, &resident);
    gauge(&o, "ringbeat_memory_allocated_bytes", "Bytes allocated by the process (jemalloc).",
          allocated);
    gauge(&o, "ringbeat_memory_resident_bytes", "Resident bytes of the allocator (jemalloc).",
          resident);
    return o.len;
}

/* ---- the server ---- */

/* "ADDR:PORT", "[v6]:PORT" or ":PORT" (all IPv4 addresses). */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port > 65535)
        return -EINVAL;

    char host[INET6_ADDRSTRLEN + 2];
    size_t hlen = (size_t)(colon - s);
    if (hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';

    memset(ss, 0, sizeof(*ss));
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -EINVAL;
        *len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (hlen == 0)
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -EINVAL;
    *len = sizeof(*a4);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until deadline; 0 when ready, -ETIMEDOUT, or -ECANCELED on stop. */
static int wait_fd(struct rb_metrics *m, int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = m->stop_fd, .events = POLLIN}};
        int n = poll(p, 2, (int)left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[1].revents != 0)
            return -ECANCELED;
        if (p[0].revents != 0)
            return 0;
    }
}

static int send_all(struct rb_metrics *m, int fd, const char *p, size_t n, int64_t deadline_ms)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = wait_fd(m, fd, POLLOUT, deadline_ms);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int send_simple(struct rb_metrics *m, int fd, const char *status, int64_t deadline_ms)
{
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     status, strlen(status) + 1, status);
    return send_all(m, fd, resp, (size_t)n, deadline_ms);
}

static int send_metrics(struct rb_metrics *m, int fd, int64_t deadline_ms)
{
    size_t need = rb_metrics_render(m->engine, m->body, m->body_cap);
    /* Counters move between renders; a little slack makes a second pass almost always enough. */
    for (int tries = 0; need >= m->body_cap && tries < 3; tries++) {
        size_t cap = need + need / 4 + 1024;
        char *nb = realloc(m->body, cap);
        if (nb == NULL)
            return send_simple(m, fd, "500 Internal Server Error", deadline_ms);
        m->body = nb;
        m->body_cap = cap;
        need = rb_metrics_render(m->engine, m->body, m->body_cap);
    }
    if (need >= m->body_cap)
        return send_simple(m, fd, "500 Internal Server Error", deadline_ms);

    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     need);
    int rc = send_all(m, fd, head, (size_t)n, deadline_ms);
    if (rc == 0)
        rc = send_all(m, fd, m->body, need, deadline_ms);
    return rc;
}

/* Reads one request head and answers it; the connection is closed after every response. */
static void serve_one(struct rb_metrics *m, int fd)
{
    int64_t deadline = now_ms() + METRICS_IO_TIMEOUT_MS;
    char req[METRICS_REQ_MAX + 1];
    size_t len = 0;
    for (;;) {
        if (len == METRICS_REQ_MAX) {
            send_simple(m, fd, "431 Request Header Fields Too Large", deadline);
            return;
        }
        ssize_t r = recv(fd, req + len, METRICS_REQ_MAX - len, MSG_DONTWAIT);
        if (r == 0)
            return;
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return;
            if (wait_fd(m, fd, POLLIN, deadline) < 0)
                return;
            continue;
        }
        len += (size_t)r;
        req[len] = '\0';
        if (memchr(req, '\0', len) != NULL) {
            send_simple(m, fd, "400 Bad Request", deadline);
            return;
        }
        if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL)
            break;
    }

    /* Request line: METHOD SP TARGET SP HTTP/x.y */
    char *line_end = strpbrk(req, "\r\n");
    *line_end = '\0';
    char *sp1 = strchr(req, ' ');
    char *sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        send_simple(m, fd, "400 Bad Request", deadline);
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    const char *target = sp1 + 1;
    size_t path_len = strcspn(target, "?");
    if (path_len != 8 || strncmp(target, "/metrics", 8) != 0) {
        send_simple(m, fd, "404 Not Found", deadline);
        return;
    }
    if (strcmp(req, "GET") != 0) {
        send_simple(m, fd, "405 Method Not Allowed", deadline);
        return;
    }
    send_metrics(m, fd, deadline);
}

static void *metrics_thread(void *arg)
{
    struct rb_metrics *m = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = m->listen_fd, .events = POLLIN},
                              {.fd = m->stop_fd, .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rb_log(RB_LOG_ERROR, "metrics_failed", "op=poll err=%d", errno);
            return NULL;
        }
        if (p[1].revents != 0)
            return NULL;
        if (p[0].revents == 0)
            continue;
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            /* EMFILE and friends pass; backing off keeps a full fd table from spinning the loop. */
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                usleep(100 * 1000);
            continue;
        }
        serve_one(m, fd);
        close(fd);
    }
}

int rb_metrics_start(struct rb_engine *e, const char *addr, struct rb_metrics **out)
{
    if (e == NULL || addr == NULL || out == NULL)
        return -EINVAL;
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = parse_addr(addr, &ss, &sl);
    if (rc < 0)
        return rc;

    struct rb_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->engine = e;
    m->listen_fd = -1;
    m->stop_fd = -1;
    m->body_cap = METRICS_BODY_INITIAL;
    m->body = malloc(m->body_cap);
    if (m->body == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    m->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->stop_fd < 0) {
        rc = -errno;
        goto fail;
    }
    m->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (m->listen_fd < 0) {
        rc = -errno;
        goto fail;
    }
    int one = 1;
    setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(m->listen_fd, (struct sockaddr *)&ss, sl) < 0 || listen(m->listen_fd, 16) < 0) {
        rc = -errno;
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    if (getsockname(m->listen_fd, (struct sockaddr *)&bound, &bl) < 0) {
        rc = -errno;
        goto fail;
    }
    m->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    rc = -pthread_create(&m->thread, NULL, metrics_thread, m);
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;

fail:
    if (m->listen_fd >= 0)
        close(m->listen_fd);
    if (m->stop_fd >= 0)
        close(m->stop_fd);
    free(m->body);
    free(m);
    return rc;
}

uint16_t rb_metrics_port(const struct rb_metrics *m)
{
    return m != NULL ? m->port : 0;
}

void rb_metrics_stop(struct rb_metrics *m)
{
    if (m == NULL)
        return;
    uint64_t one = 1;
    ssize_t w;
    do {
        w = write(m->stop_fd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    pthread_join(m->thread, NULL);
    close(m->listen_fd);
    close(m->stop_fd);
    free(m->body);
    free(m);
}
