# rbservers.py — real redis-server and haproxy for the tests, each on a free loopback port.
"""Each test starts its own servers and always cleans them up (addCleanup): RedisServer runs
redis-server in a temporary directory, Redis is a minimal RESP2 client (stdlib only), HAProxy runs
haproxy with docs/examples/haproxy.cfg, the configuration docs/operations.md describes."""

import os

import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import rbtest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HAPROXY_CFG = os.path.join(REPO, "docs", "examples", "haproxy.cfg")
SEND_SCRIPT = os.path.join(REPO, "tools", "ringbeat-send.sh")


def free_port():
    """A port nobody listens on now, below the ephemeral range (field notes: 32768+ collides)."""
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 12000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def need(binary):
    path = shutil.which(binary)
    if not path:
        raise unittest.SkipTest("%s is not installed (tools/install-deps.sh installs it)" % binary)
    return path


def tool_path(name):
    build = os.environ.get("RINGBEAT_BUILD_DIR")
    path = os.path.join(build, "tools", name) if build else None
    if not path or not os.access(path, os.X_OK):
        raise unittest.SkipTest("%s not found: set RINGBEAT_BUILD_DIR" % name)
    return path


class RespError(Exception):
    pass


class Redis:
    """A blocking RESP2 client: enough for the tests' reads and XADDs."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise AssertionError("bad RESP reply %r" % line)

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def hgetall(self, key):
        flat = self("HGETALL", key)
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    def scan_keys(self, pattern):
        keys, cursor = [], b"0"
        while True:
            cursor, batch = self("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += batch
            if cursor == b"0":
                return keys

    def xrange(self, key):
        """[(id, {field: value})] as text."""
        out = []
        for entry_id, fields in self("XRANGE", key, "-", "+"):
            out.append((entry_id.decode(), {fields[i].decode(): fields[i + 1].decode()
                                            for i in range(0, len(fields), 2)}))
        return out


class RedisServer:
    """redis-server on a free loopback port in a directory of its own; no persistence unless
    asked (SAVE writes dump.rdb there, and a restart loads it)."""

    def __init__(self):
        self.path = need("redis-server")
        self.dir = tempfile.mkdtemp(prefix="rb_redis_")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        args = [self.path, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = Redis(self.port, timeout=1.0)
                try:
                    if r("PING") == "PONG":
                        return
                finally:
                    r.close()
            except (OSError, ConnectionError, RespError):
                pass  # still loading, or not listening yet
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited (rc=%s): %s"
                                     % (self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer within %.0f s" % timeout)
            time.sleep(0.02)

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return "".join(f.readlines()[-10:])
        except OSError:
            return ""

    def client(self):
        return Redis(self.port)

    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def stop(self, save=False):
        """Shuts it down (after SAVE when asked, so a restart finds the data)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            r = self.client()
            if save:
                r("SAVE")
            try:
                r("SHUTDOWN", "NOSAVE")
            except (ConnectionError, OSError):
                pass
            r.close()
        except (OSError, ConnectionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class HAProxy:
    """haproxy -db (foreground) with docs/examples/haproxy.cfg; ports come in the environment."""

    def __init__(self, node_ports, timeout=10.0):
        self.path = need("haproxy")
        self.dir = tempfile.mkdtemp(prefix="rb_haproxy_")
        self.port = free_port()
        self.stats_port = free_port()
        env = dict(os.environ)
        env.update({"RB_FRONT": "127.0.0.1:%d" % self.port,
                    "RB_STATS": "127.0.0.1:%d" % self.stats_port})
        for i, p in enumerate(node_ports, 1):
            env["RB_NODE%d" % i] = "127.0.0.1:%d" % p
        subprocess.run([self.path, "-c", "-f", HAPROXY_CFG], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10)
        self.log = open(os.path.join(self.dir, "haproxy.out"), "wb")
        self.proc = subprocess.Popen([self.path, "-db", "-f", HAPROXY_CFG], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.stats_port), timeout=1.0):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited (rc=%s)" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise AssertionError("haproxy did not listen within %.0f s" % timeout)
            time.sleep(0.02)

    def servers_up(self):
        """Server name -> (status, last check) from the stats page's CSV."""
        with urllib.request.urlopen("http://127.0.0.1:%d/stats;csv" % self.stats_port,
                                    timeout=5) as f:
            rows = f.read().decode().splitlines()
        head = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cols = dict(zip(head, row.split(",")))
            if cols.get("pxname") == "ringbeat_nodes" and cols.get("svname") not in (
                    "BACKEND", "FRONTEND"):
                out[cols["svname"]] = (cols.get("status", ""), cols.get("check_status", ""))
        return out

    def wait_all_up(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.servers_up()
            # UP after a check that passed (servers start UP before their first check).
            if len(st) == n and all(v[0].startswith("UP") and v[1] == "L7OK"
                                    for v in st.values()):
                return st
            if time.monotonic() > deadline:
                raise AssertionError("haproxy servers not all UP: %r" % st)
            time.sleep(0.05)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def metrics(port):
    """The daemon's /metrics as {series with labels: value}."""
    return rbtest.scrape_metrics("127.0.0.1", port)


def wait_for(pred, timeout, what, step=0.02):
    """Polls pred() until it returns something true (Redis and HTTP have nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.1f s (last: %r)" % (what, timeout, v))
        time.sleep(step)


class ServersTestCase(rbtest.DaemonTestCase):
    """Adds redis-server and haproxy to the daemons a test starts, all cleaned up after it."""

    def _teardown_daemon(self, d):
        if getattr(d, "killed", False):  # a test that killed it on purpose (kill -9)
            d.kill()
            return
        super()._teardown_daemon(d)

    def start_redis(self):
        r = RedisServer()
        self.addCleanup(r.cleanup)
        return r

    def start_haproxy(self, node_ports):
        h = HAProxy(node_ports)
        self.addCleanup(h.cleanup)
        return h

    def redis_client(self, server):
        c = server.client()
        self.addCleanup(c.close)
        return c

    def start_node(self, redis, node, *flags, metrics_port=None, **kw):
        """ringbeatd with --redis and --metrics on free ports."""
        mp = metrics_port or free_port()
        d = self.start_daemon("--redis", redis.url(), "--node", node, "--metrics",
                              "127.0.0.1:%d" % mp, "--workers", "2", *flags, **kw)
        d.metrics_port = mp
        # Ready means: writing presence, reading the inbox (its group starts at "$": an entry
        # added before would be skipped) and serving /metrics, each on its own thread.
        d.wait_line(r"info redis_up role=writer", 10.0)
        d.wait_line(r"info redis_up role=inbox", 10.0)
        d.wait_line(r"info metrics_listening", 10.0)
        return d


def client_ids_of_keys(keys, prefix="ringbeat:presence:"):
    return sorted(k.decode()[len(prefix):] for k in keys)


def parse_open_peer(daemon, conn_id, timeout=5.0):
    """The peer= of the daemon's debug conn_open line for a connection."""
    m = daemon.wait_line(r"debug conn_open conn=%d peer=(\S+)" % conn_id, timeout)
    return m.group(1)


