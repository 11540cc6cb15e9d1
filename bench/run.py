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
import math
import os
import resource
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from histwin import Scraper, window_figures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PER_ADDR_MAX = 10000  # connections per destination address (source-port trap: keep < 14k)

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

CHILDREN = []  # Popen objects still to be killed on exit


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration_s(s):
    """'500us', '250ms', '30s', '2m', or a bare number of milliseconds (as ringbeatd)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m)?", str(s).strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration: {s}")
    v = float(m.group(1))
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1e-3}[m.group(2)]


def fmt_duration(sec):
    return f"{int(round(sec * 1000))}ms"


# ---------- /proc sampling ----------


def proc_cpu_s(pid):
    """utime + stime of every thread of pid, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def loadavg1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def box_cpu_s():
    """Busy CPU seconds of the whole machine (/proc/stat: everything but idle and iowait),
    softirq included: where a keepalive probe's cost lands (the kernel's timer, not a process)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def keepalive_probes():
    """TCP keepalive probes sent in this network namespace (TcpExt TCPKeepAlive): kernel mode's
    heartbeats, which no user-space counter sees."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], values.split()[1:]))
            return int(d["TCPKeepAlive"]) if "TCPKeepAlive" in d else None
    return None


def slab_bytes(field="Slab"):
    """System-wide kernel slab (both ends of every loopback connection, and everyone else's)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ---------- child processes ----------


def kill_children():
    # A second Ctrl-C must not interrupt the cleanup and leave a server behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for p in list(CHILDREN):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    for p in list(CHILDREN):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        CHILDREN.remove(p)


def on_term(signum, frame):
    # Once: a second signal (a wrapper such as timeout(1) forwarding its own) must not cut the
    # cleanup short and leave the server and the load running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def spawn(cmd, cpus):
    """Starts cmd in its own process group (so a kill reaches every thread and child)."""
    if cpus is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpus] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", start_new_session=True)
    CHILDREN.append(p)
    return p


KV_RE = re.compile(r"([A-Za-z_][\w./%-]*)=(\S+)")


def parse_value(v):
    """'123' -> 123.0, '1.5ms' -> 1500.0 (microseconds for times), '12k' stays a float too."""
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ns|us|ms|s|k|M|%|B|KB|MB|GB)?,?", v)
    if not m:
        return None
    x = float(m.group(1))
    mult = {None: 1, "ns": 1e-3, "us": 1, "ms": 1e3, "s": 1e6, "k": 1e3, "M": 1e6, "%": 1,
            "B": 1, "KB": 1024, "MB": 1 << 20, "GB": 1 << 30}
    return x * mult[m.group(2)]


class LineReader(threading.Thread):
    """Reads a child's stream line by line, keeping a time-stamped key=value series."""

    def __init__(self, stream, t0, keep_lines=200, echo=None):
        super().__init__(daemon=True)
        self.stream, self.t0, self.echo = stream, t0, echo
        self.series = []  # (t, {key: float})
        self.lines = []
        self.keep = keep_lines
        self.listening = threading.Event()
        self.addr = None
        self.metrics_addr = None  # ringbeatd's "metrics_listening addr=..." line
        self.lock = threading.Lock()
        self.last_stats = {}

    def run(self):
        for line in self.stream:
            line = line.rstrip("\n")
            t = time.time() - self.t0
            if self.echo:
                self.echo(line)
            kv = {}
            for k, v in KV_RE.findall(line):
                pv = parse_value(v)
                if pv is not None:
                    kv[k] = pv
                elif k == "addr":
                    kv_addr = v
                    if " listening " in f" {line} " and self.addr is None:
                        self.addr = kv_addr
                        self.listening.set()
                    elif " metrics_listening " in f" {line} " and self.metrics_addr is None:
                        self.metrics_addr = kv_addr
            with self.lock:
                self.lines.append(line)
                if len(self.lines) > self.keep:
                    del self.lines[: len(self.lines) - self.keep]
                if kv:
                    self.series.append((t, kv))
                    if " stats " in line:
                        self.last_stats = kv

    def last(self, *keys):
        with self.lock:
            for t, kv in reversed(self.series):
                for k in keys:
                    if k in kv:
                        return kv[k]
        return None

    def tail(self, n=15):
        with self.lock:
            return self.lines[-n:]


# Keys of ringbeat-load's live line ("[  12.0s] up=... pings/s=... pongs/s=... rtt_p99=NNus ...")
# and of the servers' stats lines ("... info stats conns=... frames_in=... rtt_p99_us=...").
K_CONNS = ("up", "conns")
K_HB_TOTAL = ("hb",)  # only the stand-in load used in bench tests prints a running total
# A heartbeat round trip is a PONG (server and client modes) or, in silent mode, a lone PING.
K_HB_RATE = {"server": ("pongs/s",), "client": ("pongs/s",), "silent": ("pings/s",),
             "kernel": ("pings/s",)}  # kernel: no frames; probes counted from /proc (keepalive_probes)


# ---------- one run ----------


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_port(base):
    # Below 32768: above it, client ephemeral ports would collide with the listener.
    for port in range(base, min(base + 200, 32768)):
        if port_free(port):
            return port
    raise RuntimeError(f"no free port in {base}..{base + 200}")


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


def run_one(a, kind, label, outdir, stamp):
    """One server + one load run. Returns the result dict (figures, samples, commands)."""
    port = pick_port(a.port)
    a.port = port + 1  # the next run takes a fresh port: a ring's listener lingers ~0.2 s
    base = os.path.join(outdir, f"{a.scenario}-{stamp}-{label}")
    load_json = base + "-load.json"
    t0 = time.time()
    scmd = with_metrics(server_cmd(kind, a, port), kind)
    log(f"{label}: server: {' '.join(scmd)} (cpus {a.server_cpus})")
    srv = spawn(scmd, a.server_cpus)
    srv_err = LineReader(srv.stderr, t0)
    srv_err.start()
    threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()
    if not srv_err.listening.wait(10):
        tail = "\n  ".join(srv_err.tail())
        raise RuntimeError(f"{kind} did not print a listening line within 10 s:\n  {tail}")
    time.sleep(1.0)  # let the idle server settle before the "before" memory reading
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
    load = spawn(lcmd, a.load_cpus)
    load_err = LineReader(load.stderr, t0, echo=(lambda l: print("    load| " + l,
                                                                  file=sys.stderr))
                          if a.verbose else None)
    load_err.start()
    load_out = []
    threading.Thread(target=lambda: load_out.extend(load.stdout), daemon=True).start()

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
                            srv=dict(srv_err.last_stats), w=w, hist=hist))
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
    srv_exit = srv.poll()
    if srv_exit is None:
        srv.send_signal(signal.SIGTERM)
        try:
            srv_exit = srv.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
            srv_exit = srv.wait()
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
    vals = [(x["t"], x["srv"].get(key)) for x in s]
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
    max and min, and max / mean (PING phases spread evenly keep it near 1)."""
    key = "heartbeats_in" if any("heartbeats_in" in x["srv"] for x in hold) else "frames_in"
    pts = [(x["t"], x["srv"].get(key)) for x in hold if x["srv"].get(key) is not None]
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


# ---------- soak: a long hold with churn and silenced peers ----------


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
    scmd = with_metrics(server_cmd(a.server, a, port), a.server)
    log(f"soak: server: {' '.join(scmd)} (cpus {a.server_cpus})")
    srv = spawn(scmd, a.server_cpus)
    srv_err = LineReader(srv.stderr, t0)
    srv_err.start()
    threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()
    if not srv_err.listening.wait(10):
        raise RuntimeError("server did not print a listening line within 10 s:\n  " +
                           "\n  ".join(srv_err.tail()))
    time.sleep(1.0)
    rss0, cpu0 = proc_rss_bytes(srv.pid), proc_cpu_s(srv.pid)
    main_json = base + "-load.json"
    mcmd = lcmd(main_n, a.rate, a.hold_s, a.silent_pct, a.silent_after_s, main_json, [])
    log(f"soak: main load ({main_n} connections): {' '.join(mcmd)}")
    log(f"soak: churn: {batch} connections every {a.churn_period_s:g} s, each batch living "
        f"{life_s:g} s ({a.churn_silent_pct:g}% of it silenced after "
        f"{a.churn_silent_after_s:g} s); up to {overlap} batches at once")
    t_load = time.time() - t0
    load = spawn(mcmd, a.load_cpus)
    load_err = LineReader(load.stderr, t0, echo=(lambda l: print("    load| " + l,
                                                                  file=sys.stderr))
                          if a.verbose else None)
    load_err.start()
    threading.Thread(target=lambda: [None for _ in load.stdout], daemon=True).start()

    timeout_s = a.timeout_s or 3 * a.interval_s
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
    srv_exit = srv.poll()
    if srv_exit is None:
        srv.send_signal(signal.SIGTERM)
        try:
            srv_exit = srv.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL)
            srv_exit = srv.wait()
    for p in [srv, load] + [c["proc"] for c in churn]:
        if p in CHILDREN:
            CHILDREN.remove(p)

    def read_json(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

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
    if a.scenario == "tls":
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
    if a.scenario == "compare":
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
            rr = {}
            srv = [r for r in runs if r["server"] == kind and r["mode"] == a.mode]
            sil = [r for r in runs if r["server"] == kind and r["mode"] == "silent"]
            for x, y in zip(sil, srv):
                if not (clean(x) and clean(y)):
                    continue
                vx = x["figures"].get("server_cpu_us_per_heartbeat")
                vy = y["figures"].get("server_cpu_us_per_heartbeat")
                if vx is not None and vy:
                    rr.setdefault("each", []).append(round(vx / vy, 3))
            if rr:
                rr["median"] = statistics.median(rr["each"])
                out["ratios"][f"{kind} silent/{a.mode} cpu per heartbeat"] = rr
                print(f"  {kind}: silent / {a.mode} CPU per heartbeat {rr['median']:.3f}"
                      f"   rounds: {rr['each']}")
    if a.scenario == "modes":
        out["ratios"] = {}
        print("\nCPU per heartbeat against server mode (median over clean rounds):")
        for m in sorted({r["mode"] for r in runs} - {"server"}):
            rs = []
            for x, y in zip([r for r in runs if r["mode"] == m],
                            [r for r in runs if r["mode"] == "server"]):
                vx = x["figures"].get("server_cpu_us_per_heartbeat")
                vy = y["figures"].get("server_cpu_us_per_heartbeat")
                if clean(x) and clean(y) and vx is not None and vy:
                    rs.append(round(vx / vy, 3))
            if rs:
                out["ratios"][f"{m}/server cpu per heartbeat"] = dict(
                    median=statistics.median(rs), each=rs)
                print(f"  {m}/server {statistics.median(rs):.3f}   rounds: {rs}")
            rb = []
            for x, y in zip([r for r in runs if r["mode"] == m],
                            [r for r in runs if r["mode"] == "server"]):
                vx = x["figures"].get("box_cpu_us_per_heartbeat")
                vy = y["figures"].get("box_cpu_us_per_heartbeat")
                if clean(x) and clean(y) and vx is not None and vy:
                    rb.append(round(vx / vy, 3))
            if rb:
                out["ratios"][f"{m}/server whole-box cpu per heartbeat"] = dict(
                    median=statistics.median(rb), each=rb)
                print(f"  {m}/server whole box (both ends, softirq) {statistics.median(rb):.3f}"
                      f"   rounds: {rb}")
    if a.scenario == "ws":
        out["ratios"] = {}
        print("\nWebSocket / v1 (median over clean rounds; 1 = the same):")
        for key in ("server_cpu_us_per_heartbeat", "server_rss_per_conn_bytes", "rtt_p99_us"):
            rs = []
            v1 = [r for r in runs if r["protocol"] == "v1"]
            ws = [r for r in runs if r["protocol"] == "ws"]
            for x, y in zip(ws, v1):
                vx, vy = x["figures"].get(key), y["figures"].get(key)
                if clean(x) and clean(y) and vx is not None and vy:
                    rs.append(round(vx / vy, 3))
            if rs:
                out["ratios"][f"ws/v1 {key}"] = dict(median=statistics.median(rs), each=rs)
                print(f"  {key:32} {statistics.median(rs):.3f}   rounds: {rs}")
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
