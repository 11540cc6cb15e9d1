# rbtls.py — TLS helpers for integration tests: certificates, a record-level TLS stream, v1 over it.
"""TLS pieces shared by the TLS tests (python3 stdlib `ssl`, which the pyenv python3 has).

make_cert() writes a self-signed P-256 certificate with the `openssl` CLI. TlsStream runs
Python's TLS client (ssl.SSLObject on memory BIOs) over a plain socket, so a test decides exactly
which bytes go on the wire: a record split byte by byte, several frames in one record, a
flipped byte, a bare header. It knows no protocol: a WebSocket-over-TLS (wss://) client is
TlsStream plus the WebSocket framing, the way TlsClient below is TlsStream plus protocol v1.
TlsDaemonTestCase starts ringbeatd with a certificate and a tls:// listener.
"""

import os
import socket
import ssl
import struct
import subprocess
import tempfile
import time

from rbtest import Client, DaemonTestCase, FrameTimeout, PeerClosed, which

ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
          22: "record_overflow", 40: "handshake_failure", 50: "decode_error",
          70: "protocol_version", 80: "internal_error"}


def make_cert(directory, cn="ringbeat-test", name="cert"):
    """(cert_path, key_path): a self-signed P-256 certificate for `cn`, valid for two days."""
    openssl = which("openssl")
    if not openssl:
        raise AssertionError("the openssl command is needed (Debian package openssl)")
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + ".key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=" + cn], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    return cert, key


def client_context(max_version=None, verify_cert=None):
    """A client SSLContext: no certificate check unless verify_cert (a CA file) is given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify_cert:
        ctx.load_verify_locations(verify_cert)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def records_in(raw):
    """Splits raw TLS bytes into (content_type, length) of each whole record."""
    out, i = [], 0
    while i + 5 <= len(raw):
        n = struct.unpack_from(">H", raw, i + 3)[0]
        if i + 5 + n > len(raw):
            break
        out.append((raw[i], n))
        i += 5 + n
    return out


class TlsStream:
    """A TLS client on a plain socket; every read and write takes a deadline.

    Plaintext: write() seals one record per call (up to 16 KiB); read() returns what arrived.
    Ciphertext: take() gives what write() produced without sending it, send_raw() sends bytes as
    they are. raw_in keeps every byte received (count records with records_in())."""

    def __init__(self, port, host="127.0.0.1", ctx=None, session=None, timeout=5.0,
                 handshake=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ctx = ctx or client_context()
        self.obj = self.ctx.wrap_bio(self.inc, self.outg, server_hostname="localhost",
                                     session=session)
        self.raw_in = bytearray()
        self.eof = False
        if handshake:
            try:
                self.handshake(timeout)
            except BaseException:
                self.close()
                raise

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send_raw(self, raw):
        self.sock.settimeout(5.0)
        self.sock.sendall(raw)

    def take(self):
        return self.outg.read()

    def flush(self):
        raw = self.take()
        if raw:
            self.send_raw(raw)

    def _pull(self, deadline):
        """Reads once from the socket into the TLS object; False at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout("nothing from the server before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise FrameTimeout("nothing from the server before the deadline")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            self.inc.write_eof()
            return False
        self.raw_in += chunk
        self.inc.write(chunk)
        return True

    def handshake(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                if not self._pull(deadline):
                    raise PeerClosed("server closed during the handshake")
            except ssl.SSLError:
                self.flush()  # our alert goes out, as a real client's would
                raise

    def write(self, plaintext):
        """Seals plaintext (one record if it fits 16 KiB) and sends it."""
        self.obj.write(plaintext)
        self.flush()

    def read(self, timeout=2.0):
        """Plaintext that arrived (at least one byte); PeerClosed at close_notify or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.obj.read(65536)
                self.flush()  # a KeyUpdate answer, for instance
                if data:
                    return data
                raise PeerClosed("close_notify from the server")
            except ssl.SSLWantReadError:
                self.flush()
                if not self._pull(deadline):
                    raise PeerClosed("EOF from the server without close_notify")

    def expect_alert(self, timeout=2.0):
        """Reads until the server's fatal alert; returns its name (ssl's reason string)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.read(65536)
            except ssl.SSLWantReadError:
                if not self._pull(deadline):
                    raise AssertionError("EOF without an alert; bytes: %r" % bytes(self.raw_in[-16:]))
            except ssl.SSLError as e:
                return e.reason or str(e)

    def expect_eof(self, timeout=2.0):
        """The server closes the TCP connection (anything after the last record is an error)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            n = len(self.raw_in)
            if not self._pull(deadline) or len(self.raw_in) == n:
                break
        return True


class TlsClient(Client):
    """rbtest.Client (protocol v1, every frame validated) over a TlsStream."""

    def __init__(self, port, host="127.0.0.1", ctx=None, session=None, max_frame=65535):
        self.max_frame = max_frame
        self.tls = TlsStream(port, host, ctx, session)
        self.sock = self.tls.sock
        self.t_connected = time.monotonic()
        self.t_last_sent = self.t_connected
        self.buf = bytearray()
        self.eof = False

    def close(self):
        self.tls.close()
        self.sock = None

    def send(self, raw):
        """One record with all of raw (several frames go in one record)."""
        self.tls.write(raw)
        self.t_last_sent = time.monotonic()

    def send_bytewise(self, raw, pause=0.005):
        """One record with raw, its ciphertext sent one byte per send()."""
        self.tls.obj.write(raw)
        rec = self.tls.take()
        for i in range(len(rec)):
            self.tls.send_raw(rec[i:i + 1])
            if i + 1 < len(rec):
                time.sleep(pause)
        self.t_last_sent = time.monotonic()

    def _fill(self, deadline):
        try:
            self.buf += self.tls.read(max(0.001, deadline - time.monotonic()))
        except PeerClosed:
            self.eof = True
            raise

    def expect_eof(self, timeout=2.0):
        """The server ends with close_notify (or just EOF) and no further frame."""
        if self.buf:
            raise AssertionError("bytes after the last frame: %r" % bytes(self.buf[:32]))
        try:
            extra = self.tls.read(timeout)
        except PeerClosed:
            return
        raise AssertionError("data after the connection should have closed: %r" % extra[:32])

    @property
    def session(self):
        return self.tls.obj.session

    @property
    def session_reused(self):
        return self.tls.obj.session_reused


class TlsDaemonTestCase(DaemonTestCase):
    """Each test gets a temporary directory with a certificate (self.cert, self.key)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="rb-tls-")
        self.addCleanup(self.tmp.cleanup)
        self.cert, self.key = make_cert(self.tmp.name)

    def start_tls_daemon(self, *flags, plain=False, metrics=True, **kw):
        """ringbeatd with a tls:// listener (and a plain one after it when `plain`)."""
        args = ["--tls-cert", self.cert, "--tls-key", self.key]
        if plain:
            args += ["--listen", "127.0.0.1:0"]
        if metrics:
            args += ["--metrics", "127.0.0.1:0"]
        d = self.start_daemon(*(args + list(flags)), listen="tls://127.0.0.1:0", **kw)
        if plain:
            m = d.wait_line(r" info listening addr=127\.0\.0\.1:(\d+) protocol=v1 transport=tcp")
            d.plain_port = int(m.group(1))
        return d

    def tls_client(self, d, **kw):
        c = TlsClient(d.port, **kw)
        self.addCleanup(c.close)
        return c

    def stream(self, d, **kw):
        s = TlsStream(d.port, **kw)
        self.addCleanup(s.close)
        return s

    def wait_metric(self, d, name, want, timeout=5.0):
        """Waits until /metrics has name >= want (counters only grow); returns the value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.metrics(d).get(name, 0)
            if v >= want or time.monotonic() > deadline:
                self.assertGreaterEqual(v, want, "%s stayed at %s" % (name, v))
                return v
            time.sleep(0.05)  # between scrapes; bounded by the deadline
