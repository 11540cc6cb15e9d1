# test_presence.py — drives the embedding example (ringbeat-presence) and checks what it prints.
"""The presence example prints one stdout line per event of the embedding API:

    presence service listening on ADDR (port N); Ctrl-C to stop
    online  NAME from HOST:PORT (mode M, every N ms)
    suspect NAME (missed a heartbeat)
    back    NAME
    offline NAME (said goodbye: CODE)   -- the peer sent CLOSE(code); CODE = rb_close_code_name
    offline NAME (REASON)               -- anything else; REASON = rb_close_code_name(reason)

NAME is padded to 20 columns in some lines, so the patterns allow any run of spaces.
"""

import os
import re
import signal
import subprocess
import threading
import time
import unittest

import rbtest
from rbtest import CLOSE_NORMAL, CLOSE_SHUTDOWN, CLOSE_TIMEOUT, MODE_CLIENT, PONG


def presence_path():
    path = os.environ.get("RINGBEAT_PRESENCE")
    if not path:
        build = os.environ.get("RINGBEAT_BUILD_DIR")
        if build:
            path = os.path.join(build, "tools", "ringbeat-presence")
    if not path or not os.access(path, os.X_OK):
        raise unittest.SkipTest("ringbeat-presence not found: set RINGBEAT_BUILD_DIR (or "
                                "RINGBEAT_PRESENCE) to the build (got %r)" % path)
    return path


class Presence:
    """ringbeat-presence on an ephemeral loopback port; stdout lines are collected by a thread."""

    def __init__(self, listen="127.0.0.1:0", start_timeout=10.0):
        self.proc = subprocess.Popen([presence_path(), listen], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []
        self.err = []
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines),
                                         daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.err),
                                         daemon=True)]
        for t in self.readers:
            t.start()
        m = self.wait_line(r"^presence service listening on 127\.0\.0\.1:0 \(port (\d+)\); "
                           r"Ctrl-C to stop$", start_timeout)
        if self.last_index != 0:
            raise AssertionError("the listening line is not the first stdout line:\n%s"
                                 % self.text())
        self.port = int(m.group(1))
        if not 0 < self.port < 65536:
            raise AssertionError("bad port %d" % self.port)

    def _read(self, stream, sink):
        for raw in stream:
            with self.cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()
        stream.close()

    def text(self):
        with self.cond:
            return "\n".join(self.lines) + "\n-- stderr --\n" + "\n".join(self.err[-20:])

    def wait_line(self, pattern, timeout=5.0, start=0):
        """The first stdout line from index `start` matching the regex; fails on exit or deadline."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        self.last_index = i
                        self.last_time = time.monotonic()
                        return m
                    i += 1
                if self.proc.poll() is not None and not self.readers[0].is_alive():
                    raise AssertionError("ringbeat-presence exited (rc=%s) before printing /%s/:\n%s"
                                         % (self.proc.returncode, pattern, self.text()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("ringbeat-presence did not print /%s/ within %.1f s:\n%s"
                                         % (pattern, timeout, self.text()))
                self.cond.wait(min(remaining, 0.2))

    def matching(self, pattern):
        rx = re.compile(pattern)
        with self.cond:
            return [line for line in self.lines if rx.search(line)]

    def client(self):
        return rbtest.Client(self.port)

    def terminate(self, timeout=5.0):
        """SIGTERM; must exit 0 within `timeout` with no sanitizer report. Returns stdout lines."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
            raise AssertionError("ringbeat-presence did not exit within %.1f s of SIGTERM:\n%s"
                                 % (timeout, self.text()))
        for t in self.readers:
            t.join(5.0)
        if rc != 0:
            raise AssertionError("ringbeat-presence exited with rc=%d:\n%s" % (rc, self.text()))
        if rbtest.BAD_OUTPUT.search("\n".join(self.err)):
            raise AssertionError("sanitizer or crash report on stderr:\n%s" % self.text())
        with self.cond:
            return list(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)


def online(name, port, mode="client", interval_ms=1000):
    return (r"^online\s+%s\s+from 127\.0\.0\.1:%d \(mode %s, every %d ms\)$"
            % (re.escape(name), port, mode, interval_ms))


def suspect(name):
    return r"^suspect\s+%s\s+\(missed a heartbeat\)$" % re.escape(name)


def back(name):
    return r"^back\s+%s$" % re.escape(name)


def offline(name, why):
    return r"^offline\s+%s\s+\(%s\)$" % (re.escape(name), re.escape(why))


class PresenceTest(unittest.TestCase):
    def start(self):
        p = Presence()
        self.addCleanup(p.kill)
        return p

    def client(self, p):
        c = p.client()
        self.addCleanup(c.close)
        return c

    def test_online_suspect_back_goodbye(self):
        p = self.start()
        alice = self.client(p)
        t_hello = time.monotonic()
        w = alice.handshake(MODE_CLIENT, 1000, 3000, b"alice")
        self.assertEqual((w["mode"], w["interval_ms"], w["timeout_ms"]), (MODE_CLIENT, 1000, 3000))
        local_port = alice.sock.getsockname()[1]
        p.wait_line(online("alice", local_port), 3.0)

        # Silent for one interval plus half an interval of grace: suspect, not yet gone.
        p.wait_line(suspect("alice"), 3.0)
        self.assertGreaterEqual(p.last_time - t_hello, 1.4)
        self.assertEqual(p.matching(r"^offline"), [])

        rtt = alice.roundtrip(7)
        self.assertLess(rtt, 1.0)
        p.wait_line(back("alice"), 2.0)

        alice.send(rbtest.close(CLOSE_NORMAL, b"bye"))
        p.wait_line(offline("alice", "said goodbye: normal"), 2.0)
        alice.expect_eof(2.0)

        lines = p.terminate()
        self.assertEqual(len(lines), 5, "\n".join(lines))
        self.assertRegex(lines[1], online("alice", local_port))
        self.assertRegex(lines[2], suspect("alice"))
        self.assertRegex(lines[3], back("alice"))
        self.assertRegex(lines[4], offline("alice", "said goodbye: normal"))

    def test_silent_client_goes_offline_by_timeout(self):
        p = self.start()
        bob = self.client(p)
        t_hello = time.monotonic()
        bob.handshake(MODE_CLIENT, 1000, 3000, b"bob")
        p.wait_line(online("bob", bob.sock.getsockname()[1]), 3.0)
        p.wait_line(suspect("bob"), 3.0)
        f, _ = bob.wait_close(5.0, allow=())
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        bob.expect_eof(2.0)
        p.wait_line(offline("bob", "timeout"), 2.0)
        elapsed = p.last_time - t_hello
        self.assertGreaterEqual(elapsed, 2.95)
        self.assertLess(elapsed, 4.5)
        self.assertEqual(p.matching(r"^back"), [])
        lines = p.terminate()
        self.assertEqual(len(lines), 4, "\n".join(lines))

    def test_sigterm_shows_remaining_offline(self):
        p = self.start()
        # Long intervals: nobody goes suspect while the test runs.
        carol = self.client(p)
        carol_w = carol.handshake(MODE_CLIENT, 10000, 30000, b"carol")
        p.wait_line(online("carol", carol.sock.getsockname()[1], interval_ms=10000), 3.0)
        # No HELLO: the server's defaults (server mode, every 5 s) and no name.
        anon = self.client(p)
        anon.send(rbtest.ping(5))
        anon.expect(PONG, 2.0)
        p.wait_line(online("anonymous", anon.sock.getsockname()[1], "server", 5000), 3.0)
        # Peer-chosen bytes are printed only when harmless.
        eve = self.client(p)
        eve_w = eve.handshake(MODE_CLIENT, 10000, 30000, b"eve\n x\x7f")
        p.wait_line(online("eve__x_", eve.sock.getsockname()[1], interval_ms=10000), 3.0)

        # More named clients until connections live on two rings (design.md: a connection id is
        # generation(28) | ring(12) | slot(20)), so names must be told apart across workers.
        clients = [carol, anon, eve]
        names = ["carol", "anonymous", "eve__x_"]
        rings = {(w["conn_id"] >> 20) & 0xfff for w in (carol_w, eve_w)}
        for i in range(16):
            if len(rings) >= 2 and i >= 2:
                break
            c = self.client(p)
            w = c.handshake(MODE_CLIENT, 10000, 30000, b"p%d" % i)
            rings.add((w["conn_id"] >> 20) & 0xfff)
            p.wait_line(online("p%d" % i, c.sock.getsockname()[1], interval_ms=10000), 3.0)
            clients.append(c)
            names.append("p%d" % i)
        self.assertGreaterEqual(len(rings), 2, "all connections landed on one ring")

        p.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.expect_close(CLOSE_SHUTDOWN, 5.0)
        lines = p.terminate()
        for name in names:
            self.assertEqual(len([l for l in lines if re.search(offline(name, "shutdown"), l)]),
                             1, "%s is not shown offline once:\n%s" % (name, "\n".join(lines)))
        self.assertEqual(len(lines), 1 + 2 * len(names), "\n".join(lines))


if __name__ == "__main__":
    unittest.main()
