# test_hardening.py — abusive peers get a clear CLOSE and are released; everyone else carries on.
"""Each test starts ringbeatd, connects a well-behaved "witness" client before the abuse, abuses the
daemon in one way, and then asserts three things: the abuser got the documented outcome within a
deadline, the witness kept getting its PONGs (before, during and after), and the daemon's own count
of open connections (SIGUSR1 stats line) went back to what it should be.
"""

import http.client
import random
import selectors
import signal
import socket
import struct
import threading
import time
import unittest

import rbtest
from rbtest import (CLOSE, DATA, HEADER, HELLO, MODE_CLIENT, PING, PONG, WELCOME, DaemonTestCase,
                    Frame, close, data, frame, hello, ping, pong)

# Flags every daemon here gets: periodic stats lines off, so every stats line is one we asked for.
BASE = ("--stats-interval", "0")


def stats_fields(text):
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


class SourceClient(rbtest.Client):
    """A Client whose socket is bound to a chosen local address (another 127.0.0.x)."""

    def __init__(self, port, host, source, **kw):
        self.max_frame = kw.get("max_frame", 65535)
        self.sock = socket.create_connection((host, port), timeout=5.0, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t_connected = time.monotonic()
        self.t_last_sent = self.t_connected
        self.buf = bytearray()
        self.eof = False


class Witness:
    """A client-mode connection pinging every 200 ms from its own thread, recording every PONG."""

    PERIOD = 0.2

    def __init__(self, test, d):
        self.c = test.client(d)
        self.welcome = self.c.handshake(MODE_CLIENT, 1000, 0)
        self.pongs = []  # (monotonic time of the PONG, round trip in s)
        self.error = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        test.addCleanup(self.stop)  # runs before the client's own close (cleanups are LIFO)

    def _run(self):
        token = 0
        try:
            while not self.stopping.is_set():
                token += 1
                rtt = self.c.roundtrip(token, timeout=2.0)
                self.pongs.append((time.monotonic(), rtt))
                self.stopping.wait(self.PERIOD)  # heartbeat pacing, not a wait for an event
        except Exception as e:  # reported by check(), from the test's thread
            self.error = e

    def stop(self):
        self.stopping.set()
        self.thread.join(5.0)

    def check(self, test, after, max_rtt=1.0):
        """The witness never failed, gets PONGs after `after` (waiting for them up to 3 s), and
        answers one more PING now."""
        deadline = max(after, time.monotonic()) + 3.0
        while (self.error is None and not any(p[0] > after for p in self.pongs[-3:]) and
               time.monotonic() < deadline):
            time.sleep(0.05)  # polls the witness thread's record
        self.stop()
        test.assertFalse(self.thread.is_alive(), "witness thread stuck")
        if self.error is not None:
            test.fail("witness failed during the abuse: %r" % (self.error,))
        later = [p for p in self.pongs if p[0] > after]
        test.assertTrue(later, "witness got no PONG after the abuse (%d PONGs before)" % len(self.pongs))
        worst = max(rtt for _, rtt in self.pongs)
        test.assertLess(worst, max_rtt, "witness PONG took %.3f s during the abuse" % worst)
        test.assertLess(self.c.roundtrip(0xC0FFEE), max_rtt)


class Outcome:
    """What one connection saw until the daemon closed it (filled in by collect())."""

    def __init__(self, client):
        self.client = client
        self.frames = []
        self.close = None  # the CLOSE Frame, if one came
        self.t_end = None  # when EOF or reset was seen
        self.reset = False
        self.violation = None

    @property
    def code(self):
        return self.close.close_code if self.close is not None else None

    def __repr__(self):
        return "Outcome(close=%r end=%s reset=%s frames=%r violation=%r)" % (
            self.close, self.t_end, self.reset, self.frames[-4:], self.violation)


def collect(clients, timeout):
    """Reads every client concurrently until each connection ends (EOF/reset) or the deadline
    passes; frame arrival times are exact to the poll, which a sequential read could not give."""
    out = {c: Outcome(c) for c in clients}
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    open_n = len(clients)
    try:
        while open_n and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                c = key.data
                o = out[c]
                try:
                    chunk = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk, o.reset = b"", True
                now = time.monotonic()
                c.buf += chunk
                while len(c.buf) >= HEADER.size:
                    ftype, flags, n = HEADER.unpack_from(c.buf)
                    if len(c.buf) < HEADER.size + n:
                        break
                    payload = bytes(c.buf[HEADER.size:HEADER.size + n])
                    del c.buf[:HEADER.size + n]
                    try:
                        rbtest.check_server_frame(ftype, flags, payload)
                    except rbtest.ProtocolViolation as e:
                        o.violation = o.violation or str(e)
                    f = Frame(ftype, flags, payload, now)
                    if o.close is not None:
                        o.violation = o.violation or "frame after CLOSE: %r" % f
                    elif ftype == CLOSE:
                        o.close = f
                    else:
                        o.frames.append(f)
                if not chunk:
                    o.t_end = now
                    sel.unregister(c.sock)
                    open_n -= 1
    finally:
        sel.close()
        for c in clients:
            if c.sock is not None:
                c.sock.setblocking(True)
    return out


class HardeningCase(DaemonTestCase):
    def start(self, *flags, **kw):
        self.d = self.start_daemon(*(BASE + flags), **kw)
        self.witness = Witness(self, self.d)
        return self.d

    def stats(self, timeout=3.0):
        """A fresh stats line (SIGUSR1) as a dict."""
        n = self.d.line_count()
        self.d.signal(signal.SIGUSR1)
        m = self.d.wait_line(r" info stats (.*)$", timeout, start=n)
        return stats_fields(m.group(1))

    def wait_stats(self, pred, what, timeout=5.0):
        """Asks for stats until pred(fields) holds; fails with the last line after the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                self.fail("daemon never reported %s within %.1f s; last stats: %r" % (what, timeout, s))
            time.sleep(0.1)  # pacing between stats requests

    def wait_conns(self, want, timeout=5.0):
        return self.wait_stats(lambda s: s.get("conns") == str(want), "conns=%d" % want, timeout)

    def assert_released(self, outcome, code, deadline_s, t_ref):
        """CLOSE(code), then the connection ended, no later than deadline_s after t_ref."""
        o = outcome
        self.assertIsNone(o.violation, "%r" % o)
        self.assertIsNotNone(o.close, "no CLOSE frame: %r" % o)
        self.assertEqual(o.code, code, "%r" % o)
        self.assertIsNotNone(o.t_end, "connection not closed after CLOSE(%d): %r" % (code, o))
        self.assertLessEqual(o.t_end - t_ref, deadline_s, "%r" % o)


# ---- a reference model of what the daemon must do with an arbitrary byte stream ----

MAX_FRAME = 4096
# The daemon of the random-bytes test: interval fixed at 1 s and timeouts capped at 2 s, so that
# whatever a random HELLO asks for, a stream ending mid-frame is closed within 2 s.
RANDOM_FLAGS = ("--mode", "client", "--interval", "1s", "--timeout", "2s", "--min-interval", "1s",
                "--max-interval", "1s", "--max-timeout", "2s", "--max-frame", str(MAX_FRAME))


def expected_outcome(stream):
    """What protocol v1 makes a server (configured as RANDOM_FLAGS) do with this byte stream:
    ("close", code) sent right away, ("timeout", 2) when the stream ends inside a frame (or
    after complete frames), or ("peer_close", None) when a valid CLOSE frame from the client ends it.
    """
    first = True
    i = 0
    while True:
        if len(stream) - i < 4:
            return ("timeout", 2)
        ftype, _, n = HEADER.unpack_from(stream, i)
        if ftype == HELLO:
            if not 12 <= n <= 76:
                return ("close", 3)
        elif ftype == WELCOME:
            if n != 20:
                return ("close", 3)
        elif ftype in (PING, PONG):
            if n != 8:
                return ("close", 3)
        elif ftype == DATA:
            if n > MAX_FRAME:
                return ("close", 6)
        elif ftype == CLOSE:
            if not 2 <= n <= 125:
                return ("close", 3)
        else:
            return ("close", 3)
        if len(stream) - i - 4 < n:
            return ("timeout", 2)
        p = stream[i + 4:i + 4 + n]
        i += 4 + n
        was_first, first = first, False
        if ftype == WELCOME:
            return ("close", 3)
        if ftype == HELLO:
            if not was_first:
                return ("close", 3)
            version, mode, reserved, interval_ms, timeout_ms = rbtest.HELLO_FIXED.unpack_from(p)
            if version != 1 or mode > 3 or reserved != 0:
                return ("close", 3)
            interval = 1000  # min = max = 1 s
            timeout = timeout_ms if timeout_ms else (3000 if interval_ms else 2000)
            timeout = min(timeout, 2000)
            if timeout <= interval:
                return ("close", 3)
        elif ftype == CLOSE:
            try:
                p[2:].decode("utf-8")  # Python's codec is strict RFC 3629, like the daemon's
            except UnicodeDecodeError:
                return ("close", 3)
            return ("peer_close", None)


def plausible_frames(rng, count):
    """Random frames with mostly-known types and lengths near the valid ranges: they get past the
    header check far more often than uniform bytes do, reaching the payload parsers."""
    out = b""
    for _ in range(count):
        ftype = rng.choice([HELLO, WELCOME, PING, PONG, DATA, DATA, DATA, CLOSE, 0, 7, 0xFF])
        n = rng.choice({HELLO: [11, 12, 13, 40, 76, 77], WELCOME: [19, 20, 21], PING: [7, 8, 8, 9],
                        PONG: [7, 8, 8, 9], DATA: [0, 1, 100, 4096, 4097, 65535],
                        CLOSE: [1, 2, 5, 125, 126]}.get(ftype, [0, 3]))
        if ftype == HELLO and rng.random() < 0.7:
            body = struct.pack(">BBHII", 1, rng.randrange(3), 0, rng.choice([0, 500, 1000, 1500]),
                               rng.choice([0, 900, 1000, 1500, 2500]))
            body += bytes(rng.randrange(256) for _ in range(max(0, n - 12)))
            body = body[:n]
        elif ftype == CLOSE and rng.random() < 0.6:
            body = struct.pack(">H", rng.randrange(1, 10)) + "ok\u00e9".encode()[:max(0, n - 2)]
            body += bytes(rng.randrange(256) for _ in range(n - len(body)))
        else:
            body = bytes(rng.randrange(256) for _ in range(min(n, 5000)))
        out += HEADER.pack(ftype, rng.choice([0, 0, 0x80]), n) + body
    return out


class RandomBytes(HardeningCase):
    def test_random_bytes_get_the_close_the_protocol_prescribes(self):
        d = self.start(*RANDOM_FLAGS)
        cases = []
        for seed in range(1, 13):
            rng = random.Random(seed)
            length = [1, 3, 4, 5, 17, 100, 1000, 4000, 20000][seed % 9]
            cases.append(("uniform seed=%d len=%d" % (seed, length),
                          bytes(rng.randrange(256) for _ in range(length))))
        # Uniform garbage after a good HELLO: the garbage hits an established connection.
        for seed in range(13, 19):
            rng = random.Random(seed)
            cases.append(("hello+uniform seed=%d" % seed,
                          hello(MODE_CLIENT, 1000, 2000) + bytes(rng.randrange(256) for _ in range(64))))
        for seed in range(100, 140):
            rng = random.Random(seed)
            cases.append(("plausible seed=%d" % seed, plausible_frames(rng, rng.randrange(1, 6))))
        kinds = {}
        clients = []
        for name, stream in cases:
            c = self.client(d)
            try:
                c.send(stream)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may refuse the stream before all of it is sent
            clients.append((name, stream, c, time.monotonic()))
        t_sent = time.monotonic()
        outcomes = collect([c for _, _, c, _ in clients], timeout=5.0)
        for name, stream, c, t0 in clients:
            kind, code = expected_outcome(stream)
            kinds[kind] = kinds.get(kind, 0) + 1
            o = outcomes[c]
            with self.subTest(case=name, expected=(kind, code)):
                self.assertIsNone(o.violation, "%r" % o)
                self.assertIsNotNone(o.t_end, "daemon did not close within 5 s: %r" % o)
                if kind == "peer_close":
                    self.assertIsNone(o.close, "daemon answered the client's CLOSE: %r" % o)
                else:
                    self.assertEqual(o.code, code, "%r" % o)
                if kind == "close":
                    self.assertLess(o.t_end - t0, 1.0, "refusal was not immediate: %r" % o)
                    # Nothing but replies to the complete frames before the error may come.
                    self.assertTrue(all(f.type in (WELCOME, PONG, DATA, PING) for f in o.frames))
        # The seeds must exercise the refusals the brief is about, not only timeouts.
        self.assertGreaterEqual(kinds.get("close", 0), 30, kinds)
        self.assertGreaterEqual(kinds.get("timeout", 0), 3, kinds)
        s = self.wait_conns(1)
        self.assertEqual(int(s["accepted"]), len(cases) + 1)
        self.witness.check(self, after=t_sent + 2.0)


# ---- truncated frames: a partial frame is not a sign of life ----

def full_frames():
    return {
        "HELLO": hello(MODE_CLIENT, 1000, 2000, b"idid"),
        "WELCOME": rbtest.welcome_frame(),
        "PING": ping(0x1122334455667788),
        "PONG": pong(0x1122334455667788),
        "DATA": data(b"hello"),
        "CLOSE": close(1, b"bye"),
    }


class Truncated(HardeningCase):
    def test_every_prefix_of_every_frame_type_then_silence_times_out(self):
        """Every proper prefix of every frame type, as the first bytes of a connection and after a
        HELLO, then silence: the daemon must wait for the timeout (measured from accept or from
        the HELLO, the last complete frame) and close with CLOSE(2), not earlier, not much later."""
        d = self.start("--mode", "client", "--interval", "1s", "--timeout", "2s")
        cases = []
        for name, raw in full_frames().items():
            for cut in range(1, len(raw)):
                c = self.client(d)
                c.send(raw[:cut])
                # The connection was accepted after connect() returned: t_connected is a lower
                # bound of the daemon's reference time.
                cases.append(("first %s[:%d]" % (name, cut), c, c.t_connected))
        for name, raw in full_frames().items():
            for cut in range(1, len(raw)):
                c = self.client(d)
                t_hello = time.monotonic()
                c.send(hello(MODE_CLIENT, 1000, 2000))
                c.expect_welcome()
                c.send(raw[:cut])
                cases.append(("after HELLO %s[:%d]" % (name, cut), c, t_hello))
        self.assertEqual(len(cases), 2 * sum(len(raw) - 1 for raw in full_frames().values()))
        t_last = time.monotonic()
        outcomes = collect([c for _, c, _ in cases], timeout=4.0)
        for name, c, t_ref in cases:
            o = outcomes[c]
            with self.subTest(case=name):
                self.assert_released(o, rbtest.CLOSE_TIMEOUT, 2.6, t_ref)
                self.assertGreaterEqual(o.close.t - t_ref, 1.99, "closed before the timeout: %r" % o)
                self.assertEqual([f for f in o.frames if f.type != WELCOME], [], "%r" % o)
        s = self.wait_conns(1)
        self.assertGreaterEqual(int(s["closed_timeout"]), len(cases))
        self.witness.check(self, after=t_last + 2.0)


class BadFrames(HardeningCase):
    def setUp(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "2s",
                   "--metrics", "127.0.0.1:0")

    def test_oversized_length_refused_from_header_alone(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 2000)
        t0 = time.monotonic()
        c.send(HEADER.pack(DATA, 0, MAX_FRAME + 1))  # the payload never comes
        c.expect_close(rbtest.CLOSE_TOO_BIG, timeout=1.0)
        self.assertLess(time.monotonic() - t0, 1.0)
        c2 = self.client(self.d)
        c2.send(HEADER.pack(DATA, 0, 0xFFFF))  # as the very first bytes
        c2.expect_close(rbtest.CLOSE_TOO_BIG, timeout=1.0)
        s = self.wait_conns(1)
        self.assertEqual(s["closed_too_big"], "2")
        self.witness.check(self, after=time.monotonic())

    def test_zero_length_ping_is_a_protocol_error(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 2000)
        c.send(frame(PING, b""))
        c.expect_close(rbtest.CLOSE_PROTOCOL, timeout=1.0)
        c2 = self.client(self.d)
        c2.send(frame(PING, b""))  # as the first frame, without HELLO
        c2.expect_close(rbtest.CLOSE_PROTOCOL, timeout=1.0)
        s = self.wait_conns(1)
        self.assertEqual(s["closed_protocol"], "2")
        self.witness.check(self, after=time.monotonic())

    def metric(self, name):
        m = self.d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0)
        host, _, port = m.group(1).rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5.0)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        self.fail("no %s in /metrics" % name)

    def test_pong_with_unknown_token_is_not_an_error_and_counts_as_life(self):
        """Choice: PONG tokens are checked only to measure RTT. A PONG the server never asked for
        (late, duplicated, or from a client that pings itself) is counted in
        ringbeat_pong_unmatched_total, refreshes liveness like any complete frame, and never
        closes the connection."""
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 2000)
        before = self.metric("ringbeat_pong_unmatched_total")
        # Only unmatched PONGs for 1.5 x the timeout: if they did not count as life, the
        # connection would be closed with CLOSE(2) meanwhile.
        t_end = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < t_end:
            c.send(pong(0xDEAD0000 + n))
            n += 1
            c.expect_silence(0.4)  # no CLOSE, no reply to a PONG; also paces the PONGs
        c.roundtrip(78)
        self.assertGreaterEqual(self.metric("ringbeat_pong_unmatched_total") - before, n)
        s = self.stats()
        self.assertEqual(s["conns"], "2")
        self.assertEqual(s["closed_protocol"], "0")
        self.assertEqual(s["closed_timeout"], "0")
        self.witness.check(self, after=time.monotonic())

    def test_second_hello_is_a_protocol_error(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 2000)
        c.roundtrip(1)
        c.send(hello(MODE_CLIENT, 1000, 2000))
        c.expect_close(rbtest.CLOSE_PROTOCOL, timeout=1.0)
        c2 = self.client(self.d)  # HELLO after a PING: the PING was the first frame
        c2.roundtrip(2)
        c2.send(hello(MODE_CLIENT, 1000, 2000))
        c2.expect_close(rbtest.CLOSE_PROTOCOL, timeout=1.0)
        s = self.wait_conns(1)
        self.assertEqual(s["closed_protocol"], "2")
        self.witness.check(self, after=time.monotonic())


class HelloClamps(HardeningCase):
    def setUp(self):
        self.start("--mode", "client", "--interval", "2s", "--timeout", "6s", "--min-interval",
                   "1s", "--max-interval", "5s", "--max-timeout", "20s")

    def test_interval_is_clamped_into_min_max(self):
        for asked, want in (((100, 0), (1000, 3000)), ((1, 2500), (1000, 2500)),
                            ((60000, 0), (5000, 15000)), ((60000, 12000), (5000, 12000)),
                            ((3000, 999999), (3000, 20000)), ((0, 0), (2000, 6000))):
            with self.subTest(asked=asked):
                c = self.client(self.d)
                w = c.handshake(MODE_CLIENT, *asked)
                self.assertEqual((w["interval_ms"], w["timeout_ms"]), want)
                c.roundtrip(5)
                c.close()
        self.wait_conns(1)
        self.witness.check(self, after=time.monotonic())

    def test_timeout_not_above_effective_interval_is_refused(self):
        for asked in ((200, 800), (200, 1000), (3000, 3000), (4000, 2000), (60000, 5000)):
            with self.subTest(asked=asked):
                c = self.client(self.d)
                c.send(hello(MODE_CLIENT, *asked))
                c.expect_close(rbtest.CLOSE_PROTOCOL, timeout=1.0)
                c.close()
        s = self.wait_conns(1)
        self.assertEqual(s["closed_protocol"], "5")
        self.witness.check(self, after=time.monotonic())


class SlowLoris(HardeningCase):
    def test_one_byte_every_300ms_is_closed_at_timeout_after_last_complete_frame(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "2s")
        c = self.client(self.d)
        t_hello = time.monotonic()
        c.send(hello(MODE_CLIENT, 1000, 2000))
        c.expect_welcome()
        t_welcome = time.monotonic()
        trickle = HEADER.pack(DATA, 0, 4000) + b"x" * 4000  # never completes in 2 s
        sel = selectors.DefaultSelector()
        sel.register(c.sock, selectors.EVENT_READ)
        sent = 0
        try:
            while time.monotonic() - t_hello < 5.0:
                try:
                    c.sock.send(trickle[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                if sel.select(0.3):  # the daemon spoke (or closed): stop trickling
                    break
        finally:
            sel.close()
        self.assertGreaterEqual(sent, 6, "trickled only %d bytes" % sent)
        f = c.expect(CLOSE, timeout=1.0)
        self.assertEqual(f.close_code, rbtest.CLOSE_TIMEOUT, "%r" % f)
        # The daemon received the HELLO between t_hello and t_welcome.
        self.assertGreaterEqual(f.t - t_hello, 2.0, "closed %.3f s after HELLO" % (f.t - t_hello))
        self.assertLessEqual(f.t - t_welcome, 2.6, "closed %.3f s after WELCOME" % (f.t - t_welcome))
        c.expect_eof(1.0)
        s = self.wait_conns(1)
        self.assertEqual(s["closed_timeout"], "1")
        self.witness.check(self, after=f.t)


class SlowReader(HardeningCase):
    def test_peer_that_never_reads_is_released_with_bounded_memory(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "5s",
                   "--max-pending-out", "64k")
        pid = self.d.proc.pid
        rss0 = rss_kib(pid)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.connect((self.d.host, self.d.port))
        sock.setblocking(False)
        payload = data(b"r" * 1000)  # echoed: the echo piles up on the daemon's side
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_WRITE)
        t0 = time.monotonic()
        rss_max = rss0
        sent_frames = 0
        ended = None
        off = 0
        last_rss = 0.0
        try:
            while sent_frames < 20000 and time.monotonic() - t0 < 15.0:
                now = time.monotonic()
                if now - last_rss > 0.1:
                    rss_max = max(rss_max, rss_kib(pid))
                    last_rss = now
                try:
                    off += sock.send(payload[off:])
                except BlockingIOError:
                    sel.select(0.1)
                    continue
                except (BrokenPipeError, ConnectionResetError) as e:
                    ended = e
                    break
                if off == len(payload):
                    off = 0
                    sent_frames += 1
        finally:
            sel.close()
        t_end = time.monotonic()
        rss_max = max(rss_max, rss_kib(pid))
        self.assertIsNotNone(ended, "daemon kept a non-reading peer for %.1f s (%d frames sent)"
                             % (t_end - t0, sent_frames))
        self.assertLess(sent_frames, 20000)
        self.assertLess((rss_max - rss0) / 1024.0, 20.0, "daemon RSS grew from %d to %d KiB"
                        % (rss0, rss_max))
        s = self.wait_conns(1)
        self.assertEqual(s["closed_slow_reader"], "1")
        self.witness.check(self, after=t_end)


class PeerReset(HardeningCase):
    def test_reset_in_the_middle_of_a_frame(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "3s")
        big = data(b"b" * 3000)  # held in a buffer of its own while split
        cuts = [(None, ping(5)[:2]), (None, ping(5)[:4]), (None, ping(5)[:6]),
                (None, hello(MODE_CLIENT)[:9]), (None, big[:1500]),
                (hello(MODE_CLIENT, 1000, 3000), ping(6)[:6]),
                (hello(MODE_CLIENT, 1000, 3000), big[:7]), (hello(MODE_CLIENT, 1000, 3000), big[:2999])]
        clients = []
        for first, part in cuts:
            c = self.client(self.d)
            if first is not None:
                c.send(first)
                c.expect_welcome()
            c.send(part)
            clients.append(c)
        self.wait_stats(lambda s: int(s["conns"]) == 1 + len(cuts), "all half-frame peers open")
        time.sleep(0.1)  # lets the daemon read the half frames before the resets (not an event)
        for c in clients:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        t_reset = time.monotonic()
        s = self.wait_conns(1, timeout=2.0)
        self.assertLess(time.monotonic() - t_reset, 2.5, "resets noticed only at the timeout")
        self.assertEqual(s["closed_reset"], str(len(cuts)), "%r" % s)
        self.assertEqual(s["closed_timeout"], "0")
        self.witness.check(self, after=time.monotonic())


class NeverSpeak(HardeningCase):
    def test_connections_that_never_send_a_frame_are_closed_at_the_timeout(self):
        # Server mode: the daemon may PING them first; they do not answer either.
        self.start("--mode", "server", "--interval", "1s", "--timeout", "2s")
        clients = [self.client(self.d) for _ in range(300)]
        t_last = time.monotonic()
        self.wait_conns(301)
        outcomes = collect(clients, timeout=4.0)
        for i, c in enumerate(clients):
            o = outcomes[c]
            with self.subTest(conn=i):
                self.assert_released(o, rbtest.CLOSE_TIMEOUT, 2.6, c.t_connected)
                self.assertGreaterEqual(o.close.t - c.t_connected, 1.99, "%r" % o)
                self.assertTrue(all(f.type == PING for f in o.frames), "%r" % o)
        s = self.wait_conns(1)
        self.assertEqual(s["closed_timeout"], "300")
        self.witness.check(self, after=t_last + 2.0)


class MaxConns(HardeningCase):
    def test_over_max_conns_gets_close4_and_existing_are_untouched(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "3s", "--max-conns", "5")
        existing = [self.client(self.d) for _ in range(4)]  # with the witness: 5
        for c in existing:
            c.handshake(MODE_CLIENT, 1000, 3000)
        extra = [self.client(self.d) for _ in range(3)]
        for c in extra:
            c.expect_close(rbtest.CLOSE_FULL, timeout=2.0)
        for i, c in enumerate(existing):
            c.roundtrip(100 + i)
        s = self.wait_conns(5)
        self.assertEqual(s["rejected_full"], "3")
        # A slot freed is a slot usable again.
        existing[0].send(close(rbtest.CLOSE_NORMAL))
        existing[0].expect_eof(2.0)
        self.wait_conns(4)
        again = self.client(self.d)
        again.handshake(MODE_CLIENT, 1000, 3000)
        again.roundtrip(9)
        self.witness.check(self, after=time.monotonic())


def daemon_help():
    try:
        rc, out, err = rbtest.run_tool([rbtest.daemon_path(), "--help"])
    except unittest.SkipTest:
        return ""
    return out + err


HELP = daemon_help()


@unittest.skipUnless("--max-conns-per-ip" in HELP, "ringbeatd has no --max-conns-per-ip")
class MaxConnsPerIp(HardeningCase):
    def src_client(self, source):
        c = SourceClient(self.d.port, self.d.host, source)
        self.addCleanup(c.close)
        return c

    def test_per_ip_limit_refuses_only_that_address(self):
        self.start("--mode", "client", "--interval", "1s", "--timeout", "3s",
                   "--max-conns-per-ip", "3")
        mine = [self.src_client("127.0.0.2") for _ in range(3)]
        for c in mine:
            c.handshake(MODE_CLIENT, 1000, 3000)
        over = self.src_client("127.0.0.2")
        over.expect_close(rbtest.CLOSE_FULL, timeout=2.0)
        other = self.src_client("127.0.0.3")
        other.handshake(MODE_CLIENT, 1000, 3000)
        other.roundtrip(3)
        for i, c in enumerate(mine):
            c.roundtrip(20 + i)
        s = self.wait_conns(5)  # witness (127.0.0.1) + 3 + 1
        self.assertEqual(s["rejected_per_ip"], "1")
        self.assertEqual(s["rejected_full"], "0")
        # Releasing one connection of 127.0.0.2 makes room for another from it.
        mine[0].send(close(rbtest.CLOSE_NORMAL))
        mine[0].expect_eof(2.0)
        self.wait_conns(4)
        again = self.src_client("127.0.0.2")
        again.handshake(MODE_CLIENT, 1000, 3000)
        self.witness.check(self, after=time.monotonic())


@unittest.skipUnless("--accept-rate" in HELP, "ringbeatd has no --accept-rate")
class AcceptRate(HardeningCase):
    def test_accept_rate_spreads_a_burst_over_time(self):
        """200 connections at once with --accept-rate 100 (a 100 ms burst allowance): all of them
        get their WELCOME (arrivals wait in the listen backlog, nobody is refused), but it takes
        at least ~1.9 s; 1.5 s leaves room for the burst allowance and timer rounding."""
        self.start("--mode", "client", "--interval", "1s", "--timeout", "10s", "--accept-rate", "100")
        t0 = time.monotonic()
        clients = []
        for _ in range(200):
            c = self.client(self.d)
            c.send(hello(MODE_CLIENT, 1000, 10000))
            clients.append(c)
        t_connected = time.monotonic()
        welcomed = {}
        deadline = t0 + 10.0
        sel = selectors.DefaultSelector()
        for c in clients:
            sel.register(c.sock, selectors.EVENT_READ, c)
        try:
            while len(welcomed) < len(clients) and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    c = key.data
                    f = c.recv_frame(1.0)
                    self.assertEqual(f.type, WELCOME, "%r" % f)
                    welcomed[c] = f.t
                    sel.unregister(c.sock)
        finally:
            sel.close()
        self.assertEqual(len(welcomed), 200, "only %d of 200 got WELCOME in 10 s" % len(welcomed))
        span = max(welcomed.values()) - t0
        self.assertGreaterEqual(span, 1.5, "200 accepts took %.2f s at --accept-rate 100 (connects "
                                "done after %.2f s)" % (span, t_connected - t0))
        self.assertLess(span, 6.0)
        s = self.stats()
        self.assertEqual(s["conns"], "201")
        self.assertEqual(s["rejected_full"], "0")
        self.witness.check(self, after=time.monotonic())


if __name__ == "__main__":
    unittest.main()
