/* fuzz_client.c — libFuzzer target: libringbeat-client's own parsers and reactions, three ways:
 * server bytes into the session, persisted records plus result sequences into the smart
 * heartbeat, and strings into the URL parser. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned events, closes;

static void on_event(struct rbc *c, const struct rbc_event *ev, void *user)
{
    (void)c, (void)user;
    events++;
    if (ev->type == RBC_EV_CLOSED)
        closes++;
    if (ev->type == RBC_EV_DATA)
        FUZZ_CHECK(ev->u.data.len <= 4096);
}

/*
 * Server bytes: a real handle (rbc_create, never started, no socket: its output only queues) is
 * put in the handshake state and fed the stream in chunks of sizes from the schedule, as
 * rbc__sess_input gets them from recv(). Whatever the bytes, it must end in a clean state: no
 * leak, split frames freed on close, nothing read out of bounds.
 */
static void fuzz_session(const uint8_t *p, size_t n)
{
    if (n < 2)
        return;
    struct rbc_config cfg = {.url = "127.0.0.1:7600",
                             .seed = 1,
                             .on_event = on_event,
                             .mode = p[0] & 1 ? RBC_MODE_SERVER : RBC_MODE_CLIENT};
    cfg.smart.min_interval_ms = 1000;
    cfg.smart.step_ms = 1000;
    cfg.smart.warmup = 1;
    cfg.smart.successes_to_step = 1;
    struct rbc *c;
    FUZZ_CHECK(rbc_create(&cfg, &c) == 0);
    c->started = true;
    c->state = RBC__HANDSHAKE;
    c->asked_interval_ms = 1000;
    if (p[0] & 2)
        c->ping_out = true, c->ping_token = 1; /* a PING of ours waits */
    size_t chunk = (size_t)(p[1] % 16) + 1;
    p += 2, n -= 2;
    while (n && (c->state == RBC__HANDSHAKE || c->state == RBC__OPEN)) {
        size_t k = n < chunk ? n : chunk;
        rbc__sess_input(c, p, k);
        c->out_off = c->out_len = 0; /* as if the socket took it all */
        p += k, n -= k;
    }
    if (c->state != RBC__HANDSHAKE && c->state != RBC__OPEN) {
        FUZZ_CHECK(c->rx_split == NULL);
        FUZZ_CHECK(c->rx_inl_len == 0);
    }
    rbc_destroy(c);
}

/* The smart heartbeat's invariants, whatever the record and the results. */
static void check_smart(const struct rbc__smart *s)
{
    FUZZ_CHECK(s->p.min_ms <= s->floor_ms && s->floor_ms <= s->cap_ms && s->cap_ms <= s->p.max_ms);
    FUZZ_CHECK(s->floor_ms <= s->n.interval_ms && s->n.interval_ms <= s->cap_ms);
    FUZZ_CHECK(s->floor_ms <= s->n.fallback_ms && s->n.fallback_ms <= s->n.interval_ms);
    FUZZ_CHECK(s->n.successes < s->p.to_step);
    FUZZ_CHECK(s->n.failures < s->p.to_settle);
    uint32_t iv = rbc__smart_interval(s);
    FUZZ_CHECK(iv >= s->floor_ms && iv <= s->cap_ms);
}

static void fuzz_smart(const uint8_t *p, size_t n)
{
    if (n < 4 + RBC__SMART_REC_LEN)
        return;
    struct rbc_smart_config cfg = {.min_interval_ms = 1000u + p[0] * 100u,
                                   .max_interval_ms = 30000u + p[1] * 1000u,
                                   .step_ms = 1u + p[2] * 50u,
                                   .margin_ms = p[3] * 20u + 1,
                                   .warmup = p[0] % 4 + 1,
                                   .successes_to_step = p[1] % 6 + 1,
                                   .failures_to_settle = p[2] % 3 + 1,
                                   .reprobe_ms = 5000u + p[3] * 1000u};
    struct rbc__smart_params sp;
    FUZZ_CHECK(rbc__smart_params(&cfg, &sp) == 0);
    struct rbc__smart s;
    rbc__smart_init(&s, &sp);
    p += 4, n -= 4;
    rbc__smart_load(&s, p, RBC__SMART_REC_LEN);
    p += RBC__SMART_REC_LEN, n -= RBC__SMART_REC_LEN;
    check_smart(&s);
    for (size_t i = 0; i < n; i++) {
        uint8_t op = p[i];
        uint32_t used = op & 2 ? rbc__smart_interval(&s) : s.n.interval_ms;
        if ((op & 0x0c) == 0x0c)
            used = s.floor_ms + op; /* some other interval */
        switch (op >> 5) {
        case 0:
            rbc__smart_connected(&s);
            break;
        case 1:
            rbc__smart_foreground(&s, op & 1);
            break;
        case 2:
            rbc__smart_bound(&s, sp.min_ms + (op & 0x1f) * 500u, sp.max_ms - (op & 0x1f) * 700u);
            break;
        default:
            rbc__smart_result(&s, op & 1, used);
        }
        check_smart(&s);
        uint8_t rec[RBC__SMART_REC_LEN];
        struct rbc__smart t = s;
        rbc__smart_save(&s, rec);
        FUZZ_CHECK(rbc__smart_load(&t, rec, sizeof(rec)) == 0);
        FUZZ_CHECK(t.n.interval_ms == s.n.interval_ms && t.n.fallback_ms == s.n.fallback_ms &&
                   t.n.stable == s.n.stable && t.n.failures == s.n.failures);
    }
}

static void fuzz_url(const uint8_t *p, size_t n)
{
    char s[RBC__URL_MAX + 8];
    if (n >= sizeof(s))
        n = sizeof(s) - 1;
    memcpy(s, p, n);
    s[n] = '\0';
    struct rbc__url u;
    int r = rbc__url_parse(s, &u);
    FUZZ_CHECK(r == 0 || r == -EINVAL || r == -EPROTONOSUPPORT);
    if (r == 0) {
        FUZZ_CHECK(u.port > 0);
        size_t hl = strlen(u.host);
        FUZZ_CHECK(hl > 0 && hl < sizeof(u.host));
        FUZZ_CHECK(strstr(s, u.host) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_session(data + 1, size - 1);
        break;
    case 1:
        fuzz_smart(data + 1, size - 1);
        break;
    default:
        fuzz_url(data + 1, size - 1);
    }
    return 0;
}
