# test_kernel_mode.py — kernel mode (3): TCP keepalive instead of PINGs, on loopback and through a NAT.
"""Kernel mode: the server sends no PINGs; the kernel's keepalive probes (answered by the peer's
kernel, no application wakes) keep the connection and any NAT mapping on its path alive, and the
kernel's verdict (TCP_USER_TIMEOUT) releases a peer that stopped answering.

Loopback (no root): WELCOME says mode 3, no PING comes over several intervals, a client PING gets
its PONG, the server's socket really has the keepalive timer (`ss -tio`), a server-mode socket
beside it does not, a WebSocket upgrade with ?mode=kernel gets it too, and a SIGSTOPped client
outlives its timeout (its kernel still ACKs the probes).

NAT (root): three namespaces built here, with subnets and names of this test's own:

    client ns                 router ns                         server ns
    clients 10.233.1.2 --- 10.233.1.1 | 10.233.2.1 ------------ 10.233.2.2 ringbeatd
                             MASQUERADE, INVALID dropped,
                             conntrack established timeout 10 s, tcp_loose 0

With tcp_loose 0 a segment of an expired mapping is INVALID and dropped, both ways. Three clients
at once: a kernel-mode one (probes every 4 s) must live 60 s (six conntrack timeouts) and still
get a PONG at the end; a silent client with a 60 s interval (no frames, no probes) loses its
mapping, so its PING after 14 s gets no PONG; a kernel-mode one whose port is then DROPped in the
client namespace (half-open: a SIGSTOPped process's kernel would still ACK the probes, so the
peer is made to vanish in netfilter) must be released by the server at its 12 s timeout with
reason timeout. About 70 s.
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rbnetns  # noqa: E402
import rbtest  # noqa: E402
from rbtest import (MODE_KERNEL, MODE_SERVER, MODE_SILENT, PING, PONG, DaemonTestCase,  # noqa: E402
                    Daemon)


def ss_sockets(port):
    """Established TCP sockets with local port `port`: {peer port: the ss line's timer field}."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "( sport = :%d )" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         timeout=10).stdout
    found = {}
    for line in out.splitlines():
        m = re.search(r":(\d+)\s+\S+:(\d+)(.*)$", line)
        if m:
            t = re.search(r"timer:\((\w+)", m.group(3))
            found[int(m.group(2))] = t.group(1) if t else None
    return found


class Loopback(DaemonTestCase):
    def setUp(self):
        if not rbtest.which("ss"):
            raise unittest.SkipTest("ss (iproute2) is not installed")
        self.d = self.start_daemon("--interval", "1s", "--timeout", "3s", "--stats-interval", "0")

    def test_kernel_mode_sends_no_pings_and_sets_keepalive(self):
        k = self.client(self.d)
        w = k.handshake(MODE_KERNEL, 1000, 3000)
        self.assertEqual((w["mode"], w["interval_ms"], w["timeout_ms"]), (MODE_KERNEL, 1000, 3000))
        s = self.client(self.d)
        self.assertEqual(s.handshake(MODE_SERVER, 1000, 3000)["mode"], MODE_SERVER)
        # Over three intervals and past the timeout: no PING, no CLOSE (the probes' ACKs come
        # from this process's kernel; the client itself sends nothing).
        t0 = time.monotonic()
        k.expect_silence(3.6)
        self.assertGreater(time.monotonic() - t0, 3.5)
        # The control: a server-mode connection is PINGed in the same time.
        s.expect(PING, 2.0)
        # A client PING still gets its PONG.
        k.roundtrip(0x1234)
        socks = ss_sockets(self.d.port)
        kport, sport = k.sock.getsockname()[1], s.sock.getsockname()[1]
        self.assertEqual(socks.get(kport), "keepalive", "server socket of the kernel-mode "
                         "connection has no keepalive timer: %r" % socks)
        self.assertNotEqual(socks.get(sport), "keepalive", "%r" % socks)

    def test_a_stopped_peer_stays_alive(self):
        """What kernel mode proves is the peer's host, not its application: a SIGSTOPped client's
        kernel still ACKs the probes, so it outlives its timeout (half-open peers are made in
        netfilter instead, class Nat)."""
        cl = NsClient(None, MODE_KERNEL, 1000, 3000, host=self.d.host, port=self.d.port)
        self.addCleanup(cl.kill)
        self.assertEqual(cl.expect("welcome", 5.0)["mode"], MODE_KERNEL)
        cl.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4.5)  # past the 3 s timeout
        finally:
            cl.proc.send_signal(signal.SIGCONT)
        cl.ping(9)
        ev = cl.expect("frame", 3.0)
        self.assertEqual((ev["type"], ev["token"]), (PONG, 9), "%r" % cl.events)

    def test_websocket_mode_kernel(self):
        # The upgrade's mode parameter and the HELLO's mode byte end in the same rb__sess_open.
        d = self.start_daemon("--interval", "1s", "--timeout", "3s", "--stats-interval", "0",
                              listen="ws://127.0.0.1:0")
        sock = socket.create_connection((d.host, d.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /?mode=kernel HTTP/1.1\r\nHost: x\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            self.assertTrue(chunk, "closed before the 101: %r" % head)
            head += chunk
        self.assertIn(b" 101 ", head.split(b"\r\n")[0])
        self.assertIn(b"Ringbeat-Mode: kernel", head)
        rest = head.split(b"\r\n\r\n", 1)[1]
        # No WebSocket Ping over two intervals; the keepalive timer is on the server socket.
        sock.settimeout(2.5)
        try:
            more = sock.recv(64)
        except socket.timeout:
            more = b""
        self.assertEqual(rest + more, b"", "the server sent frames in kernel mode")
        self.assertEqual(ss_sockets(d.port).get(sock.getsockname()[1]), "keepalive")


# ---- NAT ----

PREFIX = "rbkm-"
NET_C, NET_S = "10.233.1", "10.233.2"
PORT = 7611
CONNTRACK_S = 10






class NsClient:
    """This file run as a v1 client inside a namespace (--client); one JSON event per line."""

    def __init__(self, ns, mode, interval_ms, timeout_ms, host=None, port=None):
        prefix = ["ip", "netns", "exec", ns] if ns else []
        self.proc = subprocess.Popen(
            prefix + [sys.executable, os.path.abspath(__file__), "--client",
                      host or "%s.2" % NET_S, str(port or PORT), str(mode), str(interval_ms),
                      str(timeout_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events = []

    def event(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0, deadline - time.monotonic()))
            if not r:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return {"ev": "exit"}
            ev = json.loads(line)
            self.events.append(ev)
            return ev

    def expect(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.event(deadline - time.monotonic())
            if ev and ev["ev"] == name:
                return ev
            if ev and ev["ev"] == "exit":
                break
        raise AssertionError("no %r within %.1f s; events %r; stderr %r" % (
            name, timeout, self.events[-5:], self.proc.stderr.read() if self.proc.poll() is not None
            else ""))

    def ping(self, token):
        self.proc.stdin.write("ping %d\n" % token)
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


def client_main(host, port, mode, interval_ms, timeout_ms):
    """Connects, HELLOs, then reports frames and EOF; 'ping N' on stdin sends a PING."""
    def out(**ev):
        ev["t"] = time.monotonic()
        print(json.dumps(ev), flush=True)

    c = rbtest.Client(int(port), host=host)
    w = c.handshake(int(mode), int(interval_ms), int(timeout_ms))
    out(ev="welcome", mode=w["mode"], sport=c.sock.getsockname()[1])
    while True:
        r, _, _ = select.select([sys.stdin, c.sock], [], [], 1.0)
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line:
                return
            c.send(rbtest.ping(int(line.split()[1])))
        if c.sock in r:
            try:
                f = c.recv_frame(5.0)
            except (rbtest.PeerClosed, ConnectionError) as e:
                out(ev="eof", why=str(e))
                return
            out(ev="frame", type=f.type, token=getattr(f, "token", None) if f.type in (PING, PONG)
                else None, code=f.close_code if f.type == rbtest.CLOSE else None)


class Nat(rbnetns.NatLab):
    PREFIX, NET_C, NET_S = PREFIX, NET_C, NET_S

    def setUp(self):
        self.build_lab(CONNTRACK_S)
        s = self.ns["s"]
        self.daemon = Daemon("--interval", "4s", "--min-interval", "1s", "--max-interval", "60s",
                             "--stats-interval", "1s", "--log-level", "debug",
                             listen="%s.2:%d" % (NET_S, PORT),
                             prefix=("ip", "netns", "exec", s))
        self.procs.append(self.daemon)

    def client(self, mode, interval_ms, timeout_ms):
        cl = NsClient(self.ns["c"], mode, interval_ms, timeout_ms)
        self.procs.append(cl)
        w = cl.expect("welcome", 10.0)
        self.assertEqual(w["mode"], mode)
        return cl, w["sport"]

    def test_probes_keep_the_mapping_and_the_kernel_releases_a_vanished_peer(self):
        kern, _ = self.client(MODE_KERNEL, 4000, 12000)
        quiet, _ = self.client(MODE_SILENT, 60000, 180000)
        gone, gone_port = self.client(MODE_KERNEL, 4000, 12000)
        t0 = time.monotonic()
        # Half-open: the peer vanishes (its packets dropped in its own namespace, both ways).
        for chain, flag in (("INPUT", "--dport"), ("OUTPUT", "--sport")):
            self.in_ns(self.ns["c"], "iptables", "-A", chain, "-p", "tcp", flag, str(gone_port),
                       "-j", "DROP")
        t_drop = time.monotonic()
        self.daemon.wait_line(r"conn_close .*reason=timeout", 18.0)
        t_dead = time.monotonic()
        m = self.daemon.wait_line(r"stats .*keepalive_timeouts=1\b", 3.0)
        self.assertRegex(m.string, r"closed_timeout=1\b")
        # Kernel precision: the verdict at a look in [timeout, timeout + 1 s) after the last
        # answer (4 s / 12 s: 2 s looks, rb__live_keepalive_plan, the last one at the timeout),
        # and the last probe's ACK came up to 4 s (the idle time) before the DROP.
        self.assertGreater(t_dead - t_drop, 12.0 - 4.0 - 0.2)
        self.assertLess(t_dead - t_drop, 12.0 + 1.0 + 0.5)
        print("kernel mode: half-open peer released %.2f s after the DROP (timeout 12 s)"
              % (t_dead - t_drop), file=sys.stderr)

        # No frames, no probes: after 14 s (> 10 s conntrack) the mapping is gone, the PING is
        # dropped by the router as INVALID and never answered.
        time.sleep(max(0.0, t0 + CONNTRACK_S + 4 - time.monotonic()))
        quiet.ping(7)
        ev = quiet.event(3.0)
        self.assertIsNone(ev, "the silent connection's mapping survived: %r" % ev)

        # Kernel mode: 60 s (six conntrack timeouts) with nothing but probes, then a PONG.
        time.sleep(max(0.0, t0 + 6 * CONNTRACK_S - time.monotonic()))
        kern.ping(42)
        ev = kern.expect("frame", 3.0)
        self.assertEqual((ev["type"], ev["token"]), (PONG, 42),
                         "kernel mode got something else: %r" % kern.events)
        self.assertEqual([e for e in kern.events if e["ev"] == "frame" and e["type"] == PING], [],
                         "the server PINGed a kernel-mode connection")
        self.daemon.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(*sys.argv[2:7])
    else:
        unittest.main()
