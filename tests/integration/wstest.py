# wstest.py — helpers for the WebSocket integration tests: a raw RFC 6455 client with deadlines.
"""A blocking WebSocket client that can also send what RFC 6455 forbids (python3 stdlib only).

The peer under test is always the real ringbeatd (rbtest.Daemon with a ws:// listener). WsClient
speaks the handshake and frames byte by byte so the tests can send unmasked frames, reserved bits,
split headers and invalid UTF-8; every frame the daemon sends is checked against what a server
may send (unmasked, no reserved bits, control frames short and whole). Standard clients (Python
websockets, node ws, Chromium) are started by the tests themselves as separate processes.
"""

import base64
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time

from rbtest import FrameTimeout, PeerClosed, ProtocolViolation

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OP_NAMES = {CONT: "CONT", TEXT: "TEXT", BINARY: "BINARY", CLOSE: "CLOSE", PING: "PING",
            PONG: "PONG"}

# Debian's python3-websockets imports only under the system interpreter (python3 on PATH may be
# another build); node finds node-ws under /usr/share/nodejs.
SYSTEM_PYTHON = "/usr/bin/python3"
NODE_PATH = "/usr/share/nodejs"
HERE = os.path.dirname(os.path.abspath(__file__))


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None, key=None):
    """A client frame; `length` overrides the announced payload length (malformed frames)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, m | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, m | 126, n)
    else:
        head = struct.pack(">BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def handshake_request(path="/", host="127.0.0.1", key=None, version="13", extra=(),
                      upgrade="websocket", connection="Upgrade", method="GET", proto="HTTP/1.1"):
    lines = ["%s %s %s" % (method, path, proto)]
    if host is not None:
        lines.append("Host: " + host)
    if upgrade is not None:
        lines.append("Upgrade: " + upgrade)
    if connection is not None:
        lines.append("Connection: " + connection)
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: " + version)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def __repr__(self):
        return "Response(%d %r %r)" % (self.status, self.headers, self.body[:80])


class WsClient:
    """One TCP connection to a ws:// listener; reads take deadlines."""

    def __init__(self, port, host="127.0.0.1", connect_timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.t_connected = time.monotonic()
        self.key = None

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, raw):
        self.sock.settimeout(5.0)
        self.sock.sendall(raw)
        self.t_last_sent = time.monotonic()

    def _fill(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout("no %s before the deadline (have %d bytes: %r)"
                               % (what, len(self.buf), bytes(self.buf[:40])))
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise FrameTimeout("no %s before the deadline (have %d bytes: %r)"
                               % (what, len(self.buf), bytes(self.buf[:40])))
        except ConnectionResetError:
            raise PeerClosed("connection reset while waiting for %s" % what)
        if not chunk:
            raise PeerClosed("EOF while waiting for %s (have %d bytes)" % (what, len(self.buf)))
        self.buf += chunk

    # ---- HTTP ----

    def read_response(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline, "HTTP response head")
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[0] != "HTTP/1.1":
            raise ProtocolViolation("bad status line %r" % lines[0])
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill(deadline, "HTTP response body")
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return Response(int(parts[1]), headers, body)

    def upgrade(self, path="/", timeout=3.0, **kw):
        """Sends a handshake and expects 101 with the right Sec-WebSocket-Accept."""
        self.key = kw.pop("key", None) or new_key()
        self.send(handshake_request(path, key=self.key, **kw))
        r = self.read_response(timeout)
        if r.status != 101:
            raise AssertionError("expected 101, got %r" % r)
        if r.headers.get("sec-websocket-accept") != accept_for(self.key):
            raise AssertionError("wrong Sec-WebSocket-Accept in %r" % r)
        if r.headers.get("upgrade", "").lower() != "websocket" or \
                "upgrade" not in r.headers.get("connection", "").lower():
            raise AssertionError("101 without Upgrade/Connection: %r" % r)
        return r

    def expect_refusal(self, status, timeout=3.0):
        """An HTTP error answer with `status`, then the daemon closes the connection."""
        r = self.read_response(timeout)
        if r.status != status:
            raise AssertionError("expected HTTP %d, got %r" % (status, r))
        if r.headers.get("connection", "").lower() != "close":
            raise AssertionError("refusal without Connection: close: %r" % r)
        self.expect_eof()
        return r

    # ---- frames ----

    def send_frame(self, opcode, payload=b"", **kw):
        self.send(frame(opcode, payload, **kw))

    def recv_frame(self, timeout=2.0):
        """(fin, opcode, payload) of the next server frame, checked against RFC 6455."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 2:
            self._fill(deadline, "frame")
        b0, b1 = self.buf[0], self.buf[1]
        if b0 & 0x70:
            raise ProtocolViolation("server frame with reserved bits 0x%02x" % b0)
        if b1 & 0x80:
            raise ProtocolViolation("server frames must not be masked")
        op, n, hl = b0 & 0x0F, b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self._fill(deadline, "frame")
            n, hl = struct.unpack_from(">H", self.buf, 2)[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self._fill(deadline, "frame")
            n, hl = struct.unpack_from(">Q", self.buf, 2)[0], 10
        if op >= 8 and (n > 125 or not b0 & 0x80):
            raise ProtocolViolation("control frame of %d bytes, fin=%d" % (n, b0 >> 7))
        if op not in OP_NAMES:
            raise ProtocolViolation("server sent opcode 0x%x" % op)
        while len(self.buf) < hl + n:
            self._fill(deadline, "frame payload")
        payload = bytes(self.buf[hl:hl + n])
        del self.buf[:hl + n]
        if op == CLOSE and len(payload) >= 2:
            code = struct.unpack(">H", payload[:2])[0]
            if code in (1005, 1006, 1015) or code < 1000:
                raise ProtocolViolation("server sent close code %d" % code)
            payload[2:].decode("utf-8")
        return bool(b0 & 0x80), op, payload

    def expect(self, opcode, timeout=2.0, skip=(PING,)):
        """The next frame of `opcode`; frames in `skip` are passed over (server pings)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == opcode:
                return payload
            if op not in skip:
                raise AssertionError("expected %s, got %s %r" % (OP_NAMES[opcode], OP_NAMES[op],
                                                                 payload[:40]))

    def expect_close(self, code, timeout=2.0, skip=(PING,)):
        """A Close with `code` (None: an empty Close), then EOF. Returns the reason."""
        payload = self.expect(CLOSE, timeout, skip)
        got = struct.unpack(">H", payload[:2])[0] if payload else None
        if got != code:
            raise AssertionError("expected Close(%s), got Close(%s) %r" % (code, got, payload[2:]))
        self.expect_eof()
        return payload[2:]

    def expect_eof(self, timeout=2.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline, "EOF")
            except PeerClosed:
                return
            except FrameTimeout:
                raise AssertionError("the daemon did not close the connection within %.1f s"
                                     % timeout)
            if self.buf:
                raise AssertionError("bytes after the end: %r" % bytes(self.buf[:40]))

    def expect_silence(self, duration):
        try:
            f = self.recv_frame(duration)
        except FrameTimeout:
            return
        raise AssertionError("expected silence for %.1f s, got %r" % (duration, f))


def metric(text, name, **labels):
    """The value of one Prometheus sample in `text`, or None."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, _, value = line.rpartition(" ")
        if "{" in key:
            n, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            n, got = key, ""
        if n == name and got == want:
            return float(value)
    return None


def scrape(port, timeout=3.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def have_system_websockets():
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import websockets"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def have_node_ws():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        return None
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    ok = subprocess.run([node, "-e", "require('ws')"], env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode == 0
    return node if ok else None
