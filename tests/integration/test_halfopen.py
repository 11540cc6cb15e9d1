# test_halfopen.py — a peer that vanishes without FIN or RST is released at its heartbeat timeout.
"""The client runs in a network namespace of its own, joined to the root namespace by a veth pair
(169.254.77.1/30 on the host side, 169.254.77.2/30 inside; link-local, never routed off this
machine). After a few healthy heartbeats the namespace's side goes dark (an iptables DROP of all
its output, or its link set down) while the client process stays alive and keeps its socket open:
nothing, not even a FIN or a RST, reaches ringbeatd again. ringbeatd must release the connection
at its heartbeat timeout, counted as closed_timeout, within its tick of the deadline.

Needs root and `ip netns`; skipped with the reason otherwise.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time
import unittest

import rbtest
from rbtest import DaemonTestCase

HOST_ADDR = "169.254.77.1"
NS_ADDR = "169.254.77.2"
PREFIX = 30
INTERVAL_S = 1.0
TIMEOUT_S = 3.0

# The client inside the namespace: HELLO (mode client, 1 s / 3 s), then a PING every second for as
# long as its stdin stays open, whatever happens to the network. One line per event on stdout,
# with CLOCK_MONOTONIC times, which the test process shares.
CLIENT = r"""
import select, socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
def out(*a):
    sys.stdout.write(" ".join(str(x) for x in a) + "\n"); sys.stdout.flush()
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t_hello = time.monotonic()
s.sendall(struct.pack(">BBHBBHII", 1, 0, 12, 1, 1, 0, 1000, 3000))
s.setblocking(False)
buf = b""
token = 0
sent = {}
next_ping = None
ended = False
while True:
    now = time.monotonic()
    if next_ping is not None and now >= next_ping and not ended:
        token += 1
        sent[token] = now
        try:
            s.send(struct.pack(">BBHQ", 3, 0, 8, token))
            out("ping", token, now)
        except OSError as e:
            out("error", now, repr(e)); ended = True
        next_ping += 1.0
    wait = 1.0 if next_ping is None else max(0.0, next_ping - time.monotonic())
    r, _, _ = select.select([sys.stdin] + ([] if ended else [s]), [], [], wait)
    if sys.stdin in r and not sys.stdin.readline():
        break
    if s in r:
        try:
            chunk = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            out("error", time.monotonic(), repr(e)); ended = True; continue
        if not chunk:
            out("eof", time.monotonic()); ended = True; continue
        buf += chunk
        while len(buf) >= 4:
            ftype, _, n = struct.unpack_from(">BBH", buf)
            if len(buf) < 4 + n:
                break
            p, buf = buf[4:4 + n], buf[4 + n:]
            t = time.monotonic()
            if ftype == 2:
                out("welcome", t_hello, t, *struct.unpack(">BBHIIQ", p)[3:5])
                next_ping = t + 1.0
            elif ftype == 4:
                tok = struct.unpack(">Q", p)[0]
                out("pong", tok, sent.get(tok, 0), t)
            elif ftype == 6:
                out("close", t, struct.unpack(">H", p[:2])[0])
            else:
                out("frame", t, ftype)
s.close()
"""


def run(*args, check=True):
    p = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (rc=%d): %s" % (" ".join(args), p.returncode,
                                                       p.stderr.decode(errors="replace").strip()))
    return p


def stats_fields(text):
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


class NsClient:
    """The client process inside the namespace; its stdout events are collected by a thread."""

    def __init__(self, ns, host, port):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, host,
                                      str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            ev = raw.decode().split()
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError("client exited (rc=%s) before %s; stderr: %s; events: %r"
                                         % (self.proc.returncode, what,
                                            self.proc.stderr.read().decode(errors="replace"),
                                            self.events))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("client: no %s within %.1f s; events: %r"
                                         % (what, timeout, self.events))
                self.cond.wait(min(remaining, 0.2))

    def snapshot(self):
        with self.cond:
            return list(self.events)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the client's signal to close and exit
            except OSError:
                pass
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self.reader.join(5.0)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class HalfOpen(DaemonTestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to create a network namespace and a veth pair")
        if not rbtest.which("ip"):
            raise unittest.SkipTest("iproute2 (`ip`) is not installed")
        rbtest.daemon_path()  # skips when the daemon is not built
        pid = os.getpid()
        self.ns = "rbtest-%d" % pid
        self.host_if = "rbh%d" % pid  # interface names must stay under 16 bytes
        self.ns_if = "rbn%d" % pid
        try:
            run("ip", "netns", "add", self.ns)
        except (RuntimeError, OSError) as e:
            raise unittest.SkipTest("`ip netns add` failed: %s" % e)
        self.addCleanup(self._remove_netns)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        run("ip", "link", "set", self.ns_if, "netns", self.ns)
        run("ip", "addr", "add", "%s/%d" % (HOST_ADDR, PREFIX), "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        run("ip", "-n", self.ns, "addr", "add", "%s/%d" % (NS_ADDR, PREFIX), "dev", self.ns_if)
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "-n", self.ns, "link", "set", self.ns_if, "up")
        self.d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "3s",
                                   "--stats-interval", "0", listen="%s:0" % HOST_ADDR)

    def _remove_netns(self):
        # Deleting the namespace destroys its end of the veth pair, which destroys the other end;
        # the explicit link delete covers a namespace that was created but never got its end.
        run("ip", "netns", "del", self.ns, check=False)
        run("ip", "link", "del", self.host_if, check=False)

    def stats(self):
        n = self.d.line_count()
        self.d.signal(signal.SIGUSR1)
        return stats_fields(self.d.wait_line(r" info stats (.*)$", 3.0, start=n).group(1))

    def check_vanish(self, cut, restore, peer_hears=False):
        """peer_hears: only the peer's output is cut, so the CLOSE(2) still reaches it."""
        client = NsClient(self.ns, HOST_ADDR, self.d.port)
        self.addCleanup(client.stop)
        w = client.wait(lambda ev: ev[0] == "welcome", 10.0, "WELCOME")
        self.assertEqual((int(w[3]), int(w[4])), (1000, 3000), "WELCOME values: %r" % w)
        # Two healthy heartbeats, then the peer vanishes right after a PONG: the next PING is
        # ~1 s away, so the PING just answered is the last frame the daemon receives.
        client.wait(lambda ev: ev[0] == "pong" and int(ev[1]) >= 2, 5.0, "second PONG")
        cut()
        t_cut = time.monotonic()
        s = self.stats()
        self.assertEqual(s["conns"], "1", "%r" % s)

        pongs = [ev for ev in client.snapshot() if ev[0] == "pong"]
        last = pongs[-1]
        t_sent, t_answered = float(last[2]), float(last[3])
        self.assertLess(t_cut - t_answered, 0.5, "the cut came too late after the last PONG")

        # Poll the daemon's count until the connection is released; a stats line seen at t_seen
        # says the release happened before t_seen, the previous poll says it happened after
        # t_prev (when that poll's signal was sent).
        t_prev = time.monotonic()
        seen = None
        deadline = t_answered + TIMEOUT_S + 2.0
        while time.monotonic() < deadline:
            t_sig = time.monotonic()
            s = self.stats()
            if s["conns"] == "0":
                seen = (t_prev, time.monotonic(), s)
                break
            t_prev = t_sig
            time.sleep(0.03)  # pacing of the polls (the measurement's resolution)
        self.assertIsNotNone(seen, "daemon kept the vanished peer for more than %.1f s after its "
                             "last frame; stats: %r" % (TIMEOUT_S + 2.0, s))
        t_before, t_seen, s = seen
        self.assertEqual(s["closed_timeout"], "1", "released, but not as a heartbeat timeout: %r"
                         % s)
        self.assertEqual(int(s["closed_reset"]) + int(s["closed_eof"]), 0, "%r" % s)
        # The last frame arrived between t_sent and t_answered; the release must fall in
        # [last frame + 3.0 s, last frame + 3.6 s].
        self.assertGreaterEqual(t_seen - t_sent, TIMEOUT_S,
                                "released %.3f s after the last PING was sent" % (t_seen - t_sent))
        self.assertLessEqual(t_before - t_answered, TIMEOUT_S + 0.6,
                             "released more than %.3f s after the last PONG"
                             % (t_before - t_answered))

        self.assertIsNone(client.proc.poll(), "client process exited: %r" % client.snapshot())
        if peer_hears:
            # The daemon's CLOSE(2) still gets through, at the release.
            ev = client.wait(lambda ev: ev[0] == "close", 2.0, "CLOSE(2) for a mute peer")
            self.assertEqual(int(ev[2]), rbtest.CLOSE_TIMEOUT, "%r" % ev)
            self.assertGreaterEqual(float(ev[1]) - t_sent, TIMEOUT_S)
            self.assertLessEqual(float(ev[1]) - t_answered, TIMEOUT_S + 0.6)
        else:
            # It really was half-open: the client, still running, heard nothing of the release.
            after = [ev for ev in client.snapshot() if ev[0] in ("eof", "error", "close")]
            self.assertEqual(after, [], "the peer saw the connection end; it was not half-open")
        later_pongs = [ev for ev in client.snapshot() if ev[0] == "pong" and ev != last and
                       float(ev[3]) > t_cut]
        self.assertEqual(later_pongs, [], "PONGs crossed the cut")

        # When the network comes back, the peer learns the connection is gone (CLOSE(2) with FIN
        # retransmitted by the daemon's kernel, or a RST for its next PING).
        restore()
        ev = client.wait(lambda ev: ev[0] in ("eof", "error", "close"), 20.0,
                         "end of the connection once the network is back")
        if ev[0] == "close":
            self.assertEqual(int(ev[2]), rbtest.CLOSE_TIMEOUT)
        self.assertEqual(self.stats()["conns"], "0")

    def iptables(self, *args):
        return run("ip", "netns", "exec", self.ns, "iptables", *args)

    def need_iptables(self):
        if not rbtest.which("iptables"):
            raise unittest.SkipTest("iptables is not installed (test_peer_link_down covers the "
                                    "vanishing peer with `ip link` alone)")
        try:
            self.iptables("-L", "OUTPUT", "-n")
        except RuntimeError as e:
            raise unittest.SkipTest("iptables does not work in a namespace here: %s" % e)

    def test_peer_behind_iptables_drop_is_released_at_timeout(self):
        """Everything the peer sends or would receive is dropped inside its namespace."""
        self.need_iptables()

        def cut():
            self.iptables("-A", "INPUT", "-j", "DROP")
            self.iptables("-A", "OUTPUT", "-j", "DROP")

        def restore():
            self.iptables("-D", "OUTPUT", "-j", "DROP")
            self.iptables("-D", "INPUT", "-j", "DROP")

        self.check_vanish(cut, restore)

    def test_mute_peer_is_released_at_timeout_and_hears_close2(self):
        """Only the peer's output is dropped: it is detected the same way, and hears CLOSE(2)."""
        self.need_iptables()

        def cut():
            self.iptables("-A", "OUTPUT", "-j", "DROP")

        def restore():
            self.iptables("-D", "OUTPUT", "-j", "DROP")

        self.check_vanish(cut, restore, peer_hears=True)

    def test_peer_link_down_is_released_at_timeout(self):
        def cut():
            run("ip", "-n", self.ns, "link", "set", self.ns_if, "down")

        def restore():
            run("ip", "-n", self.ns, "link", "set", self.ns_if, "up")

        self.check_vanish(cut, restore)


if __name__ == "__main__":
    unittest.main()
