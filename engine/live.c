/* live.c — liveness: the mark, the connection's one timer, PING points, pacing and tokens. */
#include <stddef.h>
#include <errno.h>

#include "internal.h"

/*
 * Each connection carries a mark of weight ceil(timeout / interval) (capped at 7). Every interval
 * that passes with nothing received (plus half an interval of grace for the answer to a PING)
 * takes one unit off; while the weight is below full the connection is suspect, and at the
 * timeout it is dead. Any complete frame restores the full weight (rb__live_touch).
 *
 * Nothing here does I/O: the loop acts on the verdicts (sends the PING, releases the dead), so
 * this file is tested on a fake clock with no sockets (tests/test_live.c).
 */
unsigned rb__live_weight_max(const struct rb__conn *c)
{
    unsigned wmax = (c->timeout_ms + c->interval_ms - 1) / c->interval_ms;
    return wmax > 7 ? 7 : (wmax ? wmax : 1);
}

void rb__live_set_mark(struct rb__worker *w, struct rb__conn *c, enum rb_liveness to,
                       unsigned weight)
{
    enum rb_liveness from = rb__conn_liveness(c);
    unsigned old_weight = rb__conn_weight(c);
    if (from == to && old_weight == weight)
        return;
    RB__DEC(w, by_liveness[from]);
    RB__INC(w, by_liveness[to]);
    RB__DEC(w, by_weight[old_weight]);
    RB__INC(w, by_weight[weight]);
    c->state = (uint8_t)((c->state & 0x0c) | (unsigned)to | weight << 4);
    if (from != to && w->e->cfg.cb.on_liveness)
        w->e->cfg.cb.on_liveness(w->e, rb__conn_id(w, c), from, to, w->e->cfg.user);
}

void rb__live_arm_at(struct rb__worker *w, struct rb__conn *c, uint64_t deadline_ms64)
{
    uint32_t tick_ms = w->e->cfg.tick_ms;
    /* Rounded up: a timer never fires before its deadline. */
    rb__wheel_add(&w->wheel, &c->timer, (uint32_t)((deadline_ms64 + tick_ms - 1) / tick_ms));
}

/*
 * Server mode puts each connection's PING points on a grid of its own: the instants
 * phase + k * interval, the phase in [0, interval) derived from the connection's id. A PING
 * goes at the first grid point at least three quarters of an interval after the last frame,
 * so a peer that answers within a quarter interval is pinged exactly once per interval,
 * always at its phase: neither the moment it opened nor a stall that delayed its answers
 * decides when it is pinged. Until a frame follows the opening one (HELLO or TUNE;
 * RB__CF_FIRST_PING), PINGs are on the grid at once, the first one to two intervals after it
 * (never before the new interval). After that, a PING never comes more than interval / 16
 * after a full interval of silence (what a server-mode client expects, docs/protocol.md 3):
 * when the grid point lies beyond that, the PING goes at the edge of [0.75, 1.0625] intervals
 * that reaches it first, so a connection that left its grid (data, answers later than a
 * quarter interval) is back on it within a few intervals, and a bunch of connections with the
 * same last frame (a ramp, a stall) falls apart towards their own phases instead of staying
 * together. (Before, PING
 * points were the last frame + interval + a jitter below interval / 16: such a bunch stayed
 * within that much, and the 1M runs kept heartbeat-rate spikes one interval apart.) If the
 * point leaves the peer less than the half-interval grace before the timeout, it moves
 * earlier (tight timeouts give up the grid, never the answer's time). Derived, not stored:
 * the record stays 64 bytes, and the timer handler recomputes the scheduler's point.
 */
static uint64_t ping_first(struct rb__worker *w, const struct rb__conn *c, uint64_t last_rx64)
{
    uint64_t iv = c->interval_ms;
    if (rb__conn_mode(c) != RB_MODE_SERVER)
        return iv;
    uint64_t h = (rb__conn_id(w, c) ^ w->e->token_key) * 0x9E3779B97F4A7C15ULL;
    bool opening = c->flags & RB__CF_FIRST_PING;
    uint64_t phase = (h >> 32) % iv, early = opening ? iv : iv - iv / 4, late = iv + iv / 16;
    uint64_t first = early + (phase + iv - (last_rx64 + early) % iv) % iv; /* < early + iv */
    /* Off the grid: the edge that reaches it in fewer intervals (iv/16 a step late, iv/4 early). */
    if (!opening && first > late)
        first = (first - late) * 4 < early + iv - first ? late : early;
    uint64_t latest = c->timeout_ms > iv / 2 ? c->timeout_ms - iv / 2 : 0;
    if (first > latest)
        first = latest > early ? latest : early;
    return first;
}

/* Whether looks every iv_s after the first probe put the last one within 1 s after span_ms. */
static bool keepalive_lands(uint64_t span_ms, uint32_t iv_s)
{
    uint64_t iv_ms = iv_s * 1000ull, looks = (span_ms + iv_ms - 1) / iv_ms;
    return looks * iv_ms - span_ms < 1000;
}

/*
 * Kernel mode's timing. The kernel looks at a keepalive socket at two kinds of instants: after a
 * probe (TCP_KEEPINTVL later: answered, it re-arms for the rest of the idle time; unanswered, it
 * probes again, or gives up once TCP_USER_TIMEOUT has passed since the last answer) and when the
 * idle time is up. Its timer wheel files a timer by how far off it is, in levels whose
 * granularity grows 8 times per level: at HZ=250 a 29 s timer lands in 2.048 s buckets, a 15 s
 * one in 256 ms buckets. Every timer of a bucket fires in one softirq run, so with a 1 s
 * KEEPINTVL (a 1 s look, then a 29 s re-arm) 1,000,000 connections at 30 s sent 66,000 probes
 * at once every 2 s, which overflowed loopback's per-CPU backlog, and the dropped probes' second
 * retries fell exactly on the next bucket (docs/benchmarks.md, "Kernel mode at 1,000,000"). So
 * the interval is split into two shorter hops: KEEPINTVL is chosen to make the longer of the
 * two (KEEPINTVL, idle - KEEPINTVL) as short as it can be, among the values whose last look
 * before the verdict still comes within 1 s of the timeout (looks come at idle + k x KEEPINTVL
 * after the last answer); 1 s always qualifies. 30 s / 90 s gives 15 s: 8 times smaller bursts,
 * retries 15 s apart, the verdict at the timeout. The kernel keeps whole seconds: the idle time is
 * rounded down (probes come at least as often as asked), at least 1 s.
 */
void rb__live_keepalive_plan(uint32_t interval_ms, uint32_t timeout_ms,
                             struct rb__keepalive_plan *plan)
{
    uint32_t idle_s = interval_ms / 1000;
    if (idle_s < 1)
        idle_s = 1;
    if (idle_s > 32767) /* MAX_TCP_KEEPIDLE */
        idle_s = 32767;
    /* From the first probe to the timeout; a timeout within the idle time ends at the first
     * look after the first probe (the kernel needs a probe out to give up). */
    uint64_t span_ms = timeout_ms > idle_s * 1000ull ? timeout_ms - idle_s * 1000ull : 1;
    /* The longer hop, max(iv, idle - iv), is shortest at half the idle time and grows both
     * ways from there: search outwards and stop at the first value that lands on each side
     * (at most idle_s steps, once per open or TUNE; usually a few). Ties go to the longer
     * KEEPINTVL: fewer looks. 1 s always lands. */
    uint32_t half = (idle_s + 1) / 2, up = 0, down = 1;
    for (uint32_t iv = half > 2 ? half : 2; iv <= idle_s && !up; iv++)
        if (keepalive_lands(span_ms, iv))
            up = iv; /* hop = iv */
    for (uint32_t iv = half - 1; iv >= 2 && (!up || idle_s - iv < up); iv--)
        if (keepalive_lands(span_ms, iv)) {
            down = iv; /* hop = idle_s - iv */
            break;
        }
    uint32_t down_hop = idle_s > down ? idle_s - down : 1;
    uint32_t best = up && up <= down_hop ? up : down;
    uint64_t iv_ms = best * 1000ull, cnt = (span_ms + iv_ms - 1) / iv_ms + 1;
    plan->idle_s = idle_s;
    plan->intvl_s = best;
    plan->cnt = cnt > 127 ? 127 : (uint32_t)cnt; /* MAX_TCP_KEEPCNT */
}

/*
 * The next instant this connection needs attention, from last_rx alone: a PING point (server
 * mode: the connection's grid point, then every interval of silence), the next step of the
 * mark (half an interval after a PING point: the answer is overdue), or death at the timeout.
 */
void rb__live_schedule(struct rb__worker *w, struct rb__conn *c)
{
    if (rb__conn_mode(c) == RB_MODE_KERNEL) {
        /* The kernel judges (its verdict arrives on the receive); this is the backstop that
         * makes sure a receive is there to carry it (loop.c). From now: the probes' answers
         * that keep a silent peer alive are invisible here. */
        rb__live_arm_at(w, c, w->now_ms64 + c->timeout_ms + RB__KEEPALIVE_SLACK_MS);
        return;
    }
    int32_t idle32 = (int32_t)(w->now_ms - c->last_rx_ms);
    uint64_t idle = idle32 < 0 ? 0 : (uint64_t)idle32;
    uint64_t base = w->now_ms64 - idle;
    uint64_t iv = c->interval_ms, first = ping_first(w, c, base), step_at = first + iv / 2;
    uint64_t next = c->timeout_ms;
    uint64_t step = idle < step_at ? step_at : step_at + ((idle - step_at) / iv + 1) * iv;
    if (step < next)
        next = step;
    if (rb__conn_mode(c) == RB_MODE_SERVER) {
        uint64_t ping = idle < first ? first : first + ((idle - first) / iv + 1) * iv;
        if (ping < next)
            next = ping;
    }
    rb__live_arm_at(w, c, base + next);
}

void rb__live_start(struct rb__worker *w, struct rb__conn *c)
{
    rb__wheel_del(&w->wheel, &c->timer);
    if (rb__conn_mode(c) == RB_MODE_SERVER)
        c->flags |= RB__CF_FIRST_PING;
    else
        c->flags &= (uint8_t)~RB__CF_FIRST_PING;
    rb__live_schedule(w, c);
}

enum rb__live_verdict rb__live_timer(struct rb__worker *w, struct rb__conn *c)
{
    bool held = c->flags & RB__CF_PING_HELD;
    c->flags &= (uint8_t)~RB__CF_PING_HELD;
    int32_t idle32 = (int32_t)(w->now_ms - c->last_rx_ms);
    uint64_t idle = idle32 < 0 ? 0 : (uint64_t)idle32;
    if (idle >= c->timeout_ms)
        return RB__LIVE_DEAD;
    uint64_t iv = c->interval_ms, grace = iv / 2;
    uint64_t first = ping_first(w, c, w->now_ms64 - idle);
    uint64_t missed = idle < first + grace ? 0 : 1 + (idle - first - grace) / iv;
    unsigned wmax = rb__live_weight_max(c);
    unsigned weight = missed >= wmax ? 1 : (unsigned)(wmax - missed);
    rb__live_set_mark(w, c, missed ? RB_SUSPECT : RB_ALIVE, weight);
    /* A PING is due in the first half of each interval of silence past the first PING point;
     * a timer that fires in the second half is a step of the mark, not a PING point. */
    if (rb__conn_mode(c) == RB_MODE_SERVER && idle >= first && (idle - first) % iv < grace) {
        /*
         * Paced: PINGs go out at most at twice this worker's average rate. A stall that bunched
         * answers together would otherwise be pinged again in one burst an interval later, and
         * near saturation the burst causes the next stall. Each PING takes a token; past the
         * bucket, it reserves the place the refill will reach and its timer waits for exactly
         * that, once (a timer re-fired every tick until a token is left turned a burst of
         * 100,000s of due PINGs into millions of timer fires per second, which starved the
         * loop: the 1M soak). It never waits past a quarter of the grace, so the peer keeps
         * most of it to answer.
         */
        if (!held) {
            w->ping_tokens -= 1;
            if (w->ping_tokens < 0) {
                uint64_t into = (idle - first) % iv;
                double wait_ms = -w->ping_tokens / w->ping_per_ms;
                if (into + wait_ms < grace / 4) {
                    RB__INC(w, pings_deferred);
                    c->flags |= RB__CF_PING_HELD;
                    rb__live_arm_at(w, c, w->now_ms64 + (uint64_t)wait_ms + 1);
                    return RB__LIVE_OK;
                }
            }
        }
        return RB__LIVE_PING;
    }
    rb__live_schedule(w, c);
    return RB__LIVE_OK;
}

/* Twice the steady PING rate of this worker's connections (at the default interval), in a
 * bucket that holds one tick's worth; below zero it counts the PINGs reserved ahead. */
void rb__live_refill(struct rb__worker *w)
{
    double per_ms = 2.0 * (double)w->stats.conns / w->e->cfg.interval_ms;
    double burst = per_ms * w->e->cfg.tick_ms;
    if (per_ms < 0.1)
        per_ms = 0.1;
    if (burst < 16)
        burst = 16;
    w->ping_per_ms = per_ms;
    w->ping_tokens += (double)(w->now_ms64 - w->ping_refill_ms) * per_ms;
    w->ping_refill_ms = w->now_ms64;
    if (w->ping_tokens > burst)
        w->ping_tokens = burst;
}

uint64_t rb__live_token(const struct rb__worker *w, uint64_t id, uint64_t t_us)
{
    uint64_t h = (t_us ^ id ^ w->e->token_key) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    return (t_us & 0xFFFFFFFFFFFFULL) << 16 | (h & 0xFFFF);
}

int rb__live_pong(struct rb__worker *w, struct rb__conn *c, uint64_t token, uint64_t now_us,
                  uint64_t *rtt_us)
{
    uint64_t t_us = token >> 16;
    if (rb__live_token(w, rb__conn_id(w, c), t_us) != token || t_us > now_us)
        return -EINVAL;
    *rtt_us = now_us - t_us;
    return 0;
}
