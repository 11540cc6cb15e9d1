#!/usr/bin/env python3
# tls_storm.py — TLS handshakes per second per core through ringbeatd, and a witness's RTT meanwhile.
"""A reconnect storm of TLS handshakes against ringbeatd, with a witness connection pinging.

  bench/tls_storm.py                          # 20,000 connections per storm, about 2 minutes
  bench/tls_storm.py --connections 5000       # quicker

ringbeatd runs on CPU 0 with one worker; ringbeat-load and the witness (this script) on CPU 1.
Each storm is ringbeat-load opening --connections TLS connections as fast as it can (each one a
handshake, a HELLO/WELCOME, a close), full or resumed handshakes, with the handshake budget at
its default (8 per loop turn) and unbounded. Meanwhile the witness, an established TLS v1
connection, sends a PING every 5 ms and times the PONG. Reported per storm: server CPU seconds
per connection (handshake and the rest of its life) and its inverse, connections per second per
core; the witness's RTT p50 / p99 / max during the storm. The same storm over plain TCP gives
the per-connection cost without TLS, so the difference is the handshake's. Needs the `openssl`
command (a test certificate) and python3's ssl module.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from rbtest import Client, MODE_CLIENT  # noqa: E402
from rbtls import TlsClient, make_cert  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metrics(port):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    c.close()
    return out


def wait_line(proc, pattern, timeout=10):
    import re
    deadline = time.time() + timeout
    rx = re.compile(pattern)
    for line in proc.stderr:
        line = line.decode()
        m = rx.search(line)
        if m:
            return m
        if time.time() > deadline:
            break
    raise RuntimeError("ringbeatd did not log /%s/" % pattern)


def storm(a, cert, key, tls, resume, budget):
    listen = ("tls://127.0.0.1:0" if tls else "127.0.0.1:0")
    cmd = ["taskset", "-c", "0", a.ringbeatd, "--listen", listen, "--workers", "1",
           "--mode", "client", "--interval", "1s", "--metrics", "127.0.0.1:0",
           "--stats-interval", "0", "--tls-cert", cert, "--tls-key", key]
    if budget is not None:
        cmd += ["--tls-handshake-budget", str(budget)]
    srv = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        port = int(wait_line(srv, r"listening addr=\S+:(\d+)").group(1))
        mport = int(wait_line(srv, r"metrics_listening addr=\S+:(\d+)").group(1))
        threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
        w = TlsClient(port) if tls else Client(port)
        w.handshake(MODE_CLIENT, 1000, 3000, b"witness")
        lcmd = ["taskset", "-c", "1", "chrt", "-o", "0", a.load, "--target", "127.0.0.1:%d" % port,
                "--connections", str(a.connections), "--rate", "1000000", "--inflight",
                str(a.inflight), "--duration", "100ms", "--interval", "10s", "--mode", "client",
                "--quiet", "--json", os.path.join(a.tmp, "load.json")]
        if tls:
            lcmd += ["--tls"] + (["--tls-resume"] if resume else [])
        c0, t0 = cpu_s(srv.pid), time.time()
        load = subprocess.Popen(lcmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        rtts, token = [], 0
        while load.poll() is None and time.time() - t0 < 300:
            token += 1
            rtts.append(w.roundtrip(token, timeout=5.0))
            time.sleep(0.005)
        load.wait(30)
        c1, t1 = cpu_s(srv.pid), time.time()
        m = metrics(mport)
        with open(os.path.join(a.tmp, "load.json")) as f:
            lj = json.load(f)
        w.close()
    finally:
        srv.terminate()
        srv.wait(30)
    rtts.sort()
    n = lj["connections_established"]
    res = dict(tls=tls, resume=resume, budget=budget, connections=n, wall_s=t1 - t0,
               server_cpu_s=c1 - c0, cpu_us_per_conn=(c1 - c0) / max(1, n) * 1e6,
               conns_per_s_per_core=n / max(1e-9, c1 - c0),
               full=m.get('ringbeat_tls_handshakes_total{result="full"}', 0),
               resumed=m.get('ringbeat_tls_handshakes_total{result="resumed"}', 0),
               budget_exhausted=m.get("ringbeat_tls_handshake_budget_exhausted_total", 0),
               witness_pings=len(rtts), rtt_p50_ms=1e3 * rtts[len(rtts) // 2],
               rtt_p99_ms=1e3 * rtts[int(len(rtts) * 0.99)], rtt_max_ms=1e3 * rtts[-1])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--inflight", type=int, default=512)
    build = os.path.join(HERE, "..", "build", "tools")
    ap.add_argument("--ringbeatd", default=os.path.join(build, "ringbeatd"))
    ap.add_argument("--load", default=os.path.join(build, "ringbeat-load"))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--budgets", default="default,0",
                    help="comma-separated --tls-handshake-budget values per TLS storm")
    a = ap.parse_args()
    if a.connections > 100000:
        raise SystemExit("at most 100,000 connections here")
    os.sched_setaffinity(0, {1})  # the witness shares CPU 1 with the load, not the server's
    try:  # ... and preempts it, so its RTT is the server's, not its own wait for the CPU
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        a.witness_prio = "SCHED_FIFO"
    except PermissionError:
        os.nice(-5) if os.geteuid() == 0 else None
        a.witness_prio = "normal (no SCHED_FIFO: its RTT includes waits for CPU 1)"
    print("witness scheduling: %s" % a.witness_prio, flush=True)
    with tempfile.TemporaryDirectory(prefix="rb-storm-") as tmp:
        a.tmp = tmp
        cert, key = make_cert(tmp)
        budgets = [None if b == "default" else int(b) for b in a.budgets.split(",")]
        runs = [(False, False, None)] + [(True, resume, b) for resume in (False, True)
                                         for b in budgets]
        results = []
        for tls, resume, budget in runs:
            r = storm(a, cert, key, tls, resume, budget)
            results.append(r)
            print("%-5s %-8s budget %-9s %6d conns in %5.1f s: server %7.1f us CPU/conn = "
                  "%6.0f conns/s/core (full %d, resumed %d, budget hit %d turns); witness %d "
                  "PINGs RTT p50 %.2f p99 %.2f max %.2f ms"
                  % ("tls" if tls else "plain", ("resumed" if resume else "full") if tls else "",
                     "default" if budget is None else (budget or "unbounded"), r["connections"],
                     r["wall_s"], r["cpu_us_per_conn"], r["conns_per_s_per_core"], r["full"],
                     r["resumed"], r["budget_exhausted"], r["witness_pings"], r["rtt_p50_ms"],
                     r["rtt_p99_ms"], r["rtt_max_ms"]), flush=True)
        plain = results[0]
        for r in results[1:]:  # the handshake's own share: what TLS adds to a connection's life
            r["handshake_us"] = r["cpu_us_per_conn"] - plain["cpu_us_per_conn"]
            r["handshakes_per_s_per_core"] = 1e6 / r["handshake_us"] if r["handshake_us"] > 0 \
                else None
            print("%s budget %s: TLS adds %.0f us of server CPU per connection: %.0f %s "
                  "handshakes/s per core" % ("resumed" if r["resume"] else "full",
                                             "default" if r["budget"] is None else
                                             (r["budget"] or "unbounded"), r["handshake_us"],
                                             r["handshakes_per_s_per_core"] or 0,
                                             "resumed" if r["resume"] else "full"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
