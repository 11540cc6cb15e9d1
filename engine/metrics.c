/* metrics.c — renders the engine's counters as Prometheus text exposition (0.0.4). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringbeat.h"

/* engine.c: the component series set with rb_engine_set_metrics_extra (0 when none). */
size_t rb__engine_metrics_extra(struct rb_engine *e, char *buf, size_t cap);

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
    RB_CLOSE_NORMAL,       RB_CLOSE_TIMEOUT,     RB_CLOSE_PROTOCOL,    RB_CLOSE_FULL,
    RB_CLOSE_SHUTDOWN,     RB_CLOSE_TOO_BIG,     RB_CLOSE_SLOW_READER, RB_CLOSE_REPLACED,
    RB_CLOSE_UNAUTHORIZED, RB_CLOSE_BAD_PAYLOAD, RB_CLOSE_HANDSHAKE,   RB_CLOSE_PEER,
    RB_CLOSE_EOF,          RB_CLOSE_RESET,
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
    histogram(&o, "ringbeat_loop_lag_seconds",
              "Each loop turn's start minus the wheel deadline it slept for (0 when woken early).",
              &s.loop_lag_ms, rb_lateness_bounds_ms, 1e-3);
    counter(&o, "ringbeat_loop_lag_turns_total",
            "Loop turns late past the shedding threshold (accepts paused, PINGs deferred).",
            s.lag_turns);
    counter(&o, "ringbeat_keepalive_timeouts_total",
            "Kernel mode: connections the kernel's keepalive declared dead (ETIMEDOUT).",
            s.keepalive_timeouts);
    counter(&o, "ringbeat_keepalive_failed_total",
            "Kernel mode: keepalive options the socket refused (fell back to server mode).",
            s.keepalive_failed);
    counter(&o, "ringbeat_deaths_postponed_total",
            "Timeouts postponed because bytes were still unread in the socket (SIOCINQ).",
            s.deaths_postponed);

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

    help_type(&o, "ringbeat_auth_refused_total", "counter",
              "Openings refused for their token (--auth-secret-file), by why.");
    for (int r = RB_AUTH_MISSING; r <= RB_AUTH_FORGED; r++)
        emit(&o, "ringbeat_auth_refused_total{why=\"%s\"} %llu\n",
             rb_auth_result_name((enum rb_auth_result)r), (unsigned long long)s.auth_refused[r]);
    help_type(&o, "ringbeat_proxy_refused_total", "counter",
              "Connections closed before their PROXY header was used (--proxy-protocol).");
    emit(&o, "ringbeat_proxy_refused_total{why=\"source\"} %llu\n",
         (unsigned long long)s.proxy_refused);
    emit(&o, "ringbeat_proxy_refused_total{why=\"header\"} %llu\n",
         (unsigned long long)s.proxy_bad);

    uint64_t allocated = 0, resident = 0;
    rb_memory_stats(&allocated, &resident);
    gauge(&o, "ringbeat_memory_allocated_bytes", "Bytes allocated by the process (jemalloc).",
          allocated);
    gauge(&o, "ringbeat_memory_resident_bytes", "Resident bytes of the allocator (jemalloc).",
          resident);
    size_t room = o.len < o.cap ? o.cap - o.len : 0;
    o.len += rb__engine_metrics_extra(e, room ? o.buf + o.len : NULL, room);
    return o.len;
}
