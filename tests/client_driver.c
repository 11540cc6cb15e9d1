/* client_driver.c — libringbeat-client under test control: every event as one line on stdout,
 * commands on stdin (tests/integration/test_client*.py drive it against the real ringbeatd). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ringbeat_client.h"

/*
 * Output: "<rbc_clock_ms> <event> key=value ...", one line per event, flushed at once.
 * Commands (one per stdin line): "send TEXT", "fg 0|1", "net LABEL", "start", "stop", "info",
 * "stats", "quit" (also end of input). --state FILE persists learned records as "label hex"
 * lines (the app's side of the load/store pair).
 */

#define LABELS 32

static struct {
    char label[RBC_NETWORK_MAX];
    uint8_t rec[RBC_STATE_MAX];
    size_t len;
} table[LABELS];
static const char *state_path;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&out_mu);
    printf("%" PRIu64 " ", rbc_clock_ms());
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
    va_end(ap);
}

static int slot(const char *label, int create)
{
    for (int i = 0; i < LABELS; i++)
        if (table[i].len && !strcmp(table[i].label, label))
            return i;
    for (int i = 0; create && i < LABELS; i++)
        if (!table[i].len)
            return i;
    return -1;
}

static void state_read(void)
{
    FILE *f = fopen(state_path, "r");
    char label[RBC_NETWORK_MAX], hex[2 * RBC_STATE_MAX + 1];
    while (f && fscanf(f, "%63s %64s", label, hex) == 2) {
        int i = slot(strcmp(label, "-") ? label : "", 1);
        if (i < 0)
            break;
        snprintf(table[i].label, sizeof(table[i].label), "%s", strcmp(label, "-") ? label : "");
        size_t n = strlen(hex) / 2;
        for (size_t k = 0; k < n && k < RBC_STATE_MAX; k++)
            sscanf(hex + 2 * k, "%2hhx", &table[i].rec[k]);
        table[i].len = n;
    }
    if (f)
        fclose(f);
}

static void state_write(void)
{
    FILE *f = fopen(state_path, "w");
    for (int i = 0; f && i < LABELS; i++) {
        if (!table[i].len)
            continue;
        fprintf(f, "%s ", table[i].label[0] ? table[i].label : "-");
        for (size_t k = 0; k < table[i].len; k++)
            fprintf(f, "%02x", table[i].rec[k]);
        fputc('\n', f);
    }
    if (f)
        fclose(f);
}

static int load(void *user, const char *network, void *buf, size_t cap)
{
    (void)user;
    int i = slot(network, 0);
    size_t n = i < 0 ? 0 : table[i].len < cap ? table[i].len : cap;
    if (n)
        memcpy(buf, table[i].rec, n);
    out("load network=%s bytes=%zu", network, n);
    return (int)n;
}

static void store(void *user, const char *network, const void *buf, size_t len)
{
    (void)user;
    int i = slot(network, 1);
    if (i < 0 || len > RBC_STATE_MAX)
        return;
    snprintf(table[i].label, sizeof(table[i].label), "%s", network);
    memcpy(table[i].rec, buf, len);
    table[i].len = len;
    out("store network=%s bytes=%zu", network, len);
    if (state_path)
        state_write();
}

static void print_info(const char *what, const struct rbc_heartbeat *h)
{
    out("%s network=%s phase=%s now=%" PRIu32 " learned=%" PRIu32 " failures=%" PRIu32
        " total_failures=%" PRIu64 " heartbeats=%" PRIu64 " tune=%d",
        what, h->network[0] ? h->network : "-", rbc_phase_name(h->phase), h->interval_ms,
        h->learned_ms, h->failures, h->failures_total, h->heartbeats, h->tune);
}

static void on_event(struct rbc *c, const struct rbc_event *ev, void *user)
{
    (void)c, (void)user;
    switch (ev->type) {
    case RBC_EV_CONNECTING:
        out("connecting attempt=%" PRIu32, ev->u.connecting.attempt);
        break;
    case RBC_EV_CONNECTED:
    case RBC_EV_TUNED:
        out("%s id=%" PRIu64 " interval=%" PRIu32 " timeout=%" PRIu32,
            ev->type == RBC_EV_CONNECTED ? "connected" : "tuned", ev->u.connected.conn_id,
            ev->u.connected.interval_ms, ev->u.connected.timeout_ms);
        break;
    case RBC_EV_LIVENESS:
        out("liveness from=%s to=%s", rbc_liveness_name(ev->u.liveness.from),
            rbc_liveness_name(ev->u.liveness.to));
        break;
    case RBC_EV_HEARTBEAT:
        out("heartbeat ok=%d counted=%d interval=%" PRIu32 " rtt=%" PRIu32, ev->u.heartbeat.ok,
            ev->u.heartbeat.counted, ev->u.heartbeat.interval_ms, ev->u.heartbeat.rtt_ms);
        break;
    case RBC_EV_INTERVAL:
        print_info("interval", &ev->u.interval);
        break;
    case RBC_EV_DATA:
        out("data len=%zu text=%.*s", ev->u.data.len, (int)ev->u.data.len,
            (const char *)ev->u.data.data);
        break;
    case RBC_EV_CLOSED:
        out("closed reason=%s code=%d error=%d retry=%" PRId32,
            rbc_close_reason_name(ev->u.closed.reason), ev->u.closed.peer_code, ev->u.closed.error,
            ev->u.closed.retry_in_ms);
        break;
    }
}

/* One command line; returns 0 to go on, 1 to quit. */
static int command(struct rbc *c, char *line)
{
    line[strcspn(line, "\n")] = '\0';
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = '\0';
    int r = 0;
    if (!strcmp(line, "quit")) {
        return 1;
    } else if (!strcmp(line, "send")) {
        r = rbc_send(c, arg ? arg : "", arg ? strlen(arg) : 0);
    } else if (!strcmp(line, "fg")) {
        r = rbc_set_foreground(c, arg && atoi(arg));
    } else if (!strcmp(line, "net")) {
        r = rbc_network_changed(c, arg ? arg : "");
    } else if (!strcmp(line, "start")) {
        r = rbc_start(c);
    } else if (!strcmp(line, "stop")) {
        r = rbc_stop(c);
    } else if (!strcmp(line, "info")) {
        struct rbc_heartbeat h;
        rbc_heartbeat_info(c, &h);
        print_info("info", &h);
    } else if (!strcmp(line, "stats")) {
        struct rbc_stats s;
        rbc_stats(c, &s);
        out("stats attempts=%" PRIu64 " opened=%" PRIu64 " pings_sent=%" PRIu64
            " pongs_received=%" PRIu64 " pings_received=%" PRIu64 " pongs_sent=%" PRIu64
            " heartbeats_ok=%" PRIu64 " heartbeats_failed=%" PRIu64 " tunes_sent=%" PRIu64
            " tunes_refused=%" PRIu64 " data_sent=%" PRIu64 " data_received=%" PRIu64,
            s.attempts, s.opened, s.pings_sent, s.pongs_received, s.pings_received, s.pongs_sent,
            s.heartbeats_ok, s.heartbeats_failed, s.tunes_sent, s.tunes_refused, s.data_sent,
            s.data_received);
    } else {
        r = -EINVAL;
    }
    out("result cmd=%s r=%d", line, r);
    return 0;
}

static uint32_t num(const char *s)
{
    return (uint32_t)strtoul(s, NULL, 10);
}

int main(int argc, char **argv)
{
    struct rbc_config cfg = {.on_event = on_event, .load = load, .store = store};
    static const struct option opts[] = {{"mode", 1, 0, 'm'},        {"min", 1, 0, 'i'},
                                         {"max", 1, 0, 'x'},         {"step", 1, 0, 's'},
                                         {"margin", 1, 0, 'g'},      {"warmup", 1, 0, 'w'},
                                         {"to-step", 1, 0, 'u'},     {"to-settle", 1, 0, 'd'},
                                         {"reprobe", 1, 0, 'r'},     {"answer", 1, 0, 'a'},
                                         {"connect", 1, 0, 'c'},     {"backoff-min", 1, 0, 'b'},
                                         {"backoff-max", 1, 0, 'B'}, {"network", 1, 0, 'n'},
                                         {"foreground", 0, 0, 'f'},  {"fixed", 0, 0, 'F'},
                                         {"state", 1, 0, 'S'},       {"thread", 0, 0, 'T'},
                                         {"seed", 1, 0, 'e'},        {"client-id", 1, 0, 'I'},
                                         {"max-frame", 1, 0, 'M'},   {0, 0, 0, 0}};
    int opt, threaded = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            cfg.mode = strcmp(optarg, "server") ? RBC_MODE_CLIENT : RBC_MODE_SERVER;
            break;
        case 'i':
            cfg.smart.min_interval_ms = num(optarg);
            break;
        case 'x':
            cfg.smart.max_interval_ms = num(optarg);
            break;
        case 's':
            cfg.smart.step_ms = num(optarg);
            break;
        case 'g':
            cfg.smart.margin_ms = num(optarg);
            break;
        case 'w':
            cfg.smart.warmup = num(optarg);
            break;
        case 'u':
            cfg.smart.successes_to_step = num(optarg);
            break;
        case 'd':
            cfg.smart.failures_to_settle = num(optarg);
            break;
        case 'r':
            cfg.smart.reprobe_ms = num(optarg);
            break;
        case 'a':
            cfg.answer_timeout_ms = num(optarg);
            break;
        case 'c':
            cfg.connect_timeout_ms = num(optarg);
            break;
        case 'b':
            cfg.backoff_min_ms = num(optarg);
            break;
        case 'B':
            cfg.backoff_max_ms = num(optarg);
            break;
        case 'n':
            cfg.network = optarg;
            break;
        case 'f':
            cfg.foreground = true;
            break;
        case 'F':
            cfg.smart.fixed = true;
            break;
        case 'S':
            state_path = optarg;
            break;
        case 'T':
            threaded = 1;
            break;
        case 'e':
            cfg.seed = strtoull(optarg, NULL, 10);
            break;
        case 'I':
            cfg.client_id = optarg;
            break;
        case 'M':
            cfg.max_frame = num(optarg);
            break;
        default:
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: client_driver [options] URL\n");
        return 2;
    }
    cfg.url = argv[optind];
    if (state_path)
        state_read();
    struct rbc *c;
    int r = rbc_create(&cfg, &c);
    if (r < 0) {
        out("create_failed r=%d", r);
        return 1;
    }
    out("created fd=%d", rbc_fd(c));
    if (threaded && (r = rbc_thread_start(c)) < 0) {
        out("thread_failed r=%d", r);
        return 1;
    }
    rbc_start(c);
    char line[512];
    if (threaded) {
        while (fgets(line, sizeof(line), stdin) && !command(c, line))
            ;
        rbc_thread_stop(c);
    } else {
        /* stdin is read with read(), not stdio, so that poll() sees every line that waits. */
        size_t have = 0;
        for (int done = 0; !done;) {
            struct pollfd p[2] = {{.fd = rbc_fd(c), .events = POLLIN},
                                  {.fd = STDIN_FILENO, .events = POLLIN}};
            if (poll(p, 2, rbc_timeout_ms(c)) < 0 && errno != EINTR)
                break;
            if (p[1].revents) {
                ssize_t n = read(STDIN_FILENO, line + have, sizeof(line) - 1 - have);
                done = n <= 0;
                have += n > 0 ? (size_t)n : 0;
                char *nl;
                while (!done && (nl = memchr(line, '\n', have))) {
                    size_t len = (size_t)(nl - line) + 1;
                    char cmd[sizeof(line)];
                    memcpy(cmd, line, len);
                    cmd[len] = '\0';
                    memmove(line, line + len, have - len);
                    have -= len;
                    done = command(c, cmd);
                }
                if (have == sizeof(line) - 1)
                    have = 0; /* an overlong line is dropped */
            }
            rbc_step(c);
        }
    }
    rbc_destroy(c);
    out("destroyed");
    return 0;
}
