/* load.c — ringbeat-load engine entry: setup, worker threads, phases, live line and totals. */
#include "load_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop_requested;

void load_request_stop(void)
{
    g_stop_requested = 1;
}

static void sum_counters(struct load_counters *dst, const struct load_counters *src)
{
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    size_t n = sizeof(*src) / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = LD(&s[i]);
        if (&d[i] == &dst->first_attempt_us) {
            if (v && (!d[i] || v < d[i]))
                d[i] = v;
        } else if (&d[i] == &dst->last_established_us || &d[i] == &dst->timeout_ms_max ||
                   &d[i] == &dst->last_connect_errno || &d[i] == &dst->early_max_us) {
            if (v > d[i])
                d[i] = v;
        } else {
            d[i] += v;
        }
    }
}

static void read_rss(uint64_t *rss_kb, uint64_t *hwm_kb)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu", &v) == 1)
            *rss_kb = v;
        else if (sscanf(line, "VmHWM: %llu", &v) == 1)
            *hwm_kb = v;
    }
    fclose(f);
}

static void live_line(struct load *L, uint64_t now, struct load_counters *prev,
                      struct lhist *prev_h, struct lhist *cur_h)
{
    struct load_counters t;
    memset(&t, 0, sizeof(t));
    lh_reset(cur_h);
    for (unsigned i = 0; i < L->cfg->workers; i++) {
        sum_counters(&t, &L->w[i].cnt);
        lh_merge(cur_h, &L->w[i].rtt_us);
    }
    struct lhist win;
    lh_diff(&win, cur_h, prev_h);
    char codes[160];
    int off = 0;
    for (unsigned k = 0; k < LOAD_CODES; k++)
        if (t.closes_by_code[k])
            off += snprintf(codes + off, sizeof(codes) - (size_t)off, "%s%u:%llu", off ? "," : "",
                            k, (unsigned long long)t.closes_by_code[k]);
    if (!off)
        snprintf(codes, sizeof(codes), "-");
    fprintf(stderr,
            "[%7.1fs] up=%llu connecting=%llu failed=%llu pings/s=%llu pongs/s=%llu "
            "rtt_p50=%lluus rtt_p99=%lluus closes=%s eof=%llu rst=%llu silenced=%llu "
            "detected=%llu false_deaths=%llu late_answers=%llu self_inflicted=%llu\n",
            (double)now / 1e6, (unsigned long long)t.up_now, (unsigned long long)t.pending_now,
            (unsigned long long)t.connect_failures,
            (unsigned long long)(t.pings_sent + t.pings_received - prev->pings_sent -
                                 prev->pings_received),
            (unsigned long long)(t.pongs_received + t.pongs_sent - prev->pongs_received -
                                 prev->pongs_sent),
            (unsigned long long)lh_percentile(&win, 50),
            (unsigned long long)lh_percentile(&win, 99), codes, (unsigned long long)t.closed_eof,
            (unsigned long long)t.closed_reset, (unsigned long long)t.silenced,
            (unsigned long long)t.detected, (unsigned long long)t.false_deaths,
            (unsigned long long)t.late_answers, (unsigned long long)t.self_inflicted);
    *prev = t;
    memcpy(prev_h, cur_h, sizeof(*prev_h));
}

int load_run(const struct load_cfg *cfg, struct load_result *res)
{
    struct load L;
    memset(&L, 0, sizeof(L));
    memset(res, 0, sizeof(*res));
    L.cfg = cfg;
    L.interval_us = U64(cfg->interval_ms ? cfg->interval_ms : 1000) * 1000;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    /* a ring's table may not exceed RLIMIT_NOFILE; keep a margin for our own fds */
    uint64_t spr_max = rl.rlim_cur > 2000 ? rl.rlim_cur - 1000 : rl.rlim_cur / 2;
    uint32_t spr = cfg->slots_per_ring ? cfg->slots_per_ring : (uint32_t)spr_max;
    if (spr > spr_max)
        spr = (uint32_t)spr_max;
    if (spr < 1)
        return -EMFILE;
    L.slots_per_ring = spr;
    L.linger_cmd = ld_probe_setsockopt_cmd();
    if (cfg->tls) {
        int tr = ltls_global_init(cfg->tls_resume, cfg->tls_ciphersuites, &L.tls);
        if (tr < 0)
            return tr;
    }
    res->setsockopt_cmd = L.linger_cmd;

    L.w = calloc(cfg->workers, sizeof(*L.w));
    struct lhist *h_prev = calloc(1, sizeof(struct lhist));
    struct lhist *h_cur = calloc(1, sizeof(struct lhist));
    if (!L.w || !h_prev || !h_cur) {
        free(L.w);
        free(h_prev);
        free(h_cur);
        ltls_global_free(L.tls);
        return -ENOMEM;
    }
    L.t0_ns = rb_clock_ns();
    int ret = 0;
    unsigned started = 0;
    for (unsigned i = 0; i < cfg->workers; i++)
        L.w[i].efd = -1;
    for (unsigned i = 0; i < cfg->workers && ret == 0; i++) {
        struct lworker *w = &L.w[i];
        w->idx = i;
        w->L = &L;
        w->nconns = cfg->connections / cfg->workers + (i < cfg->connections % cfg->workers);
        w->nrings = w->nconns ? (w->nconns + spr - 1) / spr : 0;
        w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->efd < 0) {
            ret = -errno;
            break;
        }
        w->rings = calloc(w->nrings ? w->nrings : 1, sizeof(*w->rings));
        if (!w->rings) {
            ret = -ENOMEM;
            break;
        }
        for (unsigned k = 0; k < w->nrings && ret == 0; k++) {
            struct lring *r = &w->rings[k];
            r->nslots = w->nconns / w->nrings + (k < w->nconns % w->nrings);
            ret = ld_ring_setup(&L, w, r, k);
        }
        res->rings += w->nrings;
    }
    res->slots_per_ring = spr;
    /* rings are set up before the clock starts: the ramp is paced from here */
    L.t0_ns = rb_clock_ns();
    for (unsigned i = 0; i < cfg->workers && ret == 0; i++) {
        ret = -pthread_create(&L.w[i].th, NULL, ld_worker_main, &L.w[i]);
        if (ret == 0)
            started++;
    }
    if (ret)
        __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);

    /* Supervisor: phases and the live line. */
    double nominal_ramp_s = (double)cfg->connections / cfg->rate_per_s;
    /* the hold starts when every connection was tried, or after this much ramp at most */
    uint64_t ramp_deadline =
        (uint64_t)(nominal_ramp_s * 1e6) +
        (nominal_ramp_s > 15 ? (uint64_t)(2 * nominal_ramp_s * 1e6) : 30000000);
    uint64_t hold_start = 0, hold_end = 0, grace_end = 0;
    uint64_t next_line = 1000000;
    struct load_counters prev;
    memset(&prev, 0, sizeof(prev));
    while (ret == 0) {
        struct timespec sl = {0, 20 * 1000 * 1000};
        nanosleep(&sl, NULL);
        uint64_t now = ld_now_us(&L);
        bool all_ramped = true, any_finished = false;
        for (unsigned i = 0; i < cfg->workers; i++) {
            all_ramped &= __atomic_load_n(&L.w[i].ramp_done, __ATOMIC_RELAXED) != 0;
            any_finished |= __atomic_load_n(&L.w[i].finished, __ATOMIC_ACQUIRE) != 0;
        }
        int phase = LD(&L.phase);
        if (g_stop_requested || any_finished) {
            __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
            break;
        }
        if (!hold_start && (all_ramped || now >= ramp_deadline)) {
            hold_start = now;
            hold_end = hold_start + cfg->duration_us;
            res->ramp_s = (double)now / 1e6;
        }
        if (hold_start && now >= hold_end && phase == PH_RUN) {
            struct load_counters t;
            memset(&t, 0, sizeof(t));
            for (unsigned i = 0; i < cfg->workers; i++)
                sum_counters(&t, &L.w[i].cnt);
            uint64_t tmo = t.timeout_ms_max  ? t.timeout_ms_max
                           : cfg->timeout_ms ? cfg->timeout_ms
                                             : 3ull * cfg->interval_ms;
            if (cfg->silent_pct > 0 && t.silenced > t.detected) {
                /* pending detections: wait for them, bounded by timeout + 2 s */
                grace_end = now + tmo * 1000 + 2000000;
                __atomic_store_n(&L.phase, PH_GRACE, __ATOMIC_RELAXED);
            } else {
                __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
            }
        }
        if (phase == PH_GRACE) {
            struct load_counters t;
            memset(&t, 0, sizeof(t));
            for (unsigned i = 0; i < cfg->workers; i++)
                sum_counters(&t, &L.w[i].cnt);
            if (now >= grace_end || t.detected >= t.silenced)
                __atomic_store_n(&L.phase, PH_STOP, __ATOMIC_RELAXED);
        }
        if (now >= next_line) {
            if (!cfg->quiet)
                live_line(&L, now, &prev, h_prev, h_cur);
            next_line += 1000000;
        }
        if (LD(&L.phase) == PH_STOP)
            break;
    }
    uint64_t stop_us = ld_now_us(&L);
    for (unsigned i = 0; i < started; i++)
        pthread_join(L.w[i].th, NULL);
    res->duration_s = (double)stop_us / 1e6;
    if (!res->ramp_s)
        res->ramp_s = res->duration_s;
    read_rss(&res->rss_kb, &res->rss_peak_kb);

    for (unsigned i = 0; i < cfg->workers; i++) {
        struct lworker *w = &L.w[i];
        if (w->err && !ret)
            ret = w->err;
        sum_counters(&res->c, &w->cnt);
        lh_merge(&res->rtt_us, &w->rtt_us);
        lh_merge(&res->lateness_us, &w->late_us);
        lh_merge(&res->send_lag_us, &w->lag_us);
        lh_merge(&res->answer_lag_us, &w->answer_us);
        lh_merge(&res->loop_lag_us, &w->loop_us);
        if (w->rings)
            for (unsigned k = 0; k < w->nrings; k++)
                ld_ring_teardown(&w->rings[k]);
        free(w->rings);
        if (w->efd >= 0)
            close(w->efd);
    }
    if (L.tls) {
        ltls_counts(L.tls, &res->tls_full, &res->tls_resumed, &res->tls_failed);
        ltls_global_free(L.tls);
    }
    free(L.w);
    free(h_prev);
    free(h_cur);
    return ret;
}
