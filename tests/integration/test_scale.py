# test_scale.py — ringbeatd holds 10,000 concurrent heartbeating connections with no false death.
# The timeout is 6 s (pings every 1 s): this test is about holding connections under load, also in
# the sanitizer build where both processes run several times slower; precision has its own tests.
import errno
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import rbtest
from rbtest import CLOSE, DaemonTestCase, HEADER, MODE_CLIENT, PONG, WELCOME

CONNECTIONS = 10000
DEST_ADDRS = 4  # 127.0.0.1-127.0.0.4: 2,500 per destination, far from the ~14k source-port trap
RATE = 5000
HOLD_S = 5.0


def stats_fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


class Scale(DaemonTestCase):
    def setUp(self):
        self.d = self.start_daemon("--workers", "2", "--mode", "client", "--interval", "1s",
                                   "--timeout", "6s", "--stats-interval", "0",
                                   listen="0.0.0.0:0")

    def wait_server_conns(self, want, timeout, proc=None):
        """Asks for stats (SIGUSR1) until the daemon reports `want` open connections.

        Returns None early if `proc` (the load generator) exits first: its report says why."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return None
            n = self.d.line_count()
            self.d.signal(signal.SIGUSR1)
            m = self.d.wait_line(r" info stats (.*)$", 3.0, start=n)
            last = m.group(0)
            if stats_fields(m.group(1)).get("conns") == str(want):
                return last
            time.sleep(0.25)  # pacing between stats requests
        self.fail("daemon never reported conns=%d; last stats line: %s" % (want, last))

    def test_10000_concurrent_connections(self):
        load = rbtest.load_path()
        if load is not None and not os.environ.get("RBTEST_SCALE_PYTHON"):
            self.run_load_generator(load)
        else:
            self.run_python_clients()

    def run_load_generator(self, load):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out.json")
            args = [load, "--target", "127.0.0.1-127.0.0.%d:%d" % (DEST_ADDRS, self.d.port),
                    "--connections", str(CONNECTIONS), "--rate", str(RATE),
                    "--duration", "%ds" % HOLD_S, "--mode", "client", "--interval", "1s",
                    "--timeout", "6s", "--json", out]
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            try:
                # While the load holds, the daemon itself must count every connection.
                seen = self.wait_server_conns(CONNECTIONS, 30.0, proc)
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            self.assertEqual(proc.returncode, 0, "ringbeat-load exited %d\nstdout:%s\nstderr:%s"
                             % (proc.returncode, stdout[-2000:], stderr[-2000:]))
            self.assertIsNotNone(seen, "ringbeat-load exited before the daemon counted %d "
                                 "connections\nstdout:%s" % (CONNECTIONS, stdout[-2000:]))
            with open(out) as f:
                result = json.load(f)
        self.assertEqual(result.get("connections_established"), CONNECTIONS, result)
        self.assertEqual(result.get("false_deaths"), 0, result)
        # Fields beyond the contract's two are checked when the load generator reports them.
        for key in ("connect_failures", "protocol_errors", "pong_unmatched", "closed_eof",
                    "closed_reset"):
            if key in result:
                self.assertEqual(result[key], 0, "%s in %s" % (key, result))
        if "pings_sent" in result and "pongs_received" in result:
            # About one PING per connection per second during the hold, each answered.
            self.assertGreaterEqual(result["pings_sent"], CONNECTIONS * (HOLD_S - 1), result)
            self.assertGreaterEqual(result["pongs_received"], result["pings_sent"] - CONNECTIONS,
                                    result)

    def run_python_clients(self):
        """Fallback when ringbeat-load is not built: 10,000 non-blocking sockets in one process."""
        sel = selectors.DefaultSelector()
        conns = []
        hello = rbtest.hello(MODE_CLIENT, 1000, 6000)
        dead = []
        pongs = 0
        welcomed = 0

        class Conn:
            __slots__ = ("sock", "buf", "welcomed", "next_ping", "token", "dead", "pongs",
                         "hello_sent")

        def send_hello(c):
            # A connect still in progress refuses the send (EAGAIN); the pump retries it.
            try:
                c.hello_sent = c.sock.send(hello) == len(hello)
            except (BlockingIOError, OSError):
                pass

        def on_frames(c, now):
            nonlocal pongs, welcomed
            while len(c.buf) >= 4:
                ftype, flags, n = HEADER.unpack_from(c.buf)
                if len(c.buf) < 4 + n:
                    return
                payload = bytes(c.buf[4:4 + n])
                del c.buf[:4 + n]
                rbtest.check_server_frame(ftype, flags, payload)
                if ftype == WELCOME and not c.welcomed:
                    c.welcomed = True
                    welcomed += 1
                elif ftype == PONG:
                    self.assertEqual(struct.unpack(">Q", payload)[0], c.token)
                    c.pongs += 1
                    pongs += 1
                elif ftype == CLOSE:
                    c.dead = "CLOSE(%d)" % struct.unpack(">H", payload[:2])[0]
                    return
                else:
                    self.fail("unexpected frame type %d" % ftype)

        def pump(until):
            while True:
                timeout = until - time.monotonic()
                if timeout <= 0:
                    return
                for key, _ in sel.select(min(timeout, 0.05)):
                    c = key.data
                    try:
                        chunk = c.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        chunk = b""
                        c.dead = "error %s" % e
                    if not chunk:
                        c.dead = c.dead or "EOF"
                    else:
                        c.buf += chunk
                        on_frames(c, time.monotonic())
                    if c.dead:
                        sel.unregister(c.sock)
                        dead.append(c)
                now = time.monotonic()
                for c in conns:
                    if not c.hello_sent:
                        send_hello(c)
                    elif not c.dead and c.welcomed and now >= c.next_ping:
                        c.token += 1
                        try:
                            c.sock.send(rbtest.ping(c.token))
                        except OSError as e:
                            c.dead = "send error %s" % e
                            sel.unregister(c.sock)
                            dead.append(c)
                        c.next_ping = now + 1.0

        try:
            start = time.monotonic()
            for i in range(CONNECTIONS):
                # Pace the ramp to RATE connections per second.
                due = start + i / RATE
                if due > time.monotonic():
                    pump(due)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.%d" % (1 + i % DEST_ADDRS), self.d.port))
                self.assertIn(err, (0, errno.EINPROGRESS), "connect %d: %s" % (i, os.strerror(err)))
                c = Conn()
                c.sock, c.buf, c.welcomed, c.token, c.dead, c.pongs = s, bytearray(), False, 0, None, 0
                c.next_ping = time.monotonic() + 0.2 + (i % 100) / 100.0
                conns.append(c)
                sel.register(s, selectors.EVENT_READ, c)
                c.hello_sent = False
                send_hello(c)
            deadline = time.monotonic() + 20.0
            while welcomed + len(dead) < CONNECTIONS and time.monotonic() < deadline:
                pump(time.monotonic() + 0.1)
            self.assertEqual(dead, [], "connections died during the ramp: %r" %
                             [c.dead for c in dead[:10]])
            self.assertEqual(welcomed, CONNECTIONS, "only %d connections got WELCOME" % welcomed)
            hold_end = time.monotonic() + HOLD_S
            pongs_before = pongs
            line = None
            while time.monotonic() < hold_end:
                pump(min(hold_end, time.monotonic() + 1.0))
                if line is None:
                    n = self.d.line_count()
                    self.d.signal(signal.SIGUSR1)
                    m = self.d.wait_line(r" info stats (.*)$", 3.0, start=n)
                    line = m.group(0)
            self.assertEqual([c.dead for c in dead[:10]], [], "false deaths during the hold")
            self.assertEqual(stats_fields(line.split(" stats ", 1)[1]).get("conns"), str(CONNECTIONS),
                             line)
            # Every connection kept its heartbeat going: about HOLD_S PONGs each.
            self.assertGreaterEqual(pongs - pongs_before, int(CONNECTIONS * (HOLD_S - 1.5)))
            self.assertTrue(all(c.pongs >= 3 for c in conns), "some connection got fewer than 3 PONGs")
        finally:
            sel.close()
            for c in conns:
                c.sock.close()


if __name__ == "__main__":
    unittest.main()
