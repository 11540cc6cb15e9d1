/* load_report.c — ringbeat-load results: the printed summary and the JSON file. */
#include "load_report.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

int load_write_json(const char *path, const struct load_cfg *cfg, const struct load_result *r,
                    double connect_rate)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    const struct load_counters *c = &r->c;
    const struct lhist *h = &r->rtt_us;
    const struct lhist *l = &r->lateness_us;
    fprintf(f, "{\n");
    fprintf(f, "  \"connections\": %u,\n", cfg->connections);
    fprintf(f, "  \"protocol\": \"%s\",\n", rb_protocol_name((enum rb_protocol)cfg->protocol));
    fprintf(f, "  \"connections_established\": %llu,\n", (unsigned long long)c->established);
    fprintf(f, "  \"connect_failures\": %llu,\n", (unsigned long long)c->connect_failures);
    fprintf(f, "  \"connect_attempts\": %llu,\n", (unsigned long long)c->attempts);
    fprintf(f, "  \"reconnects\": %llu,\n", (unsigned long long)c->reconnected);
    fprintf(f, "  \"connect_rate_per_s\": %.1f,\n", connect_rate);
    fprintf(f, "  \"pings_sent\": %llu,\n", (unsigned long long)c->pings_sent);
    fprintf(f, "  \"pongs_received\": %llu,\n", (unsigned long long)c->pongs_received);
    fprintf(f, "  \"pings_received\": %llu,\n", (unsigned long long)c->pings_received);
    fprintf(f, "  \"pongs_sent\": %llu,\n", (unsigned long long)c->pongs_sent);
    fprintf(f, "  \"pong_unmatched\": %llu,\n", (unsigned long long)c->pong_unmatched);
    fprintf(f,
            "  \"rtt_us\": {\"count\": %llu, \"p50\": %llu, \"p90\": %llu, \"p99\": %llu, "
            "\"p999\": %llu, \"max\": %llu},\n",
            (unsigned long long)h->count, (unsigned long long)lh_percentile(h, 50),
            (unsigned long long)lh_percentile(h, 90), (unsigned long long)lh_percentile(h, 99),
            (unsigned long long)lh_percentile(h, 99.9), (unsigned long long)h->max);
    const struct lhist *g = &r->send_lag_us;
    fprintf(f, "  \"send_lag_us\": {\"p50\": %llu, \"p99\": %llu, \"max\": %llu},\n",
            (unsigned long long)lh_percentile(g, 50), (unsigned long long)lh_percentile(g, 99),
            (unsigned long long)g->max);
    const struct lhist *al = &r->answer_lag_us, *ll = &r->loop_lag_us;
    fprintf(
        f, "  \"answer_lag_us\": {\"count\": %llu, \"p50\": %llu, \"p99\": %llu, \"max\": %llu},\n",
        (unsigned long long)al->count, (unsigned long long)lh_percentile(al, 50),
        (unsigned long long)lh_percentile(al, 99), (unsigned long long)al->max);
    fprintf(f,
            "  \"loop_lag_us\": {\"count\": %llu, \"p50\": %llu, \"p99\": %llu, \"max\": %llu},\n",
            (unsigned long long)ll->count, (unsigned long long)lh_percentile(ll, 50),
            (unsigned long long)lh_percentile(ll, 99), (unsigned long long)ll->max);
    fprintf(f, "  \"late_answers\": %llu,\n", (unsigned long long)c->late_answers);
    fprintf(f, "  \"self_inflicted\": %llu,\n", (unsigned long long)c->self_inflicted);
    fprintf(f, "  \"turn_us\": %llu,\n", (unsigned long long)cfg->turn_us);
    fprintf(f, "  \"closes_by_code\": {");
    bool first = true;
    for (unsigned k = 1; k < LOAD_CODES; k++) {
        if (!c->closes_by_code[k])
            continue;
        fprintf(f, "%s\"%u\": %llu", first ? "" : ", ", k,
                (unsigned long long)c->closes_by_code[k]);
        first = false;
    }
    fprintf(f, "},\n");
    fprintf(f, "  \"closes_bad_code\": %llu,\n", (unsigned long long)c->closes_by_code[0]);
    fprintf(f, "  \"closed_eof\": %llu,\n", (unsigned long long)c->closed_eof);
    fprintf(f, "  \"closed_reset\": %llu,\n", (unsigned long long)c->closed_reset);
    fprintf(f, "  \"false_deaths\": %llu,\n", (unsigned long long)c->false_deaths);
    fprintf(f, "  \"protocol_errors\": %llu,\n", (unsigned long long)c->protocol_errors);
    fprintf(f, "  \"send_errors\": %llu,\n", (unsigned long long)c->send_errors);
    fprintf(f, "  \"silenced\": %llu,\n", (unsigned long long)c->silenced);
    fprintf(f, "  \"detected\": %llu,\n", (unsigned long long)c->detected);
    fprintf(f, "  \"undetected\": %llu,\n",
            (unsigned long long)(c->silenced > c->detected ? c->silenced - c->detected : 0));
    fprintf(f, "  \"detected_early\": %llu,\n", (unsigned long long)c->detected_early);
    fprintf(f, "  \"detected_early_max_ms\": %.3f,\n", ms(c->early_max_us));
    fprintf(f,
            "  \"detection_lateness_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": "
            "%.3f},\n",
            ms(lh_percentile(l, 50)), ms(lh_percentile(l, 90)), ms(lh_percentile(l, 99)),
            ms(l->max));
    fprintf(f, "  \"resets\": %llu,\n", (unsigned long long)c->resets);
    fprintf(f, "  \"resets_sent_as_fin\": %llu,\n", (unsigned long long)c->resets_fin_fallback);
    fprintf(f, "  \"enobufs\": %llu,\n", (unsigned long long)c->enobufs);
    fprintf(f, "  \"cq_overflow\": %llu,\n", (unsigned long long)c->cq_overflow);
    fprintf(f, "  \"rearms\": %llu,\n", (unsigned long long)c->rearms);
    fprintf(f, "  \"loop_turns\": %llu,\n", (unsigned long long)c->turns);
    fprintf(f, "  \"submits\": %llu,\n", (unsigned long long)c->submits);
    fprintf(f, "  \"rings\": %llu,\n", (unsigned long long)r->rings);
    fprintf(f, "  \"slots_per_ring\": %llu,\n", (unsigned long long)r->slots_per_ring);
    fprintf(f, "  \"rss_kb\": %llu,\n", (unsigned long long)r->rss_kb);
    fprintf(f, "  \"rss_peak_kb\": %llu,\n", (unsigned long long)r->rss_peak_kb);
    if (cfg->tls)
        fprintf(f, "  \"tls_handshakes\": {\"full\": %llu, \"resumed\": %llu, \"failed\": %llu},\n",
                (unsigned long long)r->tls_full, (unsigned long long)r->tls_resumed,
                (unsigned long long)r->tls_failed);
    fprintf(f, "  \"ramp_s\": %.3f,\n", r->ramp_s);
    fprintf(f, "  \"duration_s\": %.3f\n", r->duration_s);
    fprintf(f, "}\n");
    if (fclose(f) != 0)
        return -errno;
    return 0;
}

void load_print_summary(const struct load_cfg *cfg, const struct load_result *r,
                        double connect_rate)
{
    const struct load_counters *c = &r->c;
    const struct lhist *h = &r->rtt_us;
    const struct lhist *l = &r->lateness_us;
    printf("connections: %llu/%u established, %llu connect failures, %llu attempts, %.0f "
           "connects/s, ramp %.2f s, run %.2f s\n",
           (unsigned long long)c->established, cfg->connections,
           (unsigned long long)c->connect_failures, (unsigned long long)c->attempts, connect_rate,
           r->ramp_s, r->duration_s);
    printf("frames: pings sent %llu, pongs received %llu, pings received %llu, pongs sent %llu, "
           "unmatched pongs %llu\n",
           (unsigned long long)c->pings_sent, (unsigned long long)c->pongs_received,
           (unsigned long long)c->pings_received, (unsigned long long)c->pongs_sent,
           (unsigned long long)c->pong_unmatched);
    if (c->last_connect_errno)
        printf("a connect failed with: %s\n", strerror((int)c->last_connect_errno));
    if (cfg->mode == 1)
        printf("rtt_us (from scheduled send): n=%llu p50=%llu p90=%llu p99=%llu p99.9=%llu "
               "max=%llu\n",
               (unsigned long long)h->count, (unsigned long long)lh_percentile(h, 50),
               (unsigned long long)lh_percentile(h, 90), (unsigned long long)lh_percentile(h, 99),
               (unsigned long long)lh_percentile(h, 99.9), (unsigned long long)h->max);
    if (r->send_lag_us.count)
        printf("send lag (our lateness, us): p50=%llu p99=%llu max=%llu\n",
               (unsigned long long)lh_percentile(&r->send_lag_us, 50),
               (unsigned long long)lh_percentile(&r->send_lag_us, 99),
               (unsigned long long)r->send_lag_us.max);
    if (r->answer_lag_us.count)
        printf("answer lag (PING read to PONG submitted, us): p50=%llu p99=%llu max=%llu; late "
               "answers (> %u ms) %llu\n",
               (unsigned long long)lh_percentile(&r->answer_lag_us, 50),
               (unsigned long long)lh_percentile(&r->answer_lag_us, 99),
               (unsigned long long)r->answer_lag_us.max, LOAD_LATE_ANSWER_US / 1000,
               (unsigned long long)c->late_answers);
    printf("loop lag (turn start past its due time, us): p50=%llu p99=%llu max=%llu; %llu turns, "
           "%llu io_uring_enter\n",
           (unsigned long long)lh_percentile(&r->loop_lag_us, 50),
           (unsigned long long)lh_percentile(&r->loop_lag_us, 99),
           (unsigned long long)r->loop_lag_us.max, (unsigned long long)c->turns,
           (unsigned long long)c->submits);
    printf("closes by peer:");
    for (unsigned k = 1; k < LOAD_CODES; k++)
        if (c->closes_by_code[k])
            printf(" CLOSE(%u)=%llu", k, (unsigned long long)c->closes_by_code[k]);
    printf(" eof=%llu reset=%llu; false deaths %llu, self-inflicted deaths %llu, protocol errors "
           "%llu\n",
           (unsigned long long)c->closed_eof, (unsigned long long)c->closed_reset,
           (unsigned long long)c->false_deaths, (unsigned long long)c->self_inflicted,
           (unsigned long long)c->protocol_errors);
    if (cfg->silent_pct > 0)
        printf("silenced %llu, detected %llu, undetected %llu; lateness ms p50=%.2f p99=%.2f "
               "max=%.2f (early %llu, by <= %.2f ms)\n",
               (unsigned long long)c->silenced, (unsigned long long)c->detected,
               (unsigned long long)(c->silenced > c->detected ? c->silenced - c->detected : 0),
               ms(lh_percentile(l, 50)), ms(lh_percentile(l, 99)), ms(l->max),
               (unsigned long long)c->detected_early, ms(c->early_max_us));
    if (cfg->reset_pct > 0)
        printf("resets %llu (%s)\n", (unsigned long long)c->resets,
               r->setsockopt_cmd ? "RST via SO_LINGER 0" : "uring_cmd missing: FIN instead");
    if (cfg->tls)
        printf("tls handshakes: full %llu, resumed %llu, failed %llu\n",
               (unsigned long long)r->tls_full, (unsigned long long)r->tls_resumed,
               (unsigned long long)r->tls_failed);
    printf("rings %llu x %llu slots; enobufs %llu, cq overflow %llu; RSS %llu kB (peak %llu kB)\n",
           (unsigned long long)r->rings, (unsigned long long)r->slots_per_ring,
           (unsigned long long)c->enobufs, (unsigned long long)c->cq_overflow,
           (unsigned long long)r->rss_kb, (unsigned long long)r->rss_peak_kb);
}
