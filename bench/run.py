#!/usr/bin/env python3
# run.py — runs a ringbeat benchmark scenario end to end: server, load, /proc sampling, figures, plot.
"""Run a ringbeat benchmark scenario end to end.

  bench/run.py smoke                      # 10k connections, 1 s interval, ~20 s: the quick check
  bench/run.py 100k                       # 100k connections, 5 s interval, 60 s hold
  bench/run.py 1m                         # 1M connections, 30 s interval, 1% silenced, 5 min hold
  bench/run.py compare                    # ringbeatd vs epoll_ref, alternated, same workload
  bench/run.py soak                       # 1M connections for 30 min, 1% churn per minute
  bench/run.py ws                         # v1 and WebSocket side by side: CPU/heartbeat, RSS/conn
  bench/run.py tls                        # 100k connections: plain v1, v1 over TLS (ours), and
                                          # TLS keeping OpenSSL's SSL object, one after the other
  bench/run.py smoke --connections 2000 --hold 5s     # any scenario scaled down

Each run starts the server (pinned to one core with taskset), waits for its `listening addr=` line,
starts ringbeat-load (pinned to the other core), samples the server's VmRSS and utime+stime and the
system's Slab once a second, and stops everything by itself (bounded by a deadline; Ctrl-C or
SIGTERM kill the children). Results: results/<scenario>-<timestamp>.json and a .png per run.

RTT and detection lateness come from ringbeatd's own histograms, scraped from its /metrics (run.py
adds --metrics 127.0.0.1:0) with every sample: percentiles are computed per sampling window (the
difference of two consecutive cumulative scrapes), so a slow ramp does not hide the steady state;
the cumulative figure since the server started is kept as one labelled "whole run" line.
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

from figures import figures
from histwin import Scraper
from procs import CHILDREN, REPO, K_CONNS, K_HB_RATE, K_HB_TOTAL, box_cpu_s, keepalive_probes, \
    kill_children, loadavg1, log, on_term, parse_duration_s, pick_port, proc_cpu_s, \
    proc_rss_bytes, slab_bytes
from report import print_table, report_scenario, write_plot
from servers import load_cmd, start_load, start_server, stop_server
from soak import print_soak, run_soak

SCENARIOS = {
    # name: defaults; every one can be overridden on the command line.
    "smoke": dict(connections=10000, rate=5000, hold="15s", interval="1s", mode="server"),
    "100k": dict(connections=100000, rate=20000, hold="60s", interval="5s", mode="server"),
    "1m": dict(connections=1000000, rate=30000, hold="300s", interval="30s", mode="server",
               silent_pct=1.0, silent_after="60s"),
    "compare": dict(connections=15000, rate=5000, hold="30s", interval="1s", mode="server",
                    rounds=2),
    "custom": dict(connections=1000, rate=1000, hold="10s", interval="1s", mode="server"),
    # modes: the same connections in server, silent and kernel mode (TCP keepalive) in turn,
    # each with a fresh server: server CPU per heartbeat side by side (kernel/server is the goal
    # of issue 12: at most 0.3).
    "modes": dict(connections=20000, rate=10000, hold="30s", interval="1s", mode="server",
                  rounds=1, modes="server,silent,kernel"),
    # ws: the same workload over protocol v1 and over WebSocket (ringbeat-load --protocol ws),
    # alternated, each with a fresh server: CPU per heartbeat and RSS per connection side by side.
    "ws": dict(connections=100000, rate=20000, hold="30s", interval="5s", mode="server",
               rounds=1),
    # soak: churn and silencing come from short-lived extra loads (run_soak); --silent-pct here
    # would silence that share of the main load once.
    # tls: the same load over each transport in turn (--transports): server RSS per connection and
    # CPU per heartbeat side by side; tls-keep-ssl is OpenSSL's own record layer (SSL object with
    # SSL_MODE_RELEASE_BUFFERS kept per connection, ringbeatd's hidden --tls-keep-ssl).
    "tls": dict(connections=100000, rate=1500, hold="60s", interval="5s", mode="server",
                transports="tcp,tls,tls-keep-ssl"),
    "soak": dict(connections=1000000, rate=30000, hold="30m", interval="30s", mode="server",
                 churn_pct=1.0, churn_period="60s", churn_silent_pct=10.0,
                 churn_silent_after="10s"),
}


# ---------- one run ----------


def run_one(a, kind, label, outdir, stamp):
    """One server + one load run. Returns the result dict (figures, samples, commands)."""
    port = pick_port(a.port)
    a.port = port + 1  # the next run takes a fresh port: a ring's listener lingers ~0.2 s
    base = os.path.join(outdir, f"{a.scenario}-{stamp}-{label}")
    load_json = base + "-load.json"
    t0 = time.time()
    srv, srv_err, scmd = start_server(a, kind, port, t0, label)
    rss0, slab0, cpu0 = proc_rss_bytes(srv.pid), slab_bytes(), proc_cpu_s(srv.pid)
    sunrec0 = slab_bytes("SUnreclaim")
    load0 = loadavg1()
    if load0 > 1.5:
        log(f"{label}: warning: load average {load0:.1f} on {os.cpu_count()} cpus before the run: "
            "other processes compete with the server and the load (figures will be noisy)")

    samples = []  # per second: t, conns, hb_s, rtt_p99_us, rss, cpu_s, slab, w (window figures)
    scraper = Scraper(srv_err)
    scraper.sample()  # the baseline: the first window starts here
    lcmd = load_cmd(a, port, load_json)
    log(f"{label}: load: {' '.join(lcmd)} (cpus {a.load_cpus})")
    t_load = time.time() - t0
    load, load_err = start_load(a, lcmd, t0)

    # Two deadlines: the ramp may take up to 5x its planned time on a busy machine; once it is
    # over (every connection is up or has failed), the hold and the teardown get a fixed budget.
    ramp_est = a.connections / max(1, a.rate)
    deadline = time.time() + max(60, ramp_est * 5) + a.hold_s + 30 + a.interval_s
    ramp_over = False
    prev_hb = None
    timed_out = False
    pause = [float(x) for x in a.pause_load.split(":")] if getattr(a, "pause_load", None) else None
    ramp_over_t = paused_t = None
    pause_window = None
    while True:
        alive_load = load.poll() is None
        now = time.time()
        t = now - t0
        if srv.poll() is not None:
            log(f"{label}: server exited early with {srv.returncode}")
            break
        try:
            rss, cpu = proc_rss_bytes(srv.pid), proc_cpu_s(srv.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        try:
            load_cpu = proc_cpu_s(load.pid)
        except (FileNotFoundError, ProcessLookupError):
            load_cpu = None
        conns = load_err.last(*K_CONNS)
        if conns is None:
            conns = srv_err.last(*K_CONNS)
        hb_total = load_err.last(*K_HB_TOTAL)
        hb_rate = load_err.last(*K_HB_RATE[a.mode_now])
        if hb_rate is None and hb_total is not None and prev_hb is not None:
            hb_rate = (hb_total - prev_hb[1]) / max(1e-3, t - prev_hb[0])
        if hb_total is not None:
            prev_hb = (t, hb_total)
        # The load measures RTT only for its own PINGs (client mode); in server mode the server
        # measures its PING -> PONG. A 0 from the load means "no sample this second".
        rtt = load_err.last("rtt_p99") if a.mode_now == "client" else None
        if not rtt:
            rtt = srv_err.last_stats.get("rtt_p99_us")
        w, hist = scraper.sample()
        samples.append(dict(t=round(t - t_load, 3), conns=conns, hb_s=hb_rate, rtt_p99_us=rtt,
                            rss=rss, cpu_s=cpu, slab=slab_bytes(),
                            sunreclaim=slab_bytes("SUnreclaim"), load_cpu_s=load_cpu,
                            loadavg=loadavg1(), ka=keepalive_probes(), box_cpu_s=box_cpu_s(),
                            srv=dict(srv_err.last_stats),
                            srv_t=(None if srv_err.last_stats_t is None
                                   else round(srv_err.last_stats_t - t_load, 3)),
                            w=w, hist=hist))
        if not ramp_over:
            up, failed = load_err.last("up"), load_err.last("failed")
            if up is not None and up + (failed or 0) >= a.connections:
                ramp_over = True
                ramp_over_t = now
                # The load generator closes its sockets in paced batches when the hold ends
                # (about 1 s per 10k connections; WebSocket closes wait for the server's Close,
                # 1.8k/s at 1M on a shared box): allow for it, or a 1M run loses its JSON.
                close_rate = 1500 if a.protocol_now == "ws" else 10000
                deadline = now + a.hold_s + 30 + a.interval_s + a.connections / close_rate
        if pause and ramp_over_t is not None and alive_load:
            if paused_t is None and now >= ramp_over_t + pause[0]:
                os.killpg(load.pid, signal.SIGSTOP)
                paused_t = now
                log(f"{label}: load generator stopped for {pause[1]:g} s (--pause-load)")
            elif paused_t is not None and pause_window is None and now >= paused_t + pause[1]:
                os.killpg(load.pid, signal.SIGCONT)
                pause_window = [round(paused_t - t0 - t_load, 1), round(now - t0 - t_load, 1)]
                deadline += now - paused_t
        if not alive_load:
            break
        if now > deadline:
            log(f"{label}: deadline passed, stopping the load generator")
            timed_out = True
            os.killpg(load.pid, signal.SIGINT)
            try:
                load.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(load.pid, signal.SIGKILL)
            break
        time.sleep(max(0.05, 1.0 - (time.time() - now)))
    t_end = time.time() - t0 - t_load
    load_rc = load.wait()
    srv_exit = stop_server(srv)
    for p in (srv, load):
        if p in CHILDREN:
            CHILDREN.remove(p)
    load_err.join(2)
    srv_err.join(2)

    load_summary = None
    if os.path.exists(load_json):
        try:
            with open(load_json) as f:
                load_summary = json.load(f)
        except ValueError as e:
            log(f"{label}: cannot parse {load_json}: {e}")
    res = dict(label=label, server=kind, mode=a.mode_now, port=port,
               protocol=getattr(a, "protocol_now", "v1"),
               server_cmd=scmd, load_cmd=lcmd, server_cpus=a.server_cpus,
               load_cpus=a.load_cpus, load_exit=load_rc, server_exit=srv_exit,
               timed_out=timed_out, rss_before=rss0, slab_before=slab0, cpu_before_s=cpu0,
               sunreclaim_before=sunrec0, loadavg_before=load0,
               samples=samples, load_summary=load_summary, metrics_addr=srv_err.metrics_addr,
               pause_window=pause_window,
               scrape_failures=scraper.failures,
               load_tail=load_err.tail(), server_tail=srv_err.tail(8))
    res["figures"] = figures(a, res, t_end)
    write_plot(a, res, base)
    return res


# ---------- main ----------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--build", default=os.path.join(REPO, "build"),
                    help="build directory holding tools/ and bench/ (default: build)")
    ap.add_argument("--ringbeatd", help="ringbeatd binary (default: BUILD/tools/ringbeatd)")
    ap.add_argument("--load", help="ringbeat-load binary (default: BUILD/tools/ringbeat-load)")
    ap.add_argument("--epoll-ref", help="epoll_ref binary (default: BUILD/bench/epoll_ref)")
    ap.add_argument("--server", choices=("ringbeatd", "epoll_ref"), default="ringbeatd",
                    help="server for smoke/100k/1m/custom (compare runs both)")
    ap.add_argument("--connections", type=int)
    ap.add_argument("--rate", type=int, help="connects per second during the ramp")
    ap.add_argument("--hold", type=parse_duration_s, help="hold time after the ramp")
    ap.add_argument("--interval", type=parse_duration_s)
    ap.add_argument("--timeout", type=parse_duration_s, help="default: the server's 3 x interval")
    ap.add_argument("--mode", choices=("server", "client", "silent", "kernel"))
    ap.add_argument("--modes", help="modes: comma-separated modes to run in turn "
                    "(server,silent,kernel)")
    ap.add_argument("--protocol", choices=("v1", "ws"), default="v1",
                    help="protocol of smoke/100k/1m/custom/soak runs (ws: a ws:// listener and "
                    "ringbeat-load --protocol ws); the ws scenario runs both")
    ap.add_argument("--silent-pct", type=float)
    ap.add_argument("--silent-after", type=parse_duration_s)
    ap.add_argument("--rounds", type=int, help="compare: alternations per server")
    ap.add_argument("--no-silent", action="store_true", help="compare: skip the silent-mode runs")
    ap.add_argument("--transports",
                    help="tls: comma-separated runs among tcp, tls, tls-keep-ssl (all three)")
    ap.add_argument("--port", type=int, default=7600, help="first listening port (< 32768)")
    ap.add_argument("--server-cpus", default="0", help="taskset list for the server ('' = none)")
    ap.add_argument("--load-cpus", default="1", help="taskset list for the load ('' = none)")
    ap.add_argument("--server-workers", type=int,
                    help="ringbeatd --workers (default: 1 when pinned to one core)")
    ap.add_argument("--load-workers", type=int)
    ap.add_argument("--max-conns", type=int)
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra ringbeatd argument (repeatable), e.g. --server-arg=--batch-window=1ms")
    ap.add_argument("--load-arg", action="append", default=[], help="extra ringbeat-load argument")
    ap.add_argument("--pause-load", metavar="AT:DUR",
                    help="stop the load generator (SIGSTOP) AT seconds after the ramp for DUR "
                         "seconds: a stall that bunches answers; the per-second heartbeat rate "
                         "is then taken from one interval after the pause")
    ap.add_argument("--churn-pct", type=float,
                    help="soak: %% of the connections replaced every churn period (1)")
    ap.add_argument("--churn-period", type=parse_duration_s,
                    help="soak: a new churn batch starts this often (60s)")
    ap.add_argument("--churn-silent-pct", type=float,
                    help="soak: %% of each churn batch that goes silent (10)")
    ap.add_argument("--churn-silent-after", type=parse_duration_s,
                    help="soak: ... this long after its WELCOME (10s)")
    ap.add_argument("--warmup", type=parse_duration_s,
                    help="soak: excluded from the RSS drift (default: hold/4, at most 5m)")
    ap.add_argument("--sample-every", type=parse_duration_s,
                    help="soak: server RSS sampling period (default: hold/12, at most 1m)")
    ap.add_argument("--results", default=os.path.join(REPO, "results"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the load's live lines")
    a = ap.parse_args()

    d = SCENARIOS[a.scenario]
    a.connections = a.connections or d["connections"]
    a.rate = a.rate or d["rate"]
    a.hold_s = a.hold if a.hold is not None else parse_duration_s(d["hold"])
    a.interval_s = a.interval or parse_duration_s(d["interval"])
    a.timeout_s = a.timeout
    a.mode = a.mode or d["mode"]
    a.silent_pct = a.silent_pct if a.silent_pct is not None else d.get("silent_pct", 0.0)
    a.silent_after_s = a.silent_after or parse_duration_s(d.get("silent_after", "10s"))
    a.rounds = a.rounds or d.get("rounds", 1)
    a.churn_pct = a.churn_pct if a.churn_pct is not None else d.get("churn_pct", 0.0)
    a.churn_period_s = a.churn_period or parse_duration_s(d.get("churn_period", "60s"))
    a.churn_silent_pct = (a.churn_silent_pct if a.churn_silent_pct is not None
                          else d.get("churn_silent_pct", 0.0))
    a.churn_silent_after_s = a.churn_silent_after or parse_duration_s(
        d.get("churn_silent_after", "10s"))
    # A batch ramps over ~5 s: gentle beside the main load, short beside its life.
    a.churn_rate = max(100, round(a.connections * a.churn_pct / 100 / 5))
    a.warmup_s = a.warmup if a.warmup is not None else min(300.0, a.hold_s / 4)
    a.sample_every_s = a.sample_every or min(60.0, max(1.0, a.hold_s / 12))
    a.server_cpus = a.server_cpus or None
    a.load_cpus = a.load_cpus or None
    if a.server_workers is None and a.server_cpus and re.fullmatch(r"\d+", a.server_cpus):
        a.server_workers = 1
    a.ringbeatd = a.ringbeatd or os.path.join(a.build, "tools", "ringbeatd")
    a.load = a.load or os.path.join(a.build, "tools", "ringbeat-load")
    a.epoll_ref = a.epoll_ref or os.path.join(a.build, "bench", "epoll_ref")
    if a.port >= 32768:
        ap.error("--port must be below 32768 (ephemeral ports start there)")
    if (os.cpu_count() or 1) < 2:
        a.server_cpus = a.load_cpus = None
        log("one CPU only: server and load are not pinned")

    plan = []  # (server kind, mode, label)
    transports = {}  # label -> transport, for the tls scenario
    if a.scenario == "tls":
        for t in (a.transports or d["transports"]).split(","):
            if t not in ("tcp", "tls", "tls-keep-ssl"):
                ap.error(f"--transports: unknown {t!r}")
            plan.append(("ringbeatd", a.mode, t))
            transports[t] = t
    elif a.scenario == "compare":
        for i in range(1, a.rounds + 1):
            plan.append(("ringbeatd", a.mode, f"ringbeatd-{a.mode}-{i}"))
            plan.append(("epoll_ref", a.mode, f"epoll_ref-{a.mode}-{i}"))
            if not a.no_silent and a.mode != "silent":
                plan.append(("ringbeatd", "silent", f"ringbeatd-silent-{i}"))
                plan.append(("epoll_ref", "silent", f"epoll_ref-silent-{i}"))
    elif a.scenario == "modes":
        for i in range(1, a.rounds + 1):
            for m in (a.modes or d["modes"]).split(","):
                if m not in ("server", "client", "silent", "kernel"):
                    ap.error(f"--modes: unknown {m!r}")
                plan.append(("ringbeatd", m, f"{m}-{i}"))
    elif a.scenario == "ws":
        for i in range(1, a.rounds + 1):
            plan.append(("ringbeatd", a.mode, f"v1-{i}"))
            plan.append(("ringbeatd", a.mode, f"ws-{i}"))
    else:
        plan.append((a.server, a.mode, a.server))
    needed = {a.load} | {a.ringbeatd if k == "ringbeatd" else a.epoll_ref for k, _, _ in plan}
    missing = [p for p in needed if not os.access(p, os.X_OK)]
    if missing:
        raise SystemExit("missing binaries (build them first): " + ", ".join(missing))

    os.makedirs(a.results, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background (SIG_IGN)
    log(f"scenario {a.scenario}: {a.connections} connections at {a.rate}/s, hold "
        f"{a.hold_s:g} s, interval {a.interval_s:g} s, mode {a.mode}; server on cpus "
        f"{a.server_cpus or 'any'}, load on cpus {a.load_cpus or 'any'} (taskset)")
    runs = []
    try:
        if a.scenario == "soak":
            a.mode_now = a.mode
            a.protocol_now = a.protocol
            runs.append(run_soak(a, a.results, stamp))
        for kind, mode, label in plan if a.scenario != "soak" else []:
            a.mode_now = mode
            a.protocol_now = "ws" if label.startswith("ws-") else (
                "v1" if a.scenario in ("ws", "compare") else a.protocol)
            a.transport_now = transports.get(label, "tcp")
            runs.append(run_one(a, kind, label, a.results, stamp))
            time.sleep(1.0)  # let TIME_WAIT/CLOSE_WAIT sockets of the last run go
    except KeyboardInterrupt:
        log("interrupted: killing children")
    finally:
        kill_children()
    if not runs:
        return 1
    out = dict(scenario=a.scenario, started=stamp, host=dict(cpus=os.cpu_count(),
               kernel=os.uname().release),
               config=dict(connections=a.connections, rate=a.rate, hold_s=a.hold_s,
                           interval_s=a.interval_s, timeout_s=a.timeout_s, mode=a.mode,
                           silent_pct=a.silent_pct, silent_after_s=a.silent_after_s,
                           rounds=a.rounds, server_cpus=a.server_cpus, load_cpus=a.load_cpus,
                           server_workers=a.server_workers),
               argv=sys.argv, runs=runs)
    print()
    print(f"scenario {a.scenario}: {a.connections} connections, interval {a.interval_s:g} s, "
          f"hold {a.hold_s:g} s; server pinned to cpu {a.server_cpus or '-'}, "
          f"load to cpu {a.load_cpus or '-'}")
    print_table(runs)
    if a.scenario == "soak":
        out["config"].update(churn_pct=a.churn_pct, churn_period_s=a.churn_period_s,
                             churn_silent_pct=a.churn_silent_pct,
                             churn_silent_after_s=a.churn_silent_after_s,
                             warmup_s=a.warmup_s, sample_every_s=a.sample_every_s)
        print_soak(runs[0])
    report_scenario(a, runs, out)
    path = os.path.join(a.results, f"{a.scenario}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nresults: {path}")
    for r in runs:
        if r.get("plot"):
            print(f"plot:    {r['plot']}")
    bad = [r for r in runs if r["load_exit"] != 0 or r["timed_out"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
