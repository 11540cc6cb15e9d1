#!/usr/bin/env python3
# figures.py — a benchmark run's figures from its samples: hold window, CPU, heartbeats, lateness.
"""The figures of one run (bench/run.py run_one) from its per-second samples and the load
generator's JSON summary."""

import statistics

from histwin import window_figures

def srv_time(x):
    """When the server's stats line in sample x arrived (run.py's clock since the load started),
    or the sample's own time for runs recorded before that was kept."""
    return x["srv_t"] if x.get("srv_t") is not None else x["t"]


def hb_between(a, res, t1, t2):
    """Heartbeat round trips completed in [t1, t2] and where the count came from."""
    s = [x for x in res["samples"] if t1 <= x["t"] <= t2]
    # 0) kernel mode: a heartbeat is a keepalive probe (and its ACK), counted by the kernel
    if res.get("mode") == "kernel":
        ka = [(x["t"], x.get("ka")) for x in s if x.get("ka") is not None]
        if len(ka) >= 2 and ka[-1][1] > ka[0][1]:
            return ka[-1][1] - ka[0][1], ka[-1][0] - ka[0][0], "kernel TCPKeepAlive probes"
    # 1) the server's own count of heartbeats received (every protocol's pings and pongs; older
    #    servers: v1 frames): in the hold phase every frame a client sends is the closing half of
    #    one heartbeat (PONG in server mode, PING in client/silent modes).
    key = "heartbeats_in" if any("heartbeats_in" in x["srv"] for x in s) else "frames_in"
    vals = [(srv_time(x), x["srv"].get(key)) for x in s]
    vals = [v for v in vals if v[1] is not None]
    if len(vals) >= 2 and vals[-1][1] > vals[0][1]:
        return vals[-1][1] - vals[0][1], vals[-1][0] - vals[0][0], "server counters"
    # 2) the load generator's per-second rate, integrated
    rates = [x["hb_s"] for x in s if x["hb_s"] is not None]
    if len(rates) >= 2:
        return sum(rates[1:]) * ((s[-1]["t"] - s[0]["t"]) / max(1, len(rates) - 1)), \
            s[-1]["t"] - s[0]["t"], "load live line"
    # 3) what the configuration implies
    conns = statistics.median([x["conns"] for x in s if x["conns"]] or [a.connections])
    return conns * (t2 - t1) / a.interval_s, t2 - t1, "estimated (conns/interval)"


def hb_rate_figures(hold, f):
    """Per-second heartbeat rate over the hold, from the server's own counter: its mean, p95,
    max and min, and max / mean (PING phases spread evenly keep it near 1). Each counter is
    dated by when its stats line arrived, not by when this script sampled it: the two clocks
    drift against each other, and a line seen late then early once made a 2x "max" and a 0.5x
    "min" out of a rate flat within 10%."""
    key = "heartbeats_in" if any("heartbeats_in" in x["srv"] for x in hold) else "frames_in"
    pts = [(srv_time(x), x["srv"].get(key)) for x in hold if x["srv"].get(key) is not None]
    # a sample may see the same stats line twice: keep the first sample of each line
    pts = [p for i, p in enumerate(pts) if i == 0 or p[1] != pts[i - 1][1]]
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(pts, pts[1:]) if b[0] - a[0] > 0.2]
    if len(rates) < 3:
        return
    rates.sort()
    mean = statistics.mean(rates)
    f["hb_rate_mean"] = round(mean)
    f["hb_rate_p95"] = round(rates[min(len(rates) - 1, int(0.95 * len(rates)))])
    f["hb_rate_max"] = round(rates[-1])
    f["hb_rate_min"] = round(rates[0])
    if mean > 0:
        f["hb_rate_max_over_mean"] = round(rates[-1] / mean, 3)
        f["hb_rate_p95_over_mean"] = round(f["hb_rate_p95"] / mean, 3)


def figures(a, res, t_end):
    s = res["samples"]
    f = {}
    target = a.connections
    # Ramp: from the load's start until the connection count first reaches the target.
    t_full = next((x["t"] for x in s if x["conns"] and x["conns"] >= target), None)
    ls = res["load_summary"] or {}
    if ls.get("ramp_s"):
        f["ramp_s"] = ls["ramp_s"]
    elif t_full is not None:
        f["ramp_s"] = t_full
    if f.get("ramp_s"):
        f["accept_rate_per_s"] = round(target / f["ramp_s"])
    t_full = t_full if t_full is not None else f.get("ramp_s", target / a.rate)
    # Hold window: one interval after the ramp (steady state) to 1 s before the load's end.
    # The load's hold ends at ramp + hold; after that it closes connections (teardown).
    h1, h2 = t_full + a.interval_s + 1.0, min(t_end, f.get("ramp_s", t_full) + a.hold_s) - 1.0
    hold = [x for x in s if h1 <= x["t"] <= h2]
    f["hold_window_s"] = [round(h1, 1), round(h2, 1)]
    if len(hold) >= 2:
        conns = statistics.median([x["conns"] for x in hold if x["conns"]] or [target])
        f["conns_held"] = int(conns)
        rss = statistics.median([x["rss"] for x in hold])
        slab = statistics.median([x["slab"] for x in hold])
        f["server_rss_hold_bytes"] = int(rss)
        f["server_rss_per_conn_bytes"] = round((rss - res["rss_before"]) / conns, 1)
        f["kernel_slab_per_conn_bytes"] = round((slab - res["slab_before"]) / conns, 1)
        # The unreclaimable part (TCP sockets live there) is less disturbed by other processes'
        # file activity (dentries and inodes are reclaimable).
        sun = statistics.median([x["sunreclaim"] for x in hold])
        f["kernel_sunreclaim_per_conn_bytes"] = round((sun - res["sunreclaim_before"]) / conns, 1)
        cpu = hold[-1]["cpu_s"] - hold[0]["cpu_s"]
        hb, span, src = hb_between(a, res, hold[0]["t"], hold[-1]["t"])
        f["hold_cpu_s"] = round(cpu, 3)
        f["hold_heartbeats"] = int(hb)
        f["heartbeats_source"] = src
        f["heartbeats_per_s"] = round(hb / span) if span > 0 else None
        f["server_cpu_pct"] = round(100 * cpu / span, 1) if span > 0 else None
        lc = [x["load_cpu_s"] for x in hold if x.get("load_cpu_s") is not None]
        if len(lc) >= 2 and span > 0:
            f["load_cpu_pct"] = round(100 * (lc[-1] - lc[0]) / span, 1)
        f["loadavg_max"] = max(x["loadavg"] for x in hold)
        f["server_cpu_us_per_heartbeat"] = round(cpu * 1e6 / hb, 2) if hb > 0 else None
        # The load generator's and the whole machine's CPU per heartbeat, the same window: the
        # machine's capacity should go to the server under test, not to the load.
        if len(lc) >= 2 and hb > 0:
            f["load_cpu_us_per_heartbeat"] = round((lc[-1] - lc[0]) * 1e6 / hb, 2)
            f["server_load_cpu_us_per_heartbeat"] = round((cpu + lc[-1] - lc[0]) * 1e6 / hb, 2)
        bc = [x["box_cpu_s"] for x in hold if x.get("box_cpu_s") is not None]
        if len(bc) >= 2 and hb > 0:
            f["box_cpu_us_per_heartbeat"] = round((bc[-1] - bc[0]) * 1e6 / hb, 2)
        pw = res.get("pause_window")
        if pw:  # steady state after the stall: from one interval after the pause
            f["hb_rate_window_s"] = [round(pw[1] + a.interval_s + 1, 1), round(h2, 1)]
            hb_rate_figures([x for x in hold if x["t"] >= pw[1] + a.interval_s + 1], f)
        else:
            hb_rate_figures(hold, f)
        rtts = [x["rtt_p99_us"] for x in hold if x["rtt_p99_us"]]  # 0: no sample
        if rtts and res["mode"] == "client":
            f["rtt_p99_us"] = statistics.median(rtts)
            f["rtt_source"] = "load live line: median over the hold of per-second p99"
        elif rtts:
            # The stats line's p99 is cumulative since the server started: the only figure of a
            # server without /metrics (epoll_ref), and compare's like-for-like ratio with it.
            f["rtt_p99_us_statsline"] = statistics.median(rtts)
            f["rtt_source"] = ("server stats line: its PING->PONG p99, cumulative since start "
                               "(ramp included), median over the hold")
        if res["mode"] != "client":  # in client mode the server sends no PINGs to time
            window_figures(s, h1, h2, f)
    else:
        f["note"] = "hold phase too short to measure (need >= 2 samples after the ramp)"
        if res["mode"] != "client":
            window_figures(s, h1, h2, f)
    # From the load generator's summary (tools/load/main.c write_json).
    if ls:
        rtt = ls.get("rtt_us") or {}
        if rtt.get("count"):
            # Whole run, ramp included (where the load generator itself is busiest).
            f["load.rtt_p99_us_whole_run"] = rtt.get("p99")
        for k in ("connections_established", "connect_failures", "false_deaths", "silenced",
                  "detected", "undetected", "detected_early", "closed_eof", "closed_reset",
                  "protocol_errors", "late_answers", "self_inflicted"):
            if k in ls:
                f[f"load.{k}"] = ls[k]
        f["false_deaths"] = ls.get("false_deaths")
        late = ls.get("detection_lateness_ms") or {}
        if ls.get("detected"):
            for q in ("p50", "p99", "max"):
                f[f"detection_lateness_ms_{q}"] = late.get(q)
        if ls.get("connect_rate_per_s"):
            f["load.connect_rate_per_s"] = ls["connect_rate_per_s"]
        # The load's own lag beside its lateness figure: how late its loop ran, how late it
        # answered (PING read to PONG submitted).
        for k in ("loop_lag_us", "answer_lag_us"):
            for q in ("p99", "max"):
                if (ls.get(k) or {}).get("count"):
                    f[f"load.{k}_{q}"] = ls[k].get(q)
    return f
