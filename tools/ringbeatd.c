/* ringbeatd.c — the heartbeat daemon: flags to rb_config, signals, stats lines, systemd notify. */
#define _GNU_SOURCE /* sigtimedwait, getopt_long */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef RB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "presence.h"
#include "ringbeat.h"

#include "ringbeatd.h"

/* ---- stats ---- */

/* Interpolates inside the bucket that holds the quantile, like Prometheus' histogram_quantile. */
static double hist_quantile(const struct rb_hist *h, const uint32_t *bounds, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < RB_HIST_BUCKETS; i++)
        total += h->bucket[i];
    if (total == 0)
        return -1;
    double rank = q * (double)total;
    uint64_t cum = 0;
    for (int i = 0; i < RB_HIST_BUCKETS; i++) {
        uint64_t prev = cum;
        cum += h->bucket[i];
        if ((double)cum >= rank && h->bucket[i] != 0) {
            if (i == RB_HIST_BUCKETS - 1)
                return bounds[RB_HIST_BUCKETS - 2]; /* +Inf: the best we can say is "above" */
            double lo = i == 0 ? 0 : bounds[i - 1];
            double frac = (rank - (double)prev) / (double)h->bucket[i];
            return lo + frac * ((double)bounds[i] - lo);
        }
    }
    return bounds[RB_HIST_BUCKETS - 2];
}

static void log_stats(struct rb_engine *e, const char *event, bool tls)
{
    static const int reasons[] = {
        RB_CLOSE_NORMAL,       RB_CLOSE_TIMEOUT,     RB_CLOSE_PROTOCOL,    RB_CLOSE_FULL,
        RB_CLOSE_SHUTDOWN,     RB_CLOSE_TOO_BIG,     RB_CLOSE_SLOW_READER, RB_CLOSE_REPLACED,
        RB_CLOSE_UNAUTHORIZED, RB_CLOSE_BAD_PAYLOAD, RB_CLOSE_HANDSHAKE,   RB_CLOSE_PEER,
        RB_CLOSE_EOF,          RB_CLOSE_RESET,
    };
    struct rb_stats s;
    memset(&s, 0, sizeof(s));
    rb_engine_stats(e, &s);

    char line[1024];
    size_t n = 0;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (n < sizeof(line))                                                                      \
            n += (size_t)snprintf(line + n, sizeof(line) - n, __VA_ARGS__);                        \
    } while (0)
    APPEND("conns=%" PRIu64 " alive=%" PRIu64 " suspect=%" PRIu64 " accepted=%" PRIu64
           " rejected_full=%" PRIu64 " rejected_per_ip=%" PRIu64,
           s.conns, s.by_liveness[RB_ALIVE], s.by_liveness[RB_SUSPECT], s.accepted, s.rejected_full,
           s.rejected_per_ip);
    /* Every reason, zeros included: a fixed set of keys is easier for scripts than a varying one.
     */
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        APPEND(" closed_%s=%" PRIu64, rb_close_code_name(reasons[i]), s.closed[reasons[i]]);
    uint64_t in = 0, out = 0;
    for (int t = 0; t < RB_FRAME_TYPE_MAX; t++) {
        in += s.frames_in[t];
        out += s.frames_out[t];
    }
    APPEND(" frames_in=%" PRIu64 " frames_out=%" PRIu64, in, out);
    /* Protocol-neutral: every protocol's pings and pongs received (v1 frames_in counts v1 only). */
    uint64_t hb_in = 0;
    for (int p = 0; p < RB_PROTOCOL_MAX; p++)
        hb_in += s.proto[p].pings_in + s.proto[p].pongs_in;
    APPEND(" heartbeats_in=%" PRIu64 " ws_conns=%" PRIu64, hb_in, s.proto[RB_PROTOCOL_WS].conns);
    if (tls)
        APPEND(" tls_conns=%" PRIu64 " tls_handshaking=%" PRIu64 " tls_full=%" PRIu64
               " tls_resumed=%" PRIu64 " tls_failed=%" PRIu64,
               s.tls.conns, s.tls.handshaking, s.tls.full, s.tls.resumed,
               s.tls.failed + s.tls.timeouts);
    double rtt = hist_quantile(&s.rtt_us, rb_rtt_bounds_us, 0.99);
    if (rtt >= 0)
        APPEND(" rtt_p99_us=%.0f", rtt);
    double late = hist_quantile(&s.lateness_ms, rb_lateness_bounds_ms, 0.99);
    if (late >= 0)
        APPEND(" lateness_p99_ms=%.0f", late);
    double lag = hist_quantile(&s.loop_lag_ms, rb_lateness_bounds_ms, 0.99);
    if (lag >= 0)
        APPEND(" loop_lag_p99_ms=%.0f", lag);
    APPEND(" lag_turns=%" PRIu64 " keepalive_timeouts=%" PRIu64 " deaths_postponed=%" PRIu64,
           s.lag_turns, s.keepalive_timeouts, s.deaths_postponed);
#undef APPEND
    rb_log(RB_LOG_INFO, event, "%s", line);
#ifdef RB_HAVE_SYSTEMD
    sd_notifyf(0, "STATUS=%" PRIu64 " connections, %" PRIu64 " suspect", s.conns,
               s.by_liveness[RB_SUSPECT]);
#endif
}

/* ---- main loop ---- */

static uint64_t mono_ms(void)
{
    return rb_clock_ns() / 1000000;
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    default:
        return "other";
    }
}

/* ---- presence, tokens, logs of connections ---- */

/* The first line of a file, without its line end; the caller frees it. */
static char *read_secret(const char *path, const char *flag)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(stderr, "ringbeatd: %s: cannot open '%s': %s\n", flag, path, strerror(errno));
        exit(EXIT_USAGE);
    }
    char buf[1024];
    char *line = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (line)
        buf[strcspn(buf, "\r\n")] = '\0';
    if (!line || !buf[0]) {
        fprintf(stderr, "ringbeatd: %s: '%s' holds no password on its first line\n", flag, path);
        exit(EXIT_USAGE);
    }
    char *out = strdup(buf);
    memset(buf, 0, sizeof(buf));
    return out;
}

static void warn_if_readable(const char *path, const char *flag)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        rb_log(RB_LOG_WARN, "secret_file_mode", "flag=%s path=%s mode=%03o hint=\"chmod 600\"",
               flag, path, (unsigned)(st.st_mode & 0777));
}

/* --log-level debug: one line per open (with the peer address: from the PROXY header when
 * there is one) and per close, around the presence component's callbacks. */
static struct rb_callbacks inner_cb;

static void log_open(struct rb_engine *e, const struct rb_conn_info *info, void *user)
{
    char peer[RB_ADDR_STRLEN], client[2 * RB_CLIENT_ID_MAX + 1];
    rb_format_addr(&info->peer, peer, sizeof(peer));
    size_t n = 0;
    for (size_t i = 0; i < info->client_id_len && n + 2 < sizeof(client); i++) {
        unsigned char ch = (unsigned char)info->client_id[i];
        client[n++] = ch > 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    client[n] = '\0';
    rb_log(RB_LOG_DEBUG, "conn_open", "conn=%llu peer=%s client=\"%s\" proxy_local=%d",
           (unsigned long long)info->id, peer, client, info->proxy_local);
    if (inner_cb.on_open)
        inner_cb.on_open(e, info, user);
}

static void log_close(struct rb_engine *e, uint64_t id, int reason, int peer_code, void *user)
{
    rb_log(RB_LOG_DEBUG, "conn_close", "conn=%llu reason=%s", (unsigned long long)id,
           rb_close_code_name(reason));
    if (inner_cb.on_close)
        inner_cb.on_close(e, id, reason, peer_code, user);
}

int main(int argc, char **argv)
{
    struct options o;
    rbd_parse_args(argc, argv, &o);

    rb_log_configure(o.log_level, o.log_format);
    if (o.log_file != NULL) {
        int rc = rb_log_set_file(o.log_file);
        if (rc < 0) {
            fprintf(stderr, "ringbeatd: --log-file: cannot open '%s': %s\n", o.log_file,
                    strerror(-rc));
            return EXIT_RUNTIME;
        }
    }

    /*
     * Blocked before any thread exists, so every worker and the metrics thread inherit the mask
     * and the signals reach only sigtimedwait below. A peer that resets while a send is in flight
     * must not kill the process: SIGPIPE is ignored.
     */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Keys: every generation loaded stays until exit (a worker may be reading the previous one). */
    struct rb_auth *auth_keys[64];
    unsigned auth_gen = 0;
    if (o.auth_secret_file) {
        int arc = rb_auth_load(o.auth_secret_file, &auth_keys[0]);
        if (arc < 0) {
            fprintf(stderr, "ringbeatd: --auth-secret-file: cannot use '%s': %s\n",
                    o.auth_secret_file,
                    arc == -EINVAL ? "a line is not a hex key of 16..128 bytes, or no key"
                                   : strerror(-arc));
            return EXIT_USAGE;
        }
        warn_if_readable(o.auth_secret_file, "--auth-secret-file");
        o.cfg.auth = auth_keys[auth_gen++];
    }

    struct rbp *presence = NULL;
    char *password = NULL;
    if (o.presence.url || o.presence.single_session) {
        if (o.redis_password_file) {
            password = read_secret(o.redis_password_file, "--redis-password-file");
            warn_if_readable(o.redis_password_file, "--redis-password-file");
        } else if (getenv("RINGBEAT_REDIS_PASSWORD") && getenv("RINGBEAT_REDIS_PASSWORD")[0]) {
            password = strdup(getenv("RINGBEAT_REDIS_PASSWORD"));
        }
        o.presence.password = password;
        int prc = rbp_create(&o.presence, &presence);
        if (password) {
            memset(password, 0, strlen(password));
            free(password);
        }
        if (prc < 0) {
            rb_log(RB_LOG_ERROR, "start_failed", "op=presence err=\"%s\"", strerror(-prc));
            return EXIT_RUNTIME;
        }
        rbp_attach(presence, &o.cfg);
    }
    if (o.log_level >= RB_LOG_DEBUG) {
        inner_cb = o.cfg.cb;
        o.cfg.cb.on_open = log_open;
        o.cfg.cb.on_close = log_close;
        o.cfg.peer_addr = true;
    }

    struct rb_engine *e = NULL;
    int rc = rb_engine_create(&o.cfg, &e);
    if (rc < 0) {
        rb_log(RB_LOG_ERROR, "start_failed", "op=create err=\"%s\"", strerror(-rc));
        return EXIT_RUNTIME;
    }
    rc = rb_engine_start(e);
    if (rc < 0) {
        rb_log(RB_LOG_ERROR, "start_failed", "op=start err=\"%s\"", strerror(-rc));
        rb_engine_stop(e);
        rb_engine_wait(e);
        rb_engine_destroy(e);
        return EXIT_RUNTIME;
    }
    /* The engine itself logs one `listening addr=...` line per listener, with the bound port. */
    if (presence) {
        rc = rbp_start(presence, e);
        if (rc < 0) {
            rb_log(RB_LOG_ERROR, "start_failed", "op=presence err=\"%s\"", strerror(-rc));
            rb_engine_stop(e);
            rb_engine_wait(e);
            rb_engine_destroy(e);
            rbp_destroy(presence);
            return EXIT_RUNTIME;
        }
        rb_engine_set_metrics_extra(e, rbp_metrics, presence);
        if (o.presence.url)
            rb_log(RB_LOG_INFO, "presence", "redis=%s node=%s prefix=%s single_session=%d",
                   o.presence.url, o.presence.node, o.presence.prefix, o.presence.single_session);
    }

    struct rb_metrics *metrics = NULL;
    if (o.metrics_addr != NULL) {
        rc = rb_metrics_start(e, o.metrics_addr, &metrics);
        if (rc < 0) {
            rb_log(RB_LOG_ERROR, "start_failed", "op=metrics addr=%s err=\"%s\"", o.metrics_addr,
                   strerror(-rc));
            rb_engine_stop(e);
            rb_engine_wait(e);
            rb_engine_destroy(e);
            return EXIT_RUNTIME;
        }
        const char *colon = strrchr(o.metrics_addr, ':');
        int hlen = (int)(colon - o.metrics_addr);
        rb_log(RB_LOG_INFO, "metrics_listening", "addr=%.*s:%u", hlen > 0 ? hlen : 7,
               hlen > 0 ? o.metrics_addr : "0.0.0.0", rb_metrics_port(metrics));
    }

    struct rb_stats st;
    memset(&st, 0, sizeof(st));
    rb_engine_stats(e, &st);
    uint32_t timeout_ms = o.cfg.timeout_ms != 0 ? o.cfg.timeout_ms : 3 * o.cfg.interval_ms;
    rb_log(RB_LOG_INFO, "started",
           "version=%s workers=%u rings=%u mode=%s interval_ms=%u timeout_ms=%u max_conns=%u",
           RB_VERSION_STRING, st.workers, st.rings, rb_mode_name(o.cfg.mode), o.cfg.interval_ms,
           timeout_ms, o.cfg.max_conns);

    uint64_t watchdog_ms = 0;
#ifdef RB_HAVE_SYSTEMD
    sd_notify(0, "READY=1\nSTATUS=running");
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000)
        watchdog_ms = wd_usec / 1000;
#endif

    uint64_t now = mono_ms();
    uint64_t next_stats = o.stats_interval_ms != 0 ? now + o.stats_interval_ms : UINT64_MAX;
    uint64_t next_ping = watchdog_ms != 0 ? now : UINT64_MAX;
    uint64_t last_turns = st.loop_turns, last_advance_ms = now;
    bool stalled_logged = false;
    int stop_sig = 0;

    int worker_err = 0;
    while (stop_sig == 0) {
        now = mono_ms();
        if ((worker_err = rb_engine_error(e)) != 0) {
            rb_log(RB_LOG_ERROR, "worker_failed", "err=\"%s\" action=exit", strerror(-worker_err));
            break;
        }
        if (now >= next_stats) {
            log_stats(e, "stats", o.tls);
            next_stats = now + o.stats_interval_ms;
        }
        if (now >= next_ping) {
            /*
             * The watchdog must catch a stuck event loop, not just prove that this thread lives:
             * before pinging, check that the workers' loop_turns advanced. If no worker has
             * advanced loop_turns for longer than the watchdog interval while the engine should be
             * running, the ping is skipped and systemd kills and restarts us. This relies on an
             * idle worker waking at least once a second (it does when no timer is armed; a worker
             * whose next timer is further away than the watchdog interval must cap its sleep).
             */
            memset(&st, 0, sizeof(st));
            rb_engine_stats(e, &st);
            if (st.loop_turns != last_turns) {
                last_turns = st.loop_turns;
                last_advance_ms = now;
                stalled_logged = false;
            }
            bool stalled = now - last_advance_ms > watchdog_ms;
            if (!stalled) {
#ifdef RB_HAVE_SYSTEMD
                sd_notify(0, "WATCHDOG=1");
#endif
            } else if (!stalled_logged) {
                rb_log(RB_LOG_ERROR, "watchdog_stalled",
                       "loop_turns=%" PRIu64 " stalled_ms=%" PRIu64, st.loop_turns,
                       now - last_advance_ms);
                stalled_logged = true;
            }
            next_ping = now + watchdog_ms / 2;
        }

        uint64_t wake = next_stats < next_ping ? next_stats : next_ping;
        uint64_t wait_ms = wake == UINT64_MAX ? 1000 : (wake > now ? wake - now : 0);
        if (wait_ms > 1000)
            wait_ms = 1000;
        struct timespec ts = {.tv_sec = (time_t)(wait_ms / 1000),
                              .tv_nsec = (long)(wait_ms % 1000) * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig < 0)
            continue; /* EAGAIN: timed out; EINTR: a stray signal */
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            stop_sig = sig;
            break;
        case SIGUSR1:
            log_stats(e, "stats", o.tls);
            break;
        case SIGHUP:
            if (o.auth_secret_file) {
                struct rb_auth *na = NULL;
                int arc = auth_gen < sizeof(auth_keys) / sizeof(auth_keys[0])
                              ? rb_auth_load(o.auth_secret_file, &na)
                              : -ENOSPC;
                if (arc < 0) {
                    rb_log(RB_LOG_ERROR, "auth_reload_failed", "path=%s err=\"%s\" keys=kept",
                           o.auth_secret_file, strerror(-arc));
                } else {
                    auth_keys[auth_gen++] = na;
                    rb_engine_set_auth(e, na);
                    rb_log(RB_LOG_INFO, "auth_reloaded", "path=%s keys=%u", o.auth_secret_file,
                           rb_auth_key_count(na));
                }
            }
            rc = rb_log_reopen();
            if (rc < 0)
                rb_log(RB_LOG_ERROR, "log_reopen_failed", "path=%s err=\"%s\"", o.log_file,
                       strerror(-rc));
            else
                rb_log(RB_LOG_INFO, "log_reopened", "path=%s",
                       o.log_file != NULL ? o.log_file : "stderr");
            if (o.tls) {
                /* New handshakes get the new certificate; no connection is dropped. */
                rc = rb_engine_tls_reload(e);
                if (rc < 0)
                    rb_log(RB_LOG_ERROR, "tls_reload_failed",
                           "cert=%s key=%s err=\"%s\" action=kept_old", o.cfg.tls_cert_file,
                           o.cfg.tls_key_file, strerror(-rc));
                else
                    rb_log(RB_LOG_INFO, "tls_reloaded", "cert=%s key=%s", o.cfg.tls_cert_file,
                           o.cfg.tls_key_file);
            }
            break;
        default:
            break;
        }
    }

    rb_log(RB_LOG_INFO, "stopping", "signal=%s drain_timeout_ms=%u", signal_name(stop_sig),
           o.cfg.drain_timeout_ms);
#ifdef RB_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
#endif
    rb_engine_stop(e);
    rc = rb_engine_wait(e);
    if (rc == 0)
        rc = worker_err;
    log_stats(e, "final_stats", o.tls);
    if (metrics != NULL)
        rb_metrics_stop(metrics);
    if (presence) {
        /* The drain's close events, then whatever this node held goes from Redis. */
        rbp_stop(presence, o.cfg.drain_timeout_ms > 2000 ? o.cfg.drain_timeout_ms : 2000);
    }
    rb_engine_destroy(e);
    rbp_destroy(presence);
    for (unsigned i = 0; i < auth_gen; i++)
        rb_auth_free(auth_keys[i]);
    if (rc < 0) {
        rb_log(RB_LOG_ERROR, "stopped", "err=\"%s\"", strerror(-rc));
        return EXIT_RUNTIME;
    }
    rb_log(RB_LOG_INFO, "stopped", "status=ok");
    return EXIT_OK;
}
