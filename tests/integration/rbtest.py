# rbtest.py — helpers for integration tests: start ringbeatd, speak protocol v1, wait with deadlines.
"""Shared helpers for the ringbeatd integration tests (python3 stdlib only).

Daemon starts ringbeatd on an ephemeral port and learns the port from the `listening addr=` line
of its stderr; Client is a blocking protocol-v1 client whose reads all take a deadline. Every wait
is for an event (a frame, a log line, an exit) bounded in time, never a blind sleep.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import unittest

HELLO = 0x01
WELCOME = 0x02
PING = 0x03
PONG = 0x04
DATA = 0x05
CLOSE = 0x06
TUNE = 0x07
TYPE_NAMES = {HELLO: "HELLO", WELCOME: "WELCOME", PING: "PING", PONG: "PONG", DATA: "DATA",
              CLOSE: "CLOSE", TUNE: "TUNE"}

MODE_SERVER = 0
MODE_CLIENT = 1
MODE_SILENT = 2
MODE_KERNEL = 3

CLOSE_NORMAL = 1
CLOSE_TIMEOUT = 2
CLOSE_PROTOCOL = 3
CLOSE_FULL = 4
CLOSE_SHUTDOWN = 5
CLOSE_TOO_BIG = 6
CLOSE_SLOW_READER = 7
CLOSE_REPLACED = 8
CLOSE_UNAUTHORIZED = 9

HEADER = struct.Struct(">BBH")
HELLO_FIXED = struct.Struct(">BBHII")
WELCOME_BODY = struct.Struct(">BBHIIQ")

# Sanitizer and crash reports that must never appear on the daemon's stderr.
BAD_OUTPUT = re.compile(r"AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|"
                        r"runtime error:|Segmentation fault|double free|stack smashing")

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (error|warn|info|debug) (\w+)(.*)$")


def daemon_path():
    path = os.environ.get("RINGBEATD")
    if not path:
        build = os.environ.get("RINGBEAT_BUILD_DIR")
        if build:
            path = os.path.join(build, "tools", "ringbeatd")
    if not path or not os.access(path, os.X_OK):
        raise unittest.SkipTest("ringbeatd not found: set RINGBEATD to the daemon binary (got %r)"
                                % path)
    return path


def load_path():
    """The load generator binary, or None when it is not built."""
    path = os.environ.get("RINGBEAT_LOAD")
    if path and os.access(path, os.X_OK):
        return path
    return None


# ---- frame encoding ----

def frame(ftype, payload=b"", flags=0, length=None):
    """A whole frame; `length` overrides the header's payload length to build malformed frames."""
    return HEADER.pack(ftype, flags, len(payload) if length is None else length) + payload


def hello(mode=MODE_CLIENT, interval_ms=0, timeout_ms=0, client_id=b"", version=1, reserved=0,
          token=None):
    """A HELLO; with token, the token layout (flags bit 0, u8 id length, id, token)."""
    if token is not None:
        if isinstance(token, str):
            token = token.encode()
        return frame(HELLO, HELLO_FIXED.pack(version, mode, reserved | 1, interval_ms, timeout_ms)
                     + bytes([len(client_id)]) + client_id + token)
    return frame(HELLO, HELLO_FIXED.pack(version, mode, reserved, interval_ms, timeout_ms) + client_id)


def welcome_frame(mode=MODE_CLIENT, interval_ms=1000, timeout_ms=3000, conn_id=1):
    return frame(WELCOME, WELCOME_BODY.pack(1, mode, 0, interval_ms, timeout_ms, conn_id))


def tune(interval_ms, timeout_ms):
    return frame(TUNE, struct.pack(">II", interval_ms, timeout_ms))


def ping(token):
    return frame(PING, struct.pack(">Q", token))


def pong(token):
    return frame(PONG, struct.pack(">Q", token))


def data(payload):
    return frame(DATA, payload)


def close(code, reason=b""):
    return frame(CLOSE, struct.pack(">H", code) + reason)


# ---- frame decoding ----

class ProtocolViolation(AssertionError):
    """The daemon sent bytes that protocol v1 does not allow."""


class PeerClosed(AssertionError):
    """The daemon closed the connection (EOF or reset) while a frame was expected."""


class FrameTimeout(AssertionError):
    """No complete frame arrived before the deadline."""


class Frame:
    __slots__ = ("type", "flags", "payload", "t")

    def __init__(self, ftype, flags, payload, t):
        self.type = ftype
        self.flags = flags
        self.payload = payload
        self.t = t  # time.monotonic() when the frame was complete

    @property
    def token(self):
        return struct.unpack(">Q", self.payload)[0]

    @property
    def close_code(self):
        return struct.unpack(">H", self.payload[:2])[0]

    @property
    def close_reason(self):
        return self.payload[2:]

    def welcome(self):
        version, mode, reserved, interval_ms, timeout_ms, conn_id = WELCOME_BODY.unpack(self.payload)
        return {"version": version, "mode": mode, "reserved": reserved,
                "interval_ms": interval_ms, "timeout_ms": timeout_ms, "conn_id": conn_id}

    def __repr__(self):
        name = TYPE_NAMES.get(self.type, "0x%02x" % self.type)
        if self.type == CLOSE and len(self.payload) >= 2:
            return "Frame(CLOSE code=%d reason=%r)" % (self.close_code, self.close_reason)
        if self.type in (PING, PONG) and len(self.payload) == 8:
            return "Frame(%s token=%d)" % (name, self.token)
        return "Frame(%s len=%d %r)" % (name, len(self.payload), self.payload[:32])


def check_server_frame(ftype, flags, payload, max_frame=65535):
    """Validates a frame the server sent; raises ProtocolViolation on anything v1 forbids."""
    n = len(payload)
    if flags != 0:
        raise ProtocolViolation("server sent flags=0x%02x (v1 sends 0)" % flags)
    if ftype == WELCOME:
        if n != WELCOME_BODY.size:
            raise ProtocolViolation("WELCOME payload is %d bytes, expected 20" % n)
        version, mode, reserved, interval_ms, timeout_ms, _ = WELCOME_BODY.unpack(payload)
        if version != 1 or mode > 3 or reserved != 0 or interval_ms == 0 or timeout_ms <= interval_ms:
            raise ProtocolViolation("bad WELCOME: version=%d mode=%d reserved=%d interval=%d "
                                    "timeout=%d" % (version, mode, reserved, interval_ms, timeout_ms))
    elif ftype in (PING, PONG):
        if n != 8:
            raise ProtocolViolation("%s payload is %d bytes, expected 8" % (TYPE_NAMES[ftype], n))
    elif ftype == DATA:
        if n > max_frame:
            raise ProtocolViolation("DATA of %d bytes exceeds max_frame %d" % (n, max_frame))
    elif ftype == CLOSE:
        if n < 2 or n > 2 + 123:
            raise ProtocolViolation("CLOSE payload is %d bytes (2..125 allowed)" % n)
        code = struct.unpack(">H", payload[:2])[0]
        if not 1 <= code <= 9:
            raise ProtocolViolation("CLOSE code %d is not a v1 wire code" % code)
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("CLOSE reason is not UTF-8: %r" % payload[2:])
    else:
        raise ProtocolViolation("server sent frame type 0x%02x" % ftype)


class Client:
    """A blocking protocol-v1 connection; every read takes a deadline."""

    def __init__(self, port, host="127.0.0.1", connect_timeout=5.0, max_frame=65535, source=None,
                 proxy_header=None):
        self.max_frame = max_frame
        self.sock = socket.create_connection((host, port), timeout=connect_timeout,
                                             source_address=(source, 0) if source else None)
        if proxy_header:
            self.sock.sendall(proxy_header)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t_connected = time.monotonic()
        self.t_last_sent = self.t_connected
        self.buf = bytearray()
        self.eof = False

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, raw):
        """Sends raw bytes in one call; records when the last byte left (for timeout timing)."""
        self.sock.settimeout(5.0)
        self.sock.sendall(raw)
        self.t_last_sent = time.monotonic()

    def send_bytewise(self, raw, pause=0.005):
        """Sends one byte per send() call with a pause between them, to split a frame."""
        for i in range(len(raw)):
            self.send(raw[i:i + 1])
            if i + 1 < len(raw):
                time.sleep(pause)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout("no complete frame before the deadline (have %d bytes)" % len(self.buf))
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise FrameTimeout("no complete frame before the deadline (have %d bytes)" % len(self.buf))
        except ConnectionResetError:
            self.eof = True
            raise PeerClosed("connection reset by the daemon")
        if not chunk:
            self.eof = True
            raise PeerClosed("daemon closed the connection (EOF) with %d bytes pending" % len(self.buf))
        self.buf += chunk

    def recv_frame(self, timeout=2.0):
        """The next frame, validated against v1; FrameTimeout or PeerClosed otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < HEADER.size:
            self._fill(deadline)
        ftype, flags, n = HEADER.unpack_from(self.buf)
        if ftype == DATA and n > self.max_frame:
            raise ProtocolViolation("DATA header announces %d bytes > max_frame %d" % (n, self.max_frame))
        while len(self.buf) < HEADER.size + n:
            self._fill(deadline)
        payload = bytes(self.buf[HEADER.size:HEADER.size + n])
        del self.buf[:HEADER.size + n]
        check_server_frame(ftype, flags, payload, self.max_frame)
        return Frame(ftype, flags, payload, time.monotonic())

    def expect(self, ftype, timeout=2.0):
        """The next frame, which must be of type ftype."""
        f = self.recv_frame(timeout)
        if f.type != ftype:
            raise AssertionError("expected %s, got %r" % (TYPE_NAMES[ftype], f))
        return f

    def expect_welcome(self, timeout=2.0):
        return self.expect(WELCOME, timeout).welcome()

    def handshake(self, mode=MODE_CLIENT, interval_ms=0, timeout_ms=0, client_id=b"", token=None):
        self.send(hello(mode, interval_ms, timeout_ms, client_id, token=token))
        return self.expect_welcome()

    def roundtrip(self, token, timeout=2.0):
        """PING with token, expect the PONG echoing it; returns the round trip in seconds."""
        t0 = time.monotonic()
        self.send(ping(token))
        f = self.expect(PONG, timeout)
        if f.token != token:
            raise AssertionError("PONG token %d does not match PING token %d" % (f.token, token))
        return f.t - t0

    def wait_close(self, timeout, allow=(PING,), answer_pings=False):
        """Reads until a CLOSE frame; other frames must be in `allow`. Returns (Frame, frames seen).

        answer_pings: reply to server PINGs with PONG while waiting (server mode)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except FrameTimeout:
                raise FrameTimeout("no CLOSE within %.1f s (frames before: %r)" % (timeout, seen[-5:]))
            except PeerClosed as e:
                raise PeerClosed("%s, without a CLOSE frame (frames before: %r)" % (e, seen[-5:]))
            if f.type == CLOSE:
                return f, seen
            if f.type not in allow:
                raise AssertionError("unexpected %r while waiting for CLOSE (seen before: %r)"
                                     % (f, seen))
            seen.append(f)
            if answer_pings and f.type == PING:
                self.send(pong(f.token))

    def expect_close(self, code, timeout=2.0, allow=(PING,)):
        """Expects CLOSE(code) and then that the daemon closes the connection."""
        f, _ = self.wait_close(timeout, allow)
        if f.close_code != code:
            raise AssertionError("expected CLOSE(%d), got CLOSE(%d) reason=%r"
                                 % (code, f.close_code, f.close_reason))
        self.expect_eof(2.0)
        return f

    def expect_eof(self, timeout=2.0):
        """The daemon must close the connection without sending any further frame."""
        deadline = time.monotonic() + timeout
        if self.buf:
            raise AssertionError("bytes after the last frame: %r" % bytes(self.buf[:32]))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("daemon did not close the connection within %.1f s" % timeout)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buf += chunk
            if len(self.buf) >= HEADER.size:
                ftype, flags, n = HEADER.unpack_from(self.buf)
                if len(self.buf) >= HEADER.size + n:
                    raise AssertionError("frame after the connection should have closed: %r"
                                         % Frame(ftype, flags, bytes(self.buf[4:4 + n]), 0))

    def expect_silence(self, duration):
        """No frame and no close may arrive during `duration` seconds."""
        try:
            f = self.recv_frame(duration)
        except FrameTimeout:
            return
        raise AssertionError("expected silence for %.2f s, got %r" % (duration, f))


class Daemon:
    """ringbeatd on an ephemeral port; stderr is collected by a thread so it can be awaited."""

    def __init__(self, *flags, listen="127.0.0.1:0", log_format=None, start_timeout=10.0,
                 prefix=()):
        """prefix: a command that runs the daemon, e.g. ("ip", "netns", "exec", NS)."""
        self.path = daemon_path()
        args = list(prefix) + [self.path]
        if listen is not None:
            args += ["--listen", listen]
        args += [str(f) for f in flags]
        self.args = args
        self.lines = []
        self.last_index = -1  # index of the line wait_line matched last
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        self.host = None
        self.port = None
        if listen is not None:
            if log_format == "json":
                rec = self.wait_json_event("listening", start_timeout)
                addr = rec.get("addr", "")
            else:
                m = self.wait_line(r" info listening .*addr=(\S+)", start_timeout)
                addr = m.group(1)
            host, _, port = addr.rpartition(":")
            self.host = host.strip("[]")
            self.port = int(port)
            if not 0 < self.port < 65536:
                raise AssertionError("bad port in listening line: %r" % addr)

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()
        self.proc.stderr.close()

    def stderr_text(self):
        with self.cond:
            return "\n".join(self.lines)

    def tail(self, n=30):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def wait_line(self, pattern, timeout=5.0, start=0):
        """The first stderr line from index `start` matching the regex; fails on exit or deadline."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        self.last_index = i
                        return m
                    i += 1
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError("ringbeatd exited (rc=%s) before logging /%s/; stderr:\n%s"
                                         % (self.proc.returncode, pattern, self.tail()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("ringbeatd did not log /%s/ within %.1f s; stderr:\n%s"
                                         % (pattern, timeout, self.tail()))
                self.cond.wait(min(remaining, 0.2))

    def wait_json_event(self, event, timeout=5.0, start=0):
        deadline = time.monotonic() + timeout
        i = start
        while True:
            m = self.wait_line(r"^\{", max(0.01, deadline - time.monotonic()), i)
            i = self.last_index + 1
            rec = json.loads(m.string)
            if rec.get("event") == event:
                return rec

    def line_count(self):
        with self.cond:
            return len(self.lines)

    def client(self, **kw):
        return Client(self.port, host=self.host if self.host not in ("0.0.0.0", "::", "") else
                      "127.0.0.1", **kw)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def check_output_clean(self):
        self.reader.join(5.0)
        m = BAD_OUTPUT.search(self.stderr_text())
        if m:
            raise AssertionError("sanitizer or crash report on ringbeatd's stderr:\n%s" % self.tail(60))

    def stop(self, timeout=5.0):
        """SIGTERM; the daemon must exit 0 within `timeout` seconds with a clean stderr."""
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self.reader.join(5.0)
            if rc != 0:
                raise AssertionError("ringbeatd had already exited with rc=%s; stderr:\n%s"
                                     % (rc, self.tail()))
            self.check_output_clean()
            return
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.proc.kill()
            self.proc.wait(5.0)
            raise AssertionError("ringbeatd did not exit within %.1f s of SIGTERM; stderr:\n%s"
                                 % (timeout, self.tail()))
        if rc != 0:
            raise AssertionError("ringbeatd exited with rc=%d after SIGTERM; stderr:\n%s"
                                 % (rc, self.tail()))
        self.check_output_clean()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)


def scrape_metrics(host, port):
    """GET /metrics from a daemon's --metrics listener: {name or name{labels}: value}."""
    conn = http.client.HTTPConnection(host, port, timeout=5.0)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        if resp.status != 200:
            raise AssertionError("GET /metrics answered %d" % resp.status)
        text = resp.read().decode("utf-8")
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


class DaemonTestCase(unittest.TestCase):
    """Starts a daemon per test with start_daemon(); teardown asserts it exits cleanly."""

    def start_daemon(self, *flags, **kw):
        d = Daemon(*flags, **kw)
        self.addCleanup(self._teardown_daemon, d)
        return d

    def _teardown_daemon(self, d):
        # Clients are closed first (addCleanup is LIFO and clients are registered later).
        try:
            d.stop()
        finally:
            d.kill()

    def client(self, d, **kw):
        c = d.client(**kw)
        self.addCleanup(c.close)
        return c

    def metrics(self, d):
        """/metrics of a daemon started with --metrics (its address from the log line)."""
        if not hasattr(d, "metrics_addr"):
            m = d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0)
            host, _, port = m.group(1).rpartition(":")
            d.metrics_addr = (host, int(port))
        return scrape_metrics(*d.metrics_addr)


def wait_file_line(path, pattern, timeout=5.0, proc=None):
    """The first line of file `path` matching the regex, polling every 20 ms until the deadline."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = rx.search(line)
                    if m:
                        return m
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError("process exited (rc=%s) before %s had /%s/"
                                 % (proc.returncode, path, pattern))
        if time.monotonic() >= deadline:
            raise AssertionError("%s has no line /%s/ after %.1f s" % (path, pattern, timeout))
        time.sleep(0.02)  # a file has no event to wait on; bounded by the deadline


def run_tool(args, timeout=10.0):
    """Runs a short-lived command; returns (rc, stdout, stderr) as text."""
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def which(name):
    return shutil.which(name)
