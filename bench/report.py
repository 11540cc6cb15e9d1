#!/usr/bin/env python3
# report.py — a benchmark's data file, plot, result table and ratios between runs.
"""What bench/run.py prints and writes for its runs: the gnuplot data file and plot of each run,
the table of figures side by side, and the ratios between runs of one scenario."""

import os
import shutil
import statistics
import subprocess

from procs import REPO, fmt_duration, log

# ---------- plotting ----------


def write_plot(a, res, base):
    dat = base + ".dat"
    with open(dat, "w") as f:
        f.write("# t_s conns hb_per_s rtt_p99_us rss_mib cpu_pct slab_mib rtt_p50_us "
                "rtt_p99_cum_us late_p50_ms late_p99_ms late_p99_cum_ms late_n load_cpu_pct\n"
                "# rtt_* and late_*: per sampling window (the server's /metrics histograms, or "
                "the load's per-second line in client mode); *_cum_*: since the server started\n")
        prev = None
        for x in res["samples"]:
            cpu_pct = load_pct = "?"
            if prev is not None and x["t"] > prev["t"]:
                dt = x["t"] - prev["t"]
                cpu_pct = f"{100 * (x['cpu_s'] - prev['cpu_s']) / dt:.1f}"
                if x.get("load_cpu_s") is not None and prev.get("load_cpu_s") is not None:
                    load_pct = f"{100 * (x['load_cpu_s'] - prev['load_cpu_s']) / dt:.1f}"
            prev = x

            def q(v):
                return "?" if v is None else f"{v:g}"

            w = x.get("w") or {}
            if w.get("rtt_n"):
                rtt, rtt50 = w["rtt_p99"], w["rtt_p50"]
            elif res["mode"] == "client" and x["rtt_p99_us"]:
                rtt, rtt50 = x["rtt_p99_us"], None  # the load's own per-second p99
            else:
                rtt = rtt50 = None
            # Whole run: the scraped cumulative histogram, else the (cumulative) stats line.
            rtt_cum = w.get("rtt_cum_p99") or (x["rtt_p99_us"] if res["mode"] != "client"
                                               else None) or None
            late = w.get("late_n")
            f.write(f"{x['t']:.2f} {q(x['conns'])} {q(x['hb_s'])} {q(rtt)} "
                    f"{x['rss'] / 1048576:.2f} {cpu_pct} {x['slab'] / 1048576:.1f} {q(rtt50)} "
                    f"{q(rtt_cum)} {q(w.get('late_p50') if late else None)} "
                    f"{q(w.get('late_p99') if late else None)} {q(w.get('late_cum_p99'))} "
                    f"{q(late)} {load_pct}\n")
    res["data_file"] = dat
    if a.no_plot or not shutil.which("gnuplot"):
        return
    png = base + ".png"
    # Single quotes delimit gnuplot strings on the -e line: none may appear inside.
    title = (f"{a.scenario} {res['label']}: {res['server']} mode={res['mode']} "
             f"{a.connections} conns interval={fmt_duration(a.interval_s)}")
    if res["mode"] == "client":
        rtt_title = "RTT (us), load generator, per second"
    elif any((x.get("w") or {}).get("rtt_n") for x in res["samples"]):
        rtt_title = "RTT (us), server PING to PONG, per sampling window"
    else:
        rtt_title = "RTT p99 (us), server stats line, cumulative since start (no /metrics)"
    # gnuplot refuses a panel whose points are all undefined: say which series exist.
    have = {k: int(any(x[k] for x in res["samples"])) for k in ("conns", "hb_s")}
    have["rtt"] = int(any((x.get("w") or {}).get("rtt_n") or x["rtt_p99_us"]
                          for x in res["samples"]))
    have["late"] = int(any((x.get("w") or {}).get("late_n") for x in res["samples"]))
    r = subprocess.run(["gnuplot", "-e", f"datafile='{dat}'; outfile='{png}'; "
                        f"plottitle='{title}'; have_conns={have['conns']}; "
                        f"have_hb={have['hb_s']}; have_rtt={have['rtt']}; "
                        f"have_late={have['late']}; rtt_title='{rtt_title}'",
                        os.path.join(REPO, "bench", "plot.gp")],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()[:300]}")
    else:
        res["plot"] = png


# ---------- reporting ----------


def fmt_num(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}{unit}"
    return f"{int(v):,}{unit}"


ROWS = [
    ("connections held", "conns_held", ""),
    ("ramp (s)", "ramp_s", ""),
    ("accept rate (conn/s)", "accept_rate_per_s", ""),
    ("heartbeats/s (hold)", "heartbeats_per_s", ""),
    ("server CPU (% of a core)", "server_cpu_pct", ""),
    ("server CPU per heartbeat (us)", "server_cpu_us_per_heartbeat", ""),
    ("load generator CPU (% of a core)", "load_cpu_pct", ""),
    ("load generator CPU per heartbeat (us)", "load_cpu_us_per_heartbeat", ""),
    ("server + load CPU per heartbeat (us)", "server_load_cpu_us_per_heartbeat", ""),
    ("whole box CPU per heartbeat (us)", "box_cpu_us_per_heartbeat", ""),
    ("heartbeats/s per second: mean", "hb_rate_mean", ""),
    ("heartbeats/s per second: p95", "hb_rate_p95", ""),
    ("heartbeats/s per second: max", "hb_rate_max", ""),
    ("heartbeats/s per second: min", "hb_rate_min", ""),
    ("heartbeats/s per second: max / mean", "hb_rate_max_over_mean", ""),
    ("system load average (max)", "loadavg_max", ""),
    ("server RSS per conn (B)", "server_rss_per_conn_bytes", ""),
    ("kernel slab per conn (B)", "kernel_slab_per_conn_bytes", ""),
    ("  of which unreclaimable (B)", "kernel_sunreclaim_per_conn_bytes", ""),
    # Server mode: per sampling window of the server's histogram (see window_figures).
    ("RTT p50 (us), per window, median", "rtt_p50_us", ""),
    ("RTT p99 (us), per window, median", "rtt_p99_us", ""),
    ("RTT p99 (us), per window, max", "rtt_p99_us_window_max", ""),
    ("RTT p99 (us), hold as one window", "rtt_p99_us_hold", ""),
    ("RTT p99 (us), WHOLE RUN cumulative", "rtt_p99_us_whole_run", ""),
    ("RTT p99 (us), stats line, cumulative", "rtt_p99_us_statsline", ""),
    ("false deaths", "false_deaths", ""),
    ("server lateness p50 (ms), per window", "server_lateness_ms_p50", ""),
    ("server lateness p99 (ms), per window", "server_lateness_ms_p99", ""),
    ("server lateness p99 (ms), worst window", "server_lateness_ms_p99_window_max", ""),
    ("server lateness p99 (ms), WHOLE RUN", "server_lateness_ms_p99_whole_run", ""),
    ("load lateness p50 (ms), whole run", "detection_lateness_ms_p50", ""),
    ("load lateness p99 (ms), whole run", "detection_lateness_ms_p99", ""),
    ("load lateness max (ms), whole run", "detection_lateness_ms_max", ""),
]
# Rows left out when no run has them (nothing silenced, no /metrics, client mode).
OPTIONAL_ROW_KEYS = ("lateness", "rtt_p50_us", "rtt_p99_us_")


def print_table(runs):
    w = max([14] + [len(r["label"]) for r in runs]) + 2
    head = f"{'figure':40}" + "".join(f"{r['label']:>{w}}" for r in runs)
    print(head)
    print("-" * len(head))
    for name, key, unit in ROWS:
        if all(r["figures"].get(key) is None for r in runs) and any(
                k in key for k in OPTIONAL_ROW_KEYS):
            continue
        if key == "rtt_p99_us_statsline" and all(r["figures"].get("rtt_p99_us") is not None
                                                 for r in runs):
            continue  # every run has the per-window figure: the cumulative one is not needed
        print(f"{name:40}" + "".join(f"{fmt_num(r['figures'].get(key), unit):>{w}}"
                                      for r in runs))
    extra = ["load.connections_established", "load.connect_failures",
             "load.rtt_p99_us_whole_run", "load.late_answers", "load.self_inflicted",
             "load.loop_lag_us_p99", "load.loop_lag_us_max", "load.answer_lag_us_p99",
             "load.answer_lag_us_max"]
    if any(r["figures"].get("load.silenced") for r in runs):
        extra += ["load.silenced", "load.detected", "load.undetected", "load.detected_early"]
    for k in extra:
        if all(r["figures"].get(k) is None for r in runs):
            continue
        print(f"{k[:40]:40}" + "".join(f"{fmt_num(r['figures'].get(k)):>{w}}" for r in runs))
    for r in runs:
        ok = clean(r)
        print(f"{r['label']}: load exit {r['load_exit']}, server exit {r['server_exit']}, "
              f"heartbeats from {r['figures'].get('heartbeats_source', 'n/a')}"
              f"{'' if ok else '  <-- NOT CLEAN'}")
        if r["figures"].get("rtt_source"):
            print(f"  RTT p99: {r['figures']['rtt_source']}")


def clean(r):
    return r["load_exit"] == 0 and not r["timed_out"]


def ratios(runs, num_kind, den_kind, mode):
    """Median over rounds of ringbeatd/epoll_ref for each figure, pairing rounds in order."""
    num = [r for r in runs if r["server"] == num_kind and r["mode"] == mode]
    den = [r for r in runs if r["server"] == den_kind and r["mode"] == mode]
    out = {}
    for key in ("server_cpu_us_per_heartbeat", "server_rss_per_conn_bytes", "rtt_p99_us"):
        rs, name = [], key
        for x, y in zip(num, den):
            if not (clean(x) and clean(y)):
                continue  # a run with false deaths or failed connects measured another load
            k = key
            if key == "rtt_p99_us" and x["figures"].get("rtt_source") != \
                    y["figures"].get("rtt_source"):
                # epoll_ref has no /metrics: compare like with like, cumulative both sides.
                k = name = "rtt_p99_us_statsline"
            vx, vy = x["figures"].get(k), y["figures"].get(k)
            if vx is not None and vy:
                rs.append(vx / vy)
        if rs:
            out[name] = dict(median=round(statistics.median(rs), 3),
                             each=[round(v, 3) for v in rs])
    return out


def paired_ratios(xs, ys, key):
    """x / y of one figure for each pair of clean runs (the rounds paired in order)."""
    out = []
    for x, y in zip(xs, ys):
        vx, vy = x["figures"].get(key), y["figures"].get(key)
        if clean(x) and clean(y) and vx is not None and vy:
            out.append(round(vx / vy, 3))
    return out


def report_tls(runs, out):
    """tls: each transport against plain TCP, the same load: bytes per connection over plain,
    CPU per heartbeat as a ratio."""
    base = next((r for r in runs if r["label"] == "tcp"), None)
    out["tls_vs_plain"] = {}
    for r in runs:
        if r is base or not base:
            continue
        f, b = r["figures"], base["figures"]
        row = {}
        if f.get("server_rss_per_conn_bytes") is not None and \
                b.get("server_rss_per_conn_bytes") is not None:
            row["rss_per_conn_over_plain_bytes"] = round(
                f["server_rss_per_conn_bytes"] - b["server_rss_per_conn_bytes"], 1)
        if f.get("server_cpu_us_per_heartbeat") and b.get("server_cpu_us_per_heartbeat"):
            row["cpu_per_heartbeat_ratio"] = round(
                f["server_cpu_us_per_heartbeat"] / b["server_cpu_us_per_heartbeat"], 3)
        out["tls_vs_plain"][r["label"]] = row
        print(f"  {r['label']} vs tcp: " + ", ".join(f"{k} {v}" for k, v in row.items()))


def report_compare(a, runs, out):
    out["ratios"] = {}
    for mode in sorted({r["mode"] for r in runs}):
        rr = ratios(runs, "ringbeatd", "epoll_ref", mode)
        out["ratios"][f"ringbeatd/epoll_ref {mode}"] = rr
        print(f"\nringbeatd / epoll_ref, mode {mode} (median over clean rounds; <1 = "
              f"ringbeatd better):")
        if not rr:
            print("  no round where both runs were clean (see NOT CLEAN above)")
        for k, v in rr.items():
            print(f"  {k:32} {v['median']:.3f}   rounds: {v['each']}")
    for kind in ("ringbeatd", "epoll_ref"):
        srv = [r for r in runs if r["server"] == kind and r["mode"] == a.mode]
        sil = [r for r in runs if r["server"] == kind and r["mode"] == "silent"]
        each = paired_ratios(sil, srv, "server_cpu_us_per_heartbeat")
        if each:
            rr = dict(each=each, median=statistics.median(each))
            out["ratios"][f"{kind} silent/{a.mode} cpu per heartbeat"] = rr
            print(f"  {kind}: silent / {a.mode} CPU per heartbeat {rr['median']:.3f}"
                  f"   rounds: {each}")


def report_modes(runs, out):
    out["ratios"] = {}
    print("\nCPU per heartbeat against server mode (median over clean rounds):")
    srv = [r for r in runs if r["mode"] == "server"]
    for m in sorted({r["mode"] for r in runs} - {"server"}):
        xs = [r for r in runs if r["mode"] == m]
        for key, name, what in (("server_cpu_us_per_heartbeat", "cpu per heartbeat", ""),
                                ("box_cpu_us_per_heartbeat", "whole-box cpu per heartbeat",
                                 " whole box (both ends, softirq)")):
            rs = paired_ratios(xs, srv, key)
            if rs:
                out["ratios"][f"{m}/server {name}"] = dict(median=statistics.median(rs), each=rs)
                print(f"  {m}/server{what} {statistics.median(rs):.3f}   rounds: {rs}")


def report_ws(runs, out):
    out["ratios"] = {}
    print("\nWebSocket / v1 (median over clean rounds; 1 = the same):")
    v1 = [r for r in runs if r["protocol"] == "v1"]
    ws = [r for r in runs if r["protocol"] == "ws"]
    for key in ("server_cpu_us_per_heartbeat", "server_rss_per_conn_bytes", "rtt_p99_us"):
        rs = paired_ratios(ws, v1, key)
        if rs:
            out["ratios"][f"ws/v1 {key}"] = dict(median=statistics.median(rs), each=rs)
            print(f"  {key:32} {statistics.median(rs):.3f}   rounds: {rs}")


def report_scenario(a, runs, out):
    """The ratios between the runs of a scenario that runs several (into out, and printed)."""
    if a.scenario == "tls":
        report_tls(runs, out)
    elif a.scenario == "compare":
        report_compare(a, runs, out)
    elif a.scenario == "modes":
        report_modes(runs, out)
    elif a.scenario == "ws":
        report_ws(runs, out)
