#!/usr/bin/env python3
"""presence.py — figures for presence in Redis: RSS per connection with and without --redis,
events/s during a ramp, 10,000 peers dying at once, and the presence threads' CPU.

    python3 bench/presence.py [--connections 100000] [--rate 20000] [--build build] [--json F]

Starts its own redis-server (no persistence) on a free port, then runs, each bounded in time:
  1. ringbeatd without --redis, N connections with 36-byte client ids: RSS per connection;
  2. ringbeatd with --redis: the same, sampling /metrics and the presence threads' CPU during
     the ramp (events written per second) and at rest;
  3. then 10,000 of the connections (a second ringbeat-load) are killed with SIGKILL at once:
     time until the last of their presence hashes is gone, and the writer's CPU meanwhile.
Prints a table and writes the JSON. Needs redis-server; python3 stdlib only.
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PER_ADDR = 10000
HZ = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[presence-bench] " + msg, file=sys.stderr, flush=True)


def free_port(lo=21000, hi=31000):
    for p in range(lo, hi):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", p))
                return p
            except OSError:
                continue
    raise SystemExit("no free port")


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def thread_cpu(pid, prefix):
    """utime+stime (s) of the process's threads whose name starts with prefix."""
    total = 0.0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            if not name.startswith(prefix):
                continue
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / HZ
        except OSError:
            pass
    return total


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        out = {}
        for line in f.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out


def redis_cmd(port, *args):
    p = subprocess.run(["redis-cli", "-p", str(port), "--raw", *args], capture_output=True,
                       text=True, timeout=10)
    return p.stdout.strip()


def wait_line(proc, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if pattern in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise SystemExit("ringbeatd did not log %r" % pattern)


def start_daemon(a, port, mport, redis_port):
    cmd = [a.ringbeatd, "--listen", "0.0.0.0:%d" % port, "--workers", "2", "--mode", "server",
           "--interval", "60s", "--stats-interval", "0", "--metrics", "127.0.0.1:%d" % mport]
    if redis_port:
        cmd += ["--redis", "redis://127.0.0.1:%d" % redis_port, "--node", "bench"]
    log(" ".join(cmd))
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    wait_line(p, "info started", 10)
    if redis_port:
        wait_line(p, "redis_resync", 10)
    # Drain stderr so the daemon never blocks on a full pipe.
    import threading
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, cmd


def load_cmd(a, port, n, first_addr, seed, hold_s, json_path):
    n_addr = max(1, math.ceil(n / PER_ADDR))
    target = "127.0.0.%d-127.0.0.%d:%d" % (first_addr, first_addr + n_addr - 1, port)
    return [a.load, "--target", target, "--connections", str(n), "--rate", str(a.rate),
            "--duration", "%ds" % hold_s, "--mode", "server", "--interval", "60s",
            "--client-ids", "uuid", "--seed", str(seed), "--quiet", "--json", json_path]


def wait_conns(mport, n, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = metrics(mport)
        if m.get('ringbeat_protocol_connections{protocol="v1"}', 0) >= n:
            return
        time.sleep(0.2)
    raise SystemExit("the daemon did not reach %d connections" % n)


def run_rss(a, redis_port, tmp):
    """RSS per connection with N connections held; returns figures (and leaves nothing)."""
    port, mport = free_port(), free_port(31000, 32000)
    d, dcmd = start_daemon(a, port, mport, redis_port)
    time.sleep(1.0)
    rss0 = rss(d.pid)
    lj = os.path.join(tmp, "load-rss-%s.json" % ("redis" if redis_port else "plain"))
    hold = math.ceil(a.connections / a.rate) + 20
    lcmd = load_cmd(a, port, a.connections, 1, 1, hold, lj)
    log(" ".join(lcmd))
    t0 = time.monotonic()
    lp = subprocess.Popen(lcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, cpu_w0 = [], thread_cpu(d.pid, "rb-redis")
    cpu0 = proc_cpu(d.pid)
    while True:
        m = metrics(mport)
        conns = m.get('ringbeat_protocol_connections{protocol="v1"}', 0)
        samples.append(dict(t=time.monotonic() - t0, conns=conns,
                            written=m.get("ringbeat_redis_events_written_total", 0),
                            depth=m.get("ringbeat_redis_queue_depth", 0),
                            cpu_presence=thread_cpu(d.pid, "rb-redis") - cpu_w0,
                            cpu=proc_cpu(d.pid) - cpu0))
        if conns >= a.connections or time.monotonic() - t0 > hold:
            break
        time.sleep(0.25)
    t_full = time.monotonic() - t0
    # Let the writer catch up and the allocator settle, then read RSS.
    time.sleep(5.0)
    m = metrics(mport)
    rss1 = rss(d.pid)
    fig = dict(connections=a.connections, rss_before=rss0, rss_held=rss1,
               rss_per_conn=round((rss1 - rss0) / a.connections, 1), ramp_s=round(t_full, 2),
               daemon=" ".join(dcmd), load=" ".join(lcmd))
    if redis_port:
        written = [s["written"] for s in samples]
        ramp = [s for s in samples if s["conns"] > 0]
        dt = ramp[-1]["t"] - ramp[0]["t"] if len(ramp) > 1 else 1
        peak = max((samples[i + 1]["written"] - samples[i]["written"]) /
                   max(1e-3, samples[i + 1]["t"] - samples[i]["t"]) for i in range(len(samples) - 1))
        fig.update(events_written=m["ringbeat_redis_events_written_total"],
                   events_per_s_ramp_mean=round((written[-1] - ramp[0]["written"]) / dt),
                   events_per_s_peak=round(peak),
                   queue_depth_max=max(s["depth"] for s in samples),
                   dropped=m['ringbeat_redis_events_dropped_total{why="queue_full"}'],
                   presence_cpu_ramp_s=round(samples[-1]["cpu_presence"], 2),
                   daemon_cpu_ramp_s=round(samples[-1]["cpu"], 2),
                   rtt_mean_ms=round(1000 * m["ringbeat_redis_roundtrip_seconds_sum"] /
                                     max(1, m["ringbeat_redis_roundtrip_seconds_count"]), 2),
                   hashes=int(redis_cmd(redis_port, "SCARD", "ringbeat:clients:bench")))
        # At rest: the presence threads' CPU over 10 s with N sessions and no events.
        c0 = thread_cpu(d.pid, "rb-redis")
        time.sleep(10)
        fig["presence_cpu_idle_pct"] = round(100 * (thread_cpu(d.pid, "rb-redis") - c0) / 10, 2)
        fig["deaths"] = run_deaths(a, d, port, mport, redis_port, tmp)
    lp.send_signal(signal.SIGINT)
    try:
        lp.wait(30)
    except subprocess.TimeoutExpired:
        lp.kill()
        lp.wait()
    d.send_signal(signal.SIGTERM)
    try:
        d.wait(30)
    except subprocess.TimeoutExpired:
        d.kill()
        d.wait()
    return fig


def run_deaths(a, d, port, mport, redis_port, tmp):
    """10,000 more peers connect (other ids), then all die at once (SIGKILL of their process)."""
    n = a.deaths
    lj = os.path.join(tmp, "load-deaths.json")
    first = math.ceil(a.connections / PER_ADDR) + 1
    lcmd = load_cmd(a, port, n, first, 2, 120, lj)
    log(" ".join(lcmd))
    lp = subprocess.Popen(lcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_conns(mport, a.connections + n, 60)
    base = a.connections
    deadline = time.monotonic() + 30
    while int(redis_cmd(redis_port, "SCARD", "ringbeat:clients:bench")) < base + n:
        if time.monotonic() > deadline:
            raise SystemExit("the 10k sessions did not all reach Redis")
        time.sleep(0.1)
    time.sleep(2)
    w0 = metrics(mport)["ringbeat_redis_events_written_total"]
    c0 = thread_cpu(d.pid, "rb-redis")
    t0 = time.monotonic()
    lp.send_signal(signal.SIGKILL)
    t_conns = t_hashes = None
    while time.monotonic() - t0 < 60:
        if t_conns is None and metrics(mport).get(
                'ringbeat_protocol_connections{protocol="v1"}', 0) <= base:
            t_conns = time.monotonic() - t0
        if int(redis_cmd(redis_port, "SCARD", "ringbeat:clients:bench")) <= base:
            t_hashes = time.monotonic() - t0
            break
        time.sleep(0.005)
    lp.wait()
    m = metrics(mport)
    return dict(peers=n, load=" ".join(lcmd),
                closed_in_s=round(t_conns, 3) if t_conns else None,
                last_hash_gone_s=round(t_hashes, 3) if t_hashes else None,
                events_written=m["ringbeat_redis_events_written_total"] - w0,
                presence_cpu_s=round(thread_cpu(d.pid, "rb-redis") - c0, 3),
                dropped=m['ringbeat_redis_events_dropped_total{why="queue_full"}'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=100000)
    ap.add_argument("--deaths", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--build", default="build")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.connections > 100000 or a.deaths > 20000:
        raise SystemExit("bounded: at most 100,000 connections and 20,000 deaths here")
    a.ringbeatd = os.path.join(a.build, "tools", "ringbeatd")
    a.load = os.path.join(a.build, "tools", "ringbeat-load")
    tmp = tempfile.mkdtemp(prefix="rb_presence_bench_")
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if redis_cmd(rport, "PING") == "PONG":
                break
            time.sleep(0.05)
        res = {"plain": run_rss(a, None, tmp)}
        res["redis"] = run_rss(a, rport, tmp)
        res["redis_server_cpu_s"] = round(proc_cpu(redis.pid), 2)
        res["redis_server_rss"] = rss(redis.pid)
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    p, r = res["plain"], res["redis"]
    rows = [("RSS per connection without --redis (B)", p["rss_per_conn"]),
            ("RSS per connection with --redis (B)", r["rss_per_conn"]),
            ("difference (B per connection)", round(r["rss_per_conn"] - p["rss_per_conn"], 1)),
            ("ramp (s) / events written", "%s / %d" % (r["ramp_s"], r["events_written"])),
            ("events/s written during the ramp (mean / peak 0.25 s)",
             "%d / %d" % (r["events_per_s_ramp_mean"], r["events_per_s_peak"])),
            ("queue depth max / dropped", "%d / %d" % (r["queue_depth_max"], r["dropped"])),
            ("batch round trip, mean (ms)", r["rtt_mean_ms"]),
            ("presence threads CPU during the ramp (s)", r["presence_cpu_ramp_s"]),
            ("daemon CPU during the ramp (s)", r["daemon_cpu_ramp_s"]),
            ("presence threads CPU at rest (% of a core)", r["presence_cpu_idle_pct"]),
            ("%d peers killed: all closed after (s)" % r["deaths"]["peers"],
             r["deaths"]["closed_in_s"]),
            ("... last presence hash gone after (s)", r["deaths"]["last_hash_gone_s"]),
            ("... presence threads CPU (s)", r["deaths"]["presence_cpu_s"]),
            ("redis-server CPU over the run (s)", res["redis_server_cpu_s"])]
    for k, v in rows:
        print("%-58s %s" % (k, v))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
