/* epoll_ref.c — single-threaded epoll server speaking protocol v1: the baseline for ringbeatd. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "epoll_ref.h"

static volatile sig_atomic_t g_stop, g_stats;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_stats = 1;
    else
        g_stop = 1;
}

int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t now_ms(void)
{
    return now_us() / 1000;
}

void log_line(const char *event, const char *fmt, ...)
{
    char ts[40];
    struct timespec t;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &t);
    gmtime_r(&t.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", t.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s info %s ", ts, event);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

unsigned lat_index(uint64_t v)
{
    if (v < LAT_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 4 */
    if (e >= LAT_EXP_MAX)
        return LAT_BUCKETS - 1;
    return LAT_SUB + (e - 4) * LAT_SUB + (unsigned)((v >> (e - 4)) & (LAT_SUB - 1));
}

static uint64_t lat_high(unsigned idx)
{
    if (idx < LAT_SUB)
        return idx;
    unsigned e = (idx - LAT_SUB) / LAT_SUB + 4, sub = (idx - LAT_SUB) % LAT_SUB;
    return ((uint64_t)(LAT_SUB + sub + 1) << (e - 4)) - 1;
}

/* The highest value of the bucket holding quantile q. */
static uint64_t hist_quantile(const uint64_t *h, uint64_t count, double q)
{
    if (count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)count), seen = 0;
    for (unsigned b = 0; b < LAT_BUCKETS; b++) {
        seen += h[b];
        if (seen > want)
            return lat_high(b);
    }
    return lat_high(LAT_BUCKETS - 1);
}

/* ---- timer heap (min-heap on deadline; conns[fd].heap_idx points back) ---- */

static void heap_set(struct ref *r, uint32_t i, struct heap_ent e)
{
    r->heap[i] = e;
    r->conns[e.fd].heap_idx = i;
}

static void heap_sift(struct ref *r, uint32_t i)
{
    struct heap_ent e = r->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (r->heap[p].deadline_ms <= e.deadline_ms)
            break;
        heap_set(r, i, r->heap[p]);
        i = p;
    }
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= r->heap_len)
            break;
        if (c + 1 < r->heap_len && r->heap[c + 1].deadline_ms < r->heap[c].deadline_ms)
            c++;
        if (r->heap[c].deadline_ms >= e.deadline_ms)
            break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, e);
}

void heap_update(struct ref *r, int fd, int64_t deadline_ms)
{
    struct conn *c = &r->conns[fd];
    if (c->heap_idx == REF_NO_HEAP) {
        c->heap_idx = r->heap_len++;
        r->heap[c->heap_idx] = (struct heap_ent){deadline_ms, fd};
    } else {
        r->heap[c->heap_idx].deadline_ms = deadline_ms;
    }
    heap_sift(r, c->heap_idx);
}

void heap_remove(struct ref *r, int fd)
{
    uint32_t i = r->conns[fd].heap_idx;
    if (i == REF_NO_HEAP)
        return;
    r->conns[fd].heap_idx = REF_NO_HEAP;
    if (--r->heap_len != i) {
        heap_set(r, i, r->heap[r->heap_len]);
        heap_sift(r, i);
    }
}

/* The next moment this connection needs attention: its timeout, or in server mode its next PING. */
int64_t conn_deadline(const struct conn *c)
{
    int64_t dl = c->last_rx_ms + c->timeout_ms;
    if (c->mode == RB_MODE_SERVER) {
        int64_t quiet_since = c->last_ping_ms > c->last_rx_ms ? c->last_ping_ms : c->last_rx_ms;
        int64_t ping = quiet_since + c->interval_ms;
        if (ping < dl)
            dl = ping;
    }
    return dl;
}

static void on_timers(struct ref *r)
{
    int64_t now = now_ms();
    while (r->heap_len > 0 && r->heap[0].deadline_ms <= now + REF_SLACK_MS) {
        int fd = r->heap[0].fd;
        struct conn *c = &r->conns[fd];
        int64_t dead_at = c->last_rx_ms + c->timeout_ms;
        if (now >= dead_at) {
            uint64_t late = (uint64_t)(now - dead_at) * 1000;
            r->late_hist[lat_index(late)]++;
            r->late_count++;
            conn_close_with(r, fd, RB_CLOSE_TIMEOUT, &r->closed_timeout);
            continue;
        }
        if (c->mode == RB_MODE_SERVER) {
            int64_t quiet_since = c->last_ping_ms > c->last_rx_ms ? c->last_ping_ms : c->last_rx_ms;
            if (now + REF_SLACK_MS >= quiet_since + c->interval_ms) {
                uint8_t buf[RB_FRAME_HEADER_LEN + RB__PING_LEN];
                uint64_t token = (uint64_t)now_us();
                c->ping_token = token;
                c->last_ping_ms = now;
                r->pings_out++;
                r->frames_out++;
                if (!conn_write(r, fd, buf, rb__put_ping(buf, RB_FRAME_PING, token)))
                    continue;
            }
        }
        int64_t dl = conn_deadline(c);
        /* Never re-arm into the slack window, or the loop would spin on a timer it just handled. */
        if (dl <= now + REF_SLACK_MS)
            dl = now + REF_SLACK_MS + 1;
        heap_update(r, fd, dl);
    }
}

static void print_stats(struct ref *r)
{
    log_line(
        "stats",
        "conns=%llu accepted=%llu rejected_full=%llu closed_timeout=%llu closed_eof=%llu "
        "closed_peer=%llu closed_reset=%llu closed_proto=%llu closed_slow=%llu hellos=%llu "
        "pings_in=%llu pongs_out=%llu pings_out=%llu pongs_in=%llu data_in=%llu frames_in=%llu "
        "frames_out=%llu "
        "rtt_p50_us=%llu rtt_p99_us=%llu lateness_p99_us=%llu",
        (unsigned long long)r->nopen, (unsigned long long)r->accepted,
        (unsigned long long)r->rejected_full, (unsigned long long)r->closed_timeout,
        (unsigned long long)r->closed_eof, (unsigned long long)r->closed_peer,
        (unsigned long long)r->closed_reset, (unsigned long long)r->closed_proto,
        (unsigned long long)r->closed_slow, (unsigned long long)r->hellos,
        (unsigned long long)r->pings_in, (unsigned long long)r->pongs_out,
        (unsigned long long)r->pings_out, (unsigned long long)r->pongs_in,
        (unsigned long long)r->data_in, (unsigned long long)r->frames_in,
        (unsigned long long)r->frames_out,
        (unsigned long long)hist_quantile(r->rtt_hist, r->rtt_count, 0.50),
        (unsigned long long)hist_quantile(r->rtt_hist, r->rtt_count, 0.99),
        (unsigned long long)hist_quantile(r->late_hist, r->late_count, 0.99));
}

static int run(struct ref *r)
{
    struct epoll_event evs[REF_EVENTS];
    int64_t next_stats = r->stats_interval_ms ? now_ms() + (int64_t)r->stats_interval_ms : 0;
    while (!g_stop) {
        int64_t now = now_ms();
        int timeout = -1;
        int64_t wake = INT64_MAX;
        if (r->heap_len > 0)
            wake = r->heap[0].deadline_ms;
        if (next_stats && next_stats < wake)
            wake = next_stats;
        if (r->accept_paused_until_ms && r->accept_paused_until_ms < wake)
            wake = r->accept_paused_until_ms;
        if (wake != INT64_MAX)
            timeout = wake <= now ? 0 : (int)(wake - now);
        int n = epoll_wait(r->epfd, evs, REF_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == r->lfd) {
                on_accept(r);
                continue;
            }
            if (!r->conns[fd].open)
                continue; /* closed earlier in this batch */
            if (evs[i].events & EPOLLOUT)
                on_writable(r, fd);
            if (r->conns[fd].open && evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(r, fd);
        }
        on_timers(r);
        now = now_ms();
        if (r->accept_paused_until_ms && now >= r->accept_paused_until_ms) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = r->lfd};
            epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->lfd, &ev);
            r->accept_paused_until_ms = 0;
        }
        if (g_stats || (next_stats && now >= next_stats)) {
            g_stats = 0;
            print_stats(r);
            if (next_stats)
                next_stats = now + (int64_t)r->stats_interval_ms;
        }
    }
    /* Shutdown: CLOSE(5) to everyone, as ringbeatd does. */
    uint64_t shut = 0;
    for (uint32_t fd = 0; fd < r->nconns_max; fd++)
        if (r->conns[fd].open)
            conn_close_with(r, (int)fd, RB_CLOSE_SHUTDOWN, &shut);
    print_stats(r);
    log_line("stopped", "closed=%llu", (unsigned long long)shut);
    return 0;
}

/* ---- command line ---- */

static int parse_duration_ms(const char *s, uint64_t *out_ms)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -EINVAL;
    uint64_t us;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        us = v * 1000;
    else if (strcmp(end, "us") == 0)
        us = v;
    else if (strcmp(end, "s") == 0)
        us = v * 1000000;
    else if (strcmp(end, "m") == 0)
        us = v * 60000000;
    else
        return -EINVAL;
    *out_ms = us / 1000;
    return 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

static int open_listener(const char *spec, int *out_fd)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host)
        return -EINVAL;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    uint32_t port;
    if (parse_u32(colon + 1, &port) < 0 || port > 65535)
        return -EINVAL;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char addr[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof addr);
    log_line("listening", "addr=%s:%u", addr, ntohs(sa.sin_port));
    *out_fd = fd;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: epoll_ref [--listen ADDR:PORT] [--mode server|client|silent] "
               "[--interval D] [--timeout D]\n"
               "                 [--min-interval D] [--max-interval D] [--max-conns N] "
               "[--max-frame N]\n"
               "                 [--max-pending-out BYTES] [--stats-interval D]\n"
               "durations: 500us, 250ms, 30s, 2m; a bare number is ms\n");
}

static int bad_flag(const char *flag, const char *val)
{
    fprintf(stderr, "epoll_ref: invalid value for --%s: '%s'\n", flag, val);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'},
        {"mode", required_argument, 0, 'm'},
        {"interval", required_argument, 0, 'i'},
        {"timeout", required_argument, 0, 't'},
        {"min-interval", required_argument, 0, 'a'},
        {"max-interval", required_argument, 0, 'b'},
        {"max-conns", required_argument, 0, 'c'},
        {"max-frame", required_argument, 0, 'f'},
        {"max-pending-out", required_argument, 0, 'o'},
        {"stats-interval", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct ref r = {
        .mode = RB_MODE_SERVER,
        .interval_ms = 30000,
        .min_interval_ms = 1000,
        .max_interval_ms = 3600000,
        .max_frame = 4096,
        .max_pending_out = 65536,
        .stats_interval_ms = 10000,
    };
    const char *listen_spec = "0.0.0.0:7600";
    uint64_t v;
    int opt, idx;
    while ((opt = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        switch (opt) {
        case 'l':
            listen_spec = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "server") == 0)
                r.mode = RB_MODE_SERVER;
            else if (strcmp(optarg, "client") == 0)
                r.mode = RB_MODE_CLIENT;
            else if (strcmp(optarg, "silent") == 0)
                r.mode = RB_MODE_SILENT;
            else
                return bad_flag("mode", optarg);
            break;
        case 'i':
        case 't':
        case 'a':
        case 'b':
        case 's':
            if (parse_duration_ms(optarg, &v) < 0 || v > UINT32_MAX ||
                (v == 0 && opt != 's' && opt != 't'))
                return bad_flag(opts[idx].name, optarg);
            if (opt == 'i')
                r.interval_ms = (uint32_t)v;
            else if (opt == 't')
                r.timeout_ms = (uint32_t)v;
            else if (opt == 'a')
                r.min_interval_ms = (uint32_t)v;
            else if (opt == 'b')
                r.max_interval_ms = (uint32_t)v;
            else
                r.stats_interval_ms = v;
            break;
        case 'c':
            if (parse_u32(optarg, &r.max_conns) < 0)
                return bad_flag("max-conns", optarg);
            break;
        case 'f':
            if (parse_u32(optarg, &r.max_frame) < 0 || r.max_frame > UINT16_MAX)
                return bad_flag("max-frame", optarg);
            break;
        case 'o':
            if (parse_u32(optarg, &r.max_pending_out) < 0)
                return bad_flag("max-pending-out", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "epoll_ref: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (r.timeout_ms == 0)
        r.timeout_ms = 3 * r.interval_ms;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1;
    r.nconns_max = rl.rlim_cur > 1u << 22 ? 1u << 22 : (uint32_t)rl.rlim_cur;
    if (r.max_conns == 0 || r.max_conns > r.nconns_max)
        r.max_conns = r.nconns_max;
    /* calloc'd arrays are touched page by page as fds are used, so RSS follows the load. */
    r.conns = calloc(r.nconns_max, sizeof *r.conns);
    r.heap = calloc(r.nconns_max, sizeof *r.heap);
    r.rx = malloc(REF_RX_BUF);
    r.tx = malloc(REF_TX_BUF);
    if (!r.conns || !r.heap || !r.rx || !r.tx) {
        fprintf(stderr, "epoll_ref: out of memory\n");
        return 1;
    }

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait must wake */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = open_listener(listen_spec, &r.lfd);
    if (rc < 0) {
        fprintf(stderr, "epoll_ref: --listen %s: %s\n", listen_spec, strerror(-rc));
        return rc == -EINVAL ? 2 : 1;
    }
    r.epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = r.lfd};
    if (r.epfd < 0 || epoll_ctl(r.epfd, EPOLL_CTL_ADD, r.lfd, &ev) < 0) {
        perror("epoll_ref: epoll");
        return 1;
    }
    rc = run(&r);
    close(r.epfd);
    close(r.lfd);
    free(r.conns);
    free(r.heap);
    free(r.rx);
    free(r.tx);
    if (rc < 0) {
        fprintf(stderr, "epoll_ref: epoll_wait: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
