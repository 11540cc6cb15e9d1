/* ringbeat-client.c — example: connect with libringbeat-client, print state changes and the
 * learned interval; -S DIR keeps what each network learned in DIR (one file per label). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringbeat_client.h"

static volatile sig_atomic_t stop;
static const char *state_dir; /* -S: one file per network label, written by store() */

static void on_signal(int sig)
{
    stop = sig;
}

static void path_for(char *path, size_t cap, const char *network)
{
    int n = snprintf(path, cap, "%s/", state_dir);
    for (const char *p = *network ? network : "default"; *p && n + 1 < (int)cap; p++)
        path[n++] = (*p == '/' || *p == '.') ? '_' : *p; /* a label never leaves the directory */
    path[n] = '\0';
}

static int load(void *user, const char *network, void *buf, size_t cap)
{
    (void)user;
    char path[512];
    path_for(path, sizeof(path), network);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return (int)n;
}

static void store(void *user, const char *network, const void *buf, size_t len)
{
    (void)user;
    char path[512];
    path_for(path, sizeof(path), network);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len)
        fprintf(stderr, "cannot write %s\n", path);
    if (f)
        fclose(f);
}

static void on_event(struct rbc *c, const struct rbc_event *ev, void *user)
{
    (void)c, (void)user;
    switch (ev->type) {
    case RBC_EV_CONNECTING:
        printf("connecting (attempt %" PRIu32 ")\n", ev->u.connecting.attempt);
        break;
    case RBC_EV_CONNECTED:
    case RBC_EV_TUNED:
        printf("%s id=%" PRIu64 " interval=%" PRIu32 "ms timeout=%" PRIu32 "ms\n",
               ev->type == RBC_EV_CONNECTED ? "connected" : "tuned", ev->u.connected.conn_id,
               ev->u.connected.interval_ms, ev->u.connected.timeout_ms);
        break;
    case RBC_EV_LIVENESS:
        printf("server %s -> %s\n", rbc_liveness_name(ev->u.liveness.from),
               rbc_liveness_name(ev->u.liveness.to));
        break;
    case RBC_EV_INTERVAL:
        printf("interval network=%s phase=%s now=%" PRIu32 "ms learned=%" PRIu32
               "ms failures=%" PRIu64 "\n",
               ev->u.interval.network, rbc_phase_name(ev->u.interval.phase),
               ev->u.interval.interval_ms, ev->u.interval.learned_ms,
               ev->u.interval.failures_total);
        break;
    case RBC_EV_DATA:
        printf("data %zu bytes\n", ev->u.data.len);
        break;
    case RBC_EV_HEARTBEAT: /* one per heartbeat: too chatty for this example */
        break;
    case RBC_EV_CLOSED:
        printf("closed reason=%s code=%d error=%s retry_in=%" PRId32 "ms\n",
               rbc_close_reason_name(ev->u.closed.reason), ev->u.closed.peer_code,
               strerror(-ev->u.closed.error), ev->u.closed.retry_in_ms);
        break;
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct rbc_config cfg = {.on_event = on_event, .load = load, .store = store};
    int opt;
    while ((opt = getopt(argc, argv, "m:n:i:x:s:S:f")) != -1) {
        switch (opt) {
        case 'm':
            cfg.mode = strcmp(optarg, "server") ? RBC_MODE_CLIENT : RBC_MODE_SERVER;
            break;
        case 'n':
            cfg.network = optarg;
            break;
        case 'i':
            cfg.smart.min_interval_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'x':
            cfg.smart.max_interval_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 's':
            cfg.smart.step_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'S':
            state_dir = optarg;
            break;
        case 'f':
            cfg.foreground = true;
            break;
        default:
            optind = argc; /* usage */
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: ringbeat-client [-m client|server] [-n NETWORK] [-i MIN_MS] "
                        "[-x MAX_MS] [-s STEP_MS] [-S STATE_DIR] [-f(oreground)] HOST:PORT\n");
        return 2;
    }
    if (!state_dir)
        cfg.load = NULL, cfg.store = NULL;
    cfg.url = argv[optind];
    struct rbc *c;
    int r = rbc_create(&cfg, &c);
    if (r < 0) {
        fprintf(stderr, "rbc_create(%s): %s\n", cfg.url, strerror(-r));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rbc_start(c);
    while (!stop) {
        struct pollfd p = {.fd = rbc_fd(c), .events = POLLIN};
        if (poll(&p, 1, rbc_timeout_ms(c)) < 0 && errno != EINTR)
            break;
        rbc_step(c);
    }
    rbc_destroy(c); /* CLOSE(1), and the learned interval goes to store() */
    return 0;
}
