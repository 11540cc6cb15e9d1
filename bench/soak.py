#!/usr/bin/env python3
# soak.py — the soak scenario: a long hold with churn batches and silenced peers, and its figures.
"""bench/run.py soak: one server, a main load, and a short-lived churn load every churn period;
RSS drift, false deaths and undetected deaths over the whole run."""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import threading
import time

from histwin import Scraper, window_figures
from procs import CHILDREN, LineReader, loadavg1, log, pick_port, proc_cpu_s, proc_rss_bytes, \
    slab_bytes, spawn
from report import fmt_num
from servers import PER_ADDR_MAX, load_cmd, start_load, start_server, stop_server

def soak_plan(a):
    """Connections of the main load and of each churn batch, and how long a batch lives.

    Churn is produced by short-lived ringbeat-load processes: every churn period a new one opens
    churn_pct% of the connections, holds them, and closes them with CLOSE(1) when it ends, so
    each period that many connections close and as many new ones arrive. A batch lives long enough
    for its silenced members (churn_silent_pct% of it, silenced churn_silent_after after their
    WELCOME) to be detected by the server: silent_after + timeout + interval + 10 s."""
    timeout_s = a.timeout_s or 3 * a.interval_s
    batch = int(round(a.connections * a.churn_pct / 100.0)) if a.churn_pct > 0 else 0
    life_s = a.churn_period_s
    if batch and a.churn_silent_pct > 0:
        life_s = max(life_s, a.churn_silent_after_s + timeout_s + a.interval_s + 10)
    overlap = math.ceil((life_s + 10) / a.churn_period_s) if batch else 0
    main_n = a.connections - overlap * batch
    if main_n < 1:
        raise SystemExit(f"churn of {a.churn_pct}% with batches living {life_s:g} s leaves no "
                         "connections for the main load: lower --churn-pct")
    return main_n, batch, life_s, overlap


def lsq_slope(points):
    """Least-squares slope of (x, y) points, or None with fewer than 2 distinct x."""
    if len(points) < 2:
        return None
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((p[0] - mx) ** 2 for p in points)
    if den == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den


def run_soak(a, outdir, stamp):
    """Server + main load + churn loop; samples the server every --sample-every."""
    main_n, batch, life_s, overlap = soak_plan(a)
    port = pick_port(a.port)
    a.port = port + 1
    base = os.path.join(outdir, f"{a.scenario}-{stamp}-{a.server}")
    n_addr = max(1, math.ceil(a.connections / PER_ADDR_MAX))
    # Main and churn loads share one address range, sized for the total.
    target = f"127.0.0.1-127.0.0.{n_addr}:{port}" if n_addr > 1 else f"127.0.0.1:{port}"

    def lcmd(connections, rate, hold_s, silent_pct, silent_after_s, json_path, extra):
        b = argparse.Namespace(**vars(a))
        b.connections, b.rate, b.hold_s = connections, rate, hold_s
        b.silent_pct, b.silent_after_s = silent_pct, silent_after_s
        cmd = load_cmd(b, port, json_path)
        cmd[cmd.index("--target") + 1] = target
        return cmd + extra

    t0 = time.time()
    srv, srv_err, scmd = start_server(a, a.server, port, t0, "soak")
    rss0, cpu0 = proc_rss_bytes(srv.pid), proc_cpu_s(srv.pid)
    main_json = base + "-load.json"
    mcmd = lcmd(main_n, a.rate, a.hold_s, a.silent_pct, a.silent_after_s, main_json, [])
    log(f"soak: main load ({main_n} connections): {' '.join(mcmd)}")
    log(f"soak: churn: {batch} connections every {a.churn_period_s:g} s, each batch living "
        f"{life_s:g} s ({a.churn_silent_pct:g}% of it silenced after "
        f"{a.churn_silent_after_s:g} s); up to {overlap} batches at once")
    t_load = time.time() - t0
    load, load_err = start_load(a, mcmd, t0)

    deadline = time.time() + max(60, main_n / max(1, a.rate) * 5) + a.hold_s + 30 + a.interval_s
    t_full = None  # seconds since the load's start when the main ramp was over
    churn = []  # dict(proc, json, cmd, t_start)
    next_churn = None
    samples, timed_out, prev = [], False, None
    next_sample = 0.0
    scraper = Scraper(srv_err)
    while True:
        now = time.time()
        t = now - t0 - t_load
        if srv.poll() is not None:
            log(f"soak: server exited early with {srv.returncode}")
            break
        if t_full is None:
            up, failed = load_err.last("up"), load_err.last("failed")
            if up is not None and up + (failed or 0) >= main_n:
                t_full = t
                next_churn = t
                deadline = now + a.hold_s + 30 + a.interval_s
                log(f"soak: main ramp over at {t:.1f} s; holding {a.hold_s:g} s")
        # A batch is started only if it ends (ramp, life, teardown) before the main hold ends,
        # so that every silenced member is judged while its batch still runs.
        if batch and next_churn is not None and t >= next_churn:
            if t + batch / a.churn_rate + life_s + 10 < t_full + a.hold_s:
                k = len(churn)
                path = f"{base}-churn{k}.json"
                ccmd = lcmd(batch, a.churn_rate, life_s, a.churn_silent_pct,
                            a.churn_silent_after_s, path, ["--quiet", "--seed", str(k + 2)])
                p = spawn(ccmd, a.load_cpus)
                threading.Thread(target=lambda p=p: [None for _ in p.stdout], daemon=True).start()
                r = LineReader(p.stderr, t0)
                r.start()
                churn.append(dict(proc=p, json=path, cmd=ccmd, t_start=round(t, 1), err=r))
                if a.verbose or k == 0:
                    log(f"soak: churn batch {k}: {' '.join(ccmd)}")
            next_churn += a.churn_period_s
        if t >= next_sample:
            next_sample = t + a.sample_every_s
            try:
                rss, cpu = proc_rss_bytes(srv.pid), proc_cpu_s(srv.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            st = dict(srv_err.last_stats)
            w, hist = scraper.sample()  # windows of --sample-every
            x = dict(w=w, hist=hist, t=round(t, 1), rss=rss, cpu_s=cpu, conns=st.get("conns"),
                     load_up=load_err.last("up"), frames_in=st.get("frames_in"),
                     closed_timeout=st.get("closed_timeout"),
                     churn_running=sum(1 for c in churn if c["proc"].poll() is None),
                     loadavg=loadavg1(), slab=slab_bytes(), srv=st)
            samples.append(x)
            if prev is None or a.verbose or x["t"] - prev >= 60:
                prev = x["t"]
                log(f"soak: t={t:.0f}s conns={x['conns']} rss={rss / 1048576:.1f}MiB "
                    f"churn_running={x['churn_running']} loadavg={x['loadavg']:.1f}")
        if load.poll() is not None:
            break
        if now > deadline:
            log("soak: deadline passed, stopping the loads")
            timed_out = True
            os.killpg(load.pid, signal.SIGINT)
            break
        time.sleep(max(0.05, 1.0 - (time.time() - now)))
    t_end = time.time() - t0 - t_load
    try:
        load_rc = load.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(load.pid, signal.SIGKILL)
        load_rc = load.wait()
    for c in churn:
        try:
            left = life_s + 30 - (time.time() - t0 - t_load - c["t_start"])
            c["rc"] = c["proc"].wait(max(1, left))
        except subprocess.TimeoutExpired:
            os.killpg(c["proc"].pid, signal.SIGINT)
            c["rc"] = c["proc"].wait()
            timed_out = True
    srv_exit = stop_server(srv)
    for p in [srv, load] + [c["proc"] for c in churn]:
        if p in CHILDREN:
            CHILDREN.remove(p)

    main_sum, batches, f = soak_figures(a, main_json, churn, samples, (main_n, batch, life_s),
                                        t_full, rss0)
    bad_churn = sum(1 for b in batches if b["exit"] != 0)
    res = dict(label=a.server, server=a.server, mode=a.mode, port=port, server_cmd=scmd,
               load_cmd=mcmd, server_cpus=a.server_cpus, load_cpus=a.load_cpus,
               load_exit=load_rc if not bad_churn else (load_rc or 1), main_load_exit=load_rc,
               churn_failed=bad_churn, server_exit=srv_exit, timed_out=timed_out,
               rss_before=rss0, cpu_before_s=cpu0, samples=samples, load_summary=main_sum,
               churn=batches, load_tail=load_err.tail(), server_tail=srv_err.tail(8),
               t_end=round(t_end, 1))
    res["figures"] = f
    if f["false_deaths"] or f["undetected_deaths"]:
        res["load_exit"] = res["load_exit"] or 1  # not clean, even if every exit code was 0
    return res


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def soak_figures(a, main_json, churn, samples, plan, t_full, rss0):
    """The soak's figures from the loads' JSON summaries and the server samples: deaths summed
    over the main load and every batch, RSS drift and CPU over the steady window (after the
    warm-up, before the main load's teardown). Returns (main summary, batches, figures)."""
    main_n, batch, life_s = plan
    timeout_s = a.timeout_s or 3 * a.interval_s
    main_sum = read_json(main_json)
    batches = []
    for c in churn:
        s = read_json(c["json"]) or {}
        batches.append(dict(t_start=c["t_start"], exit=c["rc"], cmd=c["cmd"],
                            **{k: s.get(k) for k in ("connections_established",
                                                     "connect_failures", "false_deaths",
                                                     "silenced", "detected", "undetected",
                                                     "detected_early", "closes_by_code",
                                                     "detection_lateness_ms")},
                            tail=[] if c["rc"] == 0 else c["err"].tail(5)))
    f = dict(main_connections=main_n, churn_batch=batch, churn_batches=len(batches),
             churn_batch_life_s=life_s, timeout_s=timeout_s)
    loads = [main_sum or {}] + [b for b in batches]

    def total(k):
        return int(sum((x.get(k) or 0) for x in loads))

    f["false_deaths"] = total("false_deaths")
    f["silenced"] = total("silenced")
    f["detected"] = total("detected")
    f["undetected_deaths"] = total("undetected")
    f["detected_early"] = total("detected_early")
    f["churned_connections"] = int(sum((b.get("connections_established") or 0)
                                       for b in batches))
    late = [x.get("detection_lateness_ms") or {} for x in loads if x.get("detected")]
    if late:
        f["detection_lateness_ms_p99"] = max(v.get("p99", 0) for v in late)  # worst batch
        f["detection_lateness_ms_max"] = max(v.get("max", 0) for v in late)
    if main_sum:
        f["load.connections_established"] = main_sum.get("connections_established")
        f["load.connect_failures"] = main_sum.get("connect_failures")
    f["ramp_s"] = (main_sum or {}).get("ramp_s") or t_full
    # Steady state: after the warm-up, before the main load's teardown.
    if t_full is not None:
        w1, w2 = t_full + a.warmup_s, t_full + a.hold_s - 1
        steady = [x for x in samples if w1 <= x["t"] <= w2]
        f["steady_window_s"] = [round(w1, 1), round(w2, 1)]
        if len(steady) >= 2:
            conns = statistics.median([x["conns"] for x in steady if x["conns"]] or
                                      [a.connections])
            f["conns_held"] = int(conns)
            f["conns_held_min"] = int(min((x["conns"] for x in steady if x["conns"]),
                                          default=0))
            span = steady[-1]["t"] - steady[0]["t"]
            slope = lsq_slope([(x["t"] / 3600.0, x["rss"]) for x in steady])
            f["rss_steady_first_bytes"] = steady[0]["rss"]
            f["rss_steady_last_bytes"] = steady[-1]["rss"]
            f["rss_drift_abs_bytes"] = steady[-1]["rss"] - steady[0]["rss"]
            f["rss_steady_range_bytes"] = (max(x["rss"] for x in steady) -
                                           min(x["rss"] for x in steady))
            if slope is not None:
                f["rss_drift_bytes_per_hour"] = round(slope)
                f["rss_drift_bytes_per_conn_per_hour"] = round(slope / conns, 3)
            f["server_rss_per_conn_bytes"] = round(
                (statistics.median([x["rss"] for x in steady]) - rss0) / conns, 1)
            if span > 0:
                cpu = steady[-1]["cpu_s"] - steady[0]["cpu_s"]
                f["server_cpu_pct"] = round(100 * cpu / span, 1)
                fi = [x["frames_in"] for x in steady if x["frames_in"] is not None]
                if len(fi) >= 2 and fi[-1] > fi[0]:
                    f["heartbeats_per_s"] = round((fi[-1] - fi[0]) / span)
                    f["heartbeats_source"] = "server counters (churn frames included)"
                    f["server_cpu_us_per_heartbeat"] = round(cpu * 1e6 / (fi[-1] - fi[0]), 2)
            f["loadavg_max"] = max(x["loadavg"] for x in steady)
        else:
            f["note"] = "steady window too short: need >= 2 samples after the warm-up"
        if a.mode != "client":
            window_figures(samples, w1, w2, f)
    return main_sum, batches, f


SOAK_ROWS = [
    ("main load connections", "main_connections"),
    ("churn batch (connections)", "churn_batch"),
    ("churn batches run", "churn_batches"),
    ("churned connections", "churned_connections"),
    ("connections held (median)", "conns_held"),
    ("connections held (min)", "conns_held_min"),
    ("server RSS after warm-up (B)", "rss_steady_first_bytes"),
    ("server RSS at the end (B)", "rss_steady_last_bytes"),
    ("RSS drift, absolute (B)", "rss_drift_abs_bytes"),
    ("RSS drift (B/hour)", "rss_drift_bytes_per_hour"),
    ("RSS drift (B/conn/hour)", "rss_drift_bytes_per_conn_per_hour"),
    ("silenced", "silenced"),
    ("detected", "detected"),
    ("undetected deaths", "undetected_deaths"),
    ("false deaths", "false_deaths"),
]


def print_soak(r):
    f = r["figures"]
    for name, key in SOAK_ROWS:
        print(f"{name:32}{fmt_num(f.get(key)):>16}")
    for b in r["churn"]:
        if b["exit"] != 0:
            print(f"churn batch at {b['t_start']} s: exit {b['exit']}, "
                  f"false_deaths {b['false_deaths']}, undetected {b['undetected']}, "
                  f"closes {b['closes_by_code']}")
