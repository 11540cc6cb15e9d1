#!/usr/bin/env python3
# procs.py — run.py's plumbing: /proc sampling, child processes, their key=value lines, ports.
"""What bench/run.py reads from /proc, how it starts and kills its children, and how it reads
their key=value lines (a time-stamped series per child)."""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
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
        self.last_stats_t = None  # when the last stats line arrived (s since t0)

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
                        self.last_stats_t = t

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


# ---------- ports ----------


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
