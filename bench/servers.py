#!/usr/bin/env python3
# servers.py — the command lines of a benchmark's processes, and starting and stopping a server.
"""Command lines for ringbeatd, epoll_ref and ringbeat-load from run.py's options, and the start
(wait for its listening line) and stop (SIGTERM, then SIGKILL) of a server under test."""

import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time

from procs import LineReader, fmt_duration, log, spawn

PER_ADDR_MAX = 10000  # connections per destination address (source-port trap: keep < 14k)


def with_metrics(cmd, kind):
    """ringbeatd gets --metrics on a free loopback port unless the caller gave one."""
    if kind != "ringbeatd" or any(a == "--metrics" or a.startswith("--metrics=") for a in cmd):
        return cmd
    return cmd + ["--metrics", "127.0.0.1:0"]


def tls_cert(a):
    """A self-signed test certificate for the TLS runs (the openssl command), made once."""
    if not getattr(a, "cert", None):
        d = os.path.join(a.results, "tls-cert")
        os.makedirs(d, exist_ok=True)
        a.cert, a.key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", a.key, "-out", a.cert,
                        "-days", "7", "-subj", "/CN=ringbeat-bench"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return a.cert, a.key


def server_cmd(kind, a, port):
    interval = fmt_duration(a.interval_s)
    transport = getattr(a, "transport_now", "tcp")
    if kind == "ringbeatd":
        proto = getattr(a, "protocol_now", "v1")
        scheme = {("v1", False): "", ("ws", False): "ws://", ("v1", True): "tls://",
                  ("ws", True): "wss://"}[(proto, transport != "tcp")]
        cmd = [a.ringbeatd, "--listen", f"{scheme}0.0.0.0:{port}", "--mode", a.mode_now,
               "--interval", interval, "--stats-interval", "1s"]
        if transport != "tcp":
            cert, key = tls_cert(a)
            cmd += ["--tls-cert", cert, "--tls-key", key]
        if transport == "tls-keep-ssl":
            cmd += ["--tls-keep-ssl"]
        if a.server_workers:
            cmd += ["--workers", str(a.server_workers)]
        if a.max_conns:
            cmd += ["--max-conns", str(a.max_conns)]
        cmd += a.server_arg
    else:
        cmd = [a.epoll_ref, "--listen", f"0.0.0.0:{port}", "--mode", a.mode_now,
               "--interval", interval, "--stats-interval", "1s"]
        if a.max_conns:
            cmd += ["--max-conns", str(a.max_conns)]
    if a.timeout_s:
        cmd += ["--timeout", fmt_duration(a.timeout_s)]
    return cmd


def load_cmd(a, port, json_path):
    n_addr = max(1, math.ceil(a.connections / PER_ADDR_MAX))
    if n_addr > 254:
        raise SystemExit("too many connections for 127.0.0.1-127.0.0.254 at 10k per address")
    target = f"127.0.0.1-127.0.0.{n_addr}:{port}" if n_addr > 1 else f"127.0.0.1:{port}"
    cmd = [a.load, "--target", target, "--connections", str(a.connections),
           "--rate", str(a.rate), "--duration", fmt_duration(a.hold_s), "--mode", a.mode_now,
           "--interval", fmt_duration(a.interval_s), "--json", json_path]
    if a.timeout_s:
        cmd += ["--timeout", fmt_duration(a.timeout_s)]
    if a.silent_pct:
        cmd += ["--silent-pct", str(a.silent_pct), "--silent-after",
                fmt_duration(a.silent_after_s)]
    if a.load_workers:
        cmd += ["--workers", str(a.load_workers)]
    if getattr(a, "protocol_now", "v1") != "v1":
        cmd += ["--protocol", a.protocol_now]
    if getattr(a, "transport_now", "tcp") != "tcp":
        # A bounded number of handshakes in flight per ring (--inflight counts a TLS connect
        # until its WELCOME): the server never holds more handshakes than it does in well under
        # its handshake timeout (a 1M ramp with unbounded handshakes timed 60k of 155k out), and
        # the load's own client handshakes (~0.4 ms each) come in batches small enough that its
        # loop never stalls long enough to answer PINGs late in bunches.
        # --inflight is per ring and a ring holds RLIMIT_NOFILE - 1000 slots: about 1,000
        # handshakes in flight in all, whatever the connection count (1M = 53 rings).
        slots = max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1000)
        rings = max(1, -(-a.connections // slots))
        cmd += ["--tls", "--inflight", str(max(2, 1024 // rings))]
    cmd += a.load_arg
    return cmd


def start_server(a, kind, port, t0, label):
    """Starts the server under test (with --metrics for ringbeatd) and waits for its listening
    line. Returns (Popen, LineReader of its stderr, command)."""
    cmd = with_metrics(server_cmd(kind, a, port), kind)
    log(f"{label}: server: {' '.join(cmd)} (cpus {a.server_cpus})")
    srv = spawn(cmd, a.server_cpus)
    err = LineReader(srv.stderr, t0)
    err.start()
    threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()
    if not err.listening.wait(10):
        raise RuntimeError(f"{kind} did not print a listening line within 10 s:\n  " +
                           "\n  ".join(err.tail()))
    time.sleep(1.0)  # let the idle server settle before the "before" memory reading
    return srv, err, cmd


def start_load(a, cmd, t0):
    """Starts the main load generator on the load's cores. Returns (Popen, LineReader of its
    stderr, echoed with -v); its stdout is drained."""
    load = spawn(cmd, a.load_cpus)
    echo = (lambda line: print("    load| " + line, file=sys.stderr)) if a.verbose else None
    err = LineReader(load.stderr, t0, echo=echo)
    err.start()
    threading.Thread(target=lambda: [None for _ in load.stdout], daemon=True).start()
    return load, err


def stop_server(srv):
    """SIGTERM (ringbeatd drains), SIGKILL after 30 s. Returns its exit status."""
    rc = srv.poll()
    if rc is None:
        srv.send_signal(signal.SIGTERM)
        try:
            rc = srv.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
            rc = srv.wait()
    return rc
