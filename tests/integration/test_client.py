# test_client.py — libringbeat-client against the real ringbeatd over loopback.
"""HELLO/WELCOME, client and server heartbeat modes, DATA, reconnect after a server restart with
backoff, TUNE followed by the server, network changes, the foreground pin, persistence, and a
server that predates TUNE. The client is tests/client_driver.c (rbclient.Driver); intervals are
scaled down to around a second so each test takes a few seconds.
"""

import os
import signal
import socket
import struct
import tempfile
import threading
import time
import unittest

import rbtest
from rbclient import Driver, record
from rbtest import DaemonTestCase

# Smart heartbeat scaled down: min 1 s, step 1 s, max 3 s, margin 0.5 s, one success per step.
FAST = ("--min", 1000, "--step", 1000, "--max", 3000, "--margin", 500, "--warmup", 1,
        "--to-step", 1, "--answer", 500, "--backoff-min", 200, "--backoff-max", 1600)


class ClientCase(DaemonTestCase):
    def driver(self, url, *flags, **kw):
        d = Driver(url, *flags, **kw)
        self.addCleanup(d.kill)
        return d

    def url(self, d):
        return "127.0.0.1:%d" % d.port

    def server_stats(self, d):
        n = d.line_count()
        d.signal(signal.SIGUSR1)
        line = d.wait_line(r" info stats (.*)$", 3.0, start=n).group(1)
        return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)

    def state_file(self, lines=()):
        fd, path = tempfile.mkstemp(prefix="rbc-state-")
        with os.fdopen(fd, "w") as f:
            for line in lines:
                f.write(line + "\n")
        self.addCleanup(os.unlink, path)
        return path


class ClientMode(ClientCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "2s", "--min-interval", "1s",
                                   "--max-interval", "60s", "--stats-interval", "0")

    def test_hello_welcome_and_pings(self):
        c = self.driver(self.url(self.d), "--fixed", "--min", 1000, "--answer", 500,
                        "--client-id", "phone-1")
        w = c.wait_ev("connected", 5.0)
        self.assertEqual((w["interval"], w["timeout"]), (1000, 2500))  # 2 x interval + answer
        beats = [c.wait_ev("heartbeat", 4.0, ok=1)]
        for _ in range(3):
            beats.append(c.wait_ev("heartbeat", 2.0, c.last_index + 1, ok=1))
        gaps = [b["t"] - a["t"] for a, b in zip(beats, beats[1:])]
        for g in gaps:
            self.assertGreaterEqual(g, 1000, "PINGs closer than the interval: %r" % gaps)
            self.assertLess(g, 1300, "PINGs late: %r" % gaps)
        self.assertTrue(all(b["counted"] == 0 for b in beats), "fixed: nothing is learned")
        s = self.server_stats(self.d)
        self.assertEqual(s["conns"], "1")
        self.assertEqual(s["closed_timeout"], "0")
        st = c.stats()
        self.assertGreaterEqual(st["pongs_received"], 4)
        self.assertEqual(st["heartbeats_failed"], 0)
        c.quit()
        s = self.server_stats(self.d)
        self.assertEqual(s["conns"], "0")
        self.assertEqual(s["closed_peer"], "1", "rbc_destroy sends CLOSE(1): %r" % s)

    def test_tune_is_followed_by_the_server(self):
        c = self.driver(self.url(self.d), *FAST)
        w = c.wait_ev("connected", 5.0)
        self.assertEqual((w["interval"], w["timeout"]), (1000, 2500))
        t2 = c.wait_ev("tuned", 5.0, interval=2000)
        self.assertEqual(t2["timeout"], 4500)
        self.assertEqual(t2["id"], w["id"], "a TUNE keeps the connection")
        t3 = c.wait_ev("tuned", 5.0, interval=3000)
        self.assertEqual(t3["timeout"], 6500)
        # 3 s is the maximum: one success there and it settles a margin below it.
        st = c.wait(lambda e: e["ev"] == "interval" and e["phase"] == "stable", 8.0, "stable")
        self.assertEqual(st["learned"], 2500)
        c.wait_ev("tuned", 3.0, interval=2500)
        # Silences of 2.5 s, longer than the HELLO's 2.5 s timeout minus nothing: had the server
        # not followed the TUNEs it would have closed the connection (CLOSE(2)) by now.
        n = c.count()
        for _ in range(3):
            c.wait_ev("heartbeat", 4.0, n, ok=1, interval=2500)
            n = c.last_index + 1
        self.assertEqual(c.snapshot("closed"), [])
        s = self.server_stats(self.d)
        self.assertEqual((s["conns"], s["closed_timeout"]), ("1", "0"))
        self.assertEqual(c.stats()["tunes_sent"], 3)
        c.quit()

    def test_data_both_ways(self):
        c = self.driver(self.url(self.d), *FAST)
        c.wait_ev("connected", 5.0)
        self.assertEqual(c.command("send hello ringbeat")["r"], 0)
        e = c.wait_ev("data", 3.0)  # ringbeatd echoes DATA
        self.assertEqual(e["text"], "hello ringbeat")
        self.assertEqual(c.command("send " + "x" * 400)["r"], 0)
        self.assertEqual(c.wait_ev("data", 3.0, c.last_index + 1)["len"], 400)
        st = c.stats()
        self.assertEqual((st["data_sent"], st["data_received"]), (2, 2))
        c.quit()

    def test_send_refused_when_not_open_and_when_too_big(self):
        c = self.driver("127.0.0.1:1", *FAST, "--max-frame", 64)  # nothing listens on port 1
        c.wait_ev("closed", 5.0, reason="connect")
        self.assertEqual(c.command("send x")["r"], -107)  # -ENOTCONN
        c.quit()
        c = self.driver(self.url(self.d), *FAST, "--max-frame", 64)
        c.wait_ev("connected", 5.0)
        self.assertEqual(c.command("send " + "y" * 65)["r"], -90)  # -EMSGSIZE
        self.assertEqual(c.command("send " + "y" * 64)["r"], 0)
        c.quit()

    def test_unanswered_heartbeat_is_dead_then_reconnects(self):
        c = self.driver(self.url(self.d), "--fixed", "--min", 1000, "--answer", 600,
                        "--backoff-min", 100, "--backoff-max", 200)
        c.wait_ev("connected", 5.0)
        c.wait_ev("heartbeat", 3.0, ok=1)
        n = c.count()
        self.d.signal(signal.SIGSTOP)  # the server stops answering; TCP still ACKs
        try:
            sus = c.wait_ev("liveness", 3.0, n, to="suspect")
            dead = c.wait_ev("liveness", 2.0, n, to="dead")
            closed = c.wait_ev("closed", 1.0, n, reason="dead")
        finally:
            self.d.signal(signal.SIGCONT)
        ping = [e for e in c.snapshot(since=n) if e["ev"] == "heartbeat"][0]
        self.assertEqual(ping["ok"], 0)
        self.assertAlmostEqual(dead["t"] - sus["t"], 300, delta=120)  # half the answer timeout
        self.assertLessEqual(closed["retry"], 100)
        c.wait_ev("connected", 5.0, n)
        self.assertEqual(c.stats()["heartbeats_failed"], 1)
        c.quit()

    def test_network_change_reconnects_at_once_with_that_networks_interval(self):
        state = self.state_file(["wifi-b " + record(3000)])
        c = self.driver(self.url(self.d), *FAST, "--max", 8000, "--network", "cell-a",
                        state=state)
        w1 = c.wait_ev("connected", 5.0)
        c.wait_ev("tuned", 5.0, interval=2000)  # cell-a is new: searching from 1 s
        n = c.count()
        self.assertEqual(c.command("net wifi-b")["r"], 0)
        closed = c.wait_ev("closed", 1.0, n, reason="network")
        self.assertEqual(closed["retry"], 0)
        c.wait_ev("store", 1.0, 0, network="cell-a")  # what cell-a learned is kept
        self.assertEqual(c.wait_ev("load", 1.0, n, network="wifi-b")["bytes"], 16)
        w2 = c.wait_ev("connected", 1.0, n)
        self.assertLess(w2["t"] - closed["t"], 500, "reconnected at once")
        self.assertNotEqual(w2["id"], w1["id"])
        self.assertEqual(w2["interval"], 1000)  # the warm-up heartbeat, at the minimum
        t = c.wait_ev("tuned", 3.0, c.last_index)
        self.assertEqual(t["interval"], 3000, "wifi-b's learned interval")
        info = c.info()
        self.assertEqual((info["network"], info["phase"], info["learned"]), ("wifi-b", "stable",
                                                                            3000))
        c.quit()

    def test_foreground_pins_the_minimum(self):
        state = self.state_file(["home " + record(3000)])
        c = self.driver(self.url(self.d), *FAST, "--max", 8000, "--network", "home", state=state)
        c.wait_ev("tuned", 5.0, interval=3000)
        n = c.count()
        c.command("fg 1")
        c.wait(lambda e: e["ev"] == "interval" and e["phase"] == "foreground", 1.0, "fg", n)
        t = c.wait_ev("tuned", 4.0, n)
        self.assertEqual(t["interval"], 1000)
        beats = [c.wait_ev("heartbeat", 2.5, c.last_index + 1, ok=1) for _ in range(3)]
        self.assertTrue(all(b["interval"] == 1000 and b["counted"] == 0 for b in beats))
        n = c.count()
        c.command("fg 0")
        self.assertEqual(c.wait_ev("tuned", 4.0, n)["interval"], 3000)
        self.assertEqual(c.info()["learned"], 3000, "the foreground taught nothing")
        c.quit()

    def test_learned_interval_persists_across_restarts(self):
        state = self.state_file()
        c = self.driver(self.url(self.d), *FAST, "--network", "lab", state=state)
        c.wait(lambda e: e["ev"] == "interval" and e["phase"] == "stable", 10.0, "stable")
        c.quit()
        with open(state) as f:
            saved = f.read().split()
        self.assertEqual(saved[0], "lab")
        self.assertEqual(saved[1][8:16], "%08x" % 2500)
        c = self.driver(self.url(self.d), *FAST, "--network", "lab", state=state)
        self.assertEqual(c.wait_ev("load", 5.0)["bytes"], 16)
        c.wait_ev("connected", 5.0)
        t = c.wait_ev("tuned", 3.0)
        self.assertEqual(t["interval"], 2500, "straight to the stored value after the warm-up")
        c.quit()


class ServerMode(ClientCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "server", "--interval", "1s", "--min-interval", "1s",
                                   "--max-interval", "60s", "--stats-interval", "0")

    def test_answers_server_pings_and_tunes_their_interval(self):
        c = self.driver(self.url(self.d), "--mode", "server", *FAST, "--max", 2000)
        w = c.wait_ev("connected", 5.0)
        self.assertEqual((w["interval"], w["timeout"]), (1000, 2500))
        c.wait_ev("heartbeat", 4.0, ok=1, interval=1000)  # a server PING, answered
        t = c.wait_ev("tuned", 3.0, interval=2000)  # the server now PINGs every 2 s
        b = c.wait_ev("heartbeat", 6.0, c.last_index + 1, ok=1)
        self.assertEqual(b["interval"], 2000)
        self.assertGreaterEqual(b["t"] - t["t"], 1950, "the server waited the new interval")
        # 2 s is the maximum: it settles a margin below, and the server follows that too.
        t = c.wait_ev("tuned", 3.0, c.last_index + 1, interval=1500)
        beats = [c.wait_ev("heartbeat", 5.0, c.last_index + 1, ok=1) for _ in range(3)]
        self.assertTrue(all(b["interval"] == 1500 for b in beats), "%r" % beats)
        for a, b in zip(beats[1:], beats[2:]):  # after the first (a phase): every interval
            self.assertGreaterEqual(b["t"] - a["t"], 1450)
            self.assertLess(b["t"] - a["t"], 1800)
        st = c.stats()
        self.assertGreaterEqual(st["pongs_sent"], 3)
        self.assertEqual(st["pings_sent"], 0, "server mode: the client never PINGs")
        s = self.server_stats(self.d)
        self.assertEqual((s["conns"], s["closed_timeout"]), ("1", "0"))
        c.quit()

    def test_server_that_stops_pinging_is_dead(self):
        c = self.driver(self.url(self.d), "--mode", "server", "--fixed", "--min", 1000,
                        "--answer", 600, "--backoff-min", 100, "--backoff-max", 200)
        c.wait_ev("heartbeat", 5.0, ok=1)
        n = c.count()
        t0 = time.monotonic()
        self.d.signal(signal.SIGSTOP)
        try:
            c.wait_ev("liveness", 3.0, n, to="suspect")
            c.wait_ev("closed", 2.0, n, reason="dead")
        finally:
            self.d.signal(signal.SIGCONT)
        # Due 1 s (+1/16) after our PONG, dead 0.6 s later.
        self.assertLess(time.monotonic() - t0, 2.5)
        c.wait_ev("connected", 5.0, n)
        self.assertEqual(c.stats()["heartbeats_failed"], 1)
        c.quit()


class Restart(ClientCase):
    def test_reconnects_with_backoff_after_the_server_restarts(self):
        d1 = self.start_daemon("--mode", "client", "--interval", "1s", "--stats-interval", "0")
        port = d1.port
        c = self.driver("127.0.0.1:%d" % port, *FAST, "--backoff-min", 100, "--backoff-max",
                        400, "--seed", 12345)
        c.wait_ev("connected", 5.0)
        n = c.count()
        d1.stop()  # SIGTERM: CLOSE(5) to everyone
        closed = c.wait_ev("closed", 3.0, n)
        self.assertEqual((closed["reason"], closed["code"]), ("peer", 5))
        # While the server is away: refused attempts, each delay within its doubling bound.
        fails = []
        while len(fails) < 4:
            fails.append(c.wait_ev("closed", 3.0, c.last_index + 1, reason="connect"))
        bounds = [200, 400, 400, 400]  # attempt 2.. : min(400, 100 x 2^n)
        for f, b in zip(fails, bounds):
            self.assertLessEqual(f["retry"], b, "%r" % fails)
            self.assertEqual(f["error"], -111)  # -ECONNREFUSED
        d2 = self.start_daemon("--mode", "client", "--interval", "1s", "--stats-interval", "0",
                               listen="127.0.0.1:%d" % port)
        c.wait_ev("connected", 5.0, c.last_index + 1)
        c.wait_ev("heartbeat", 3.0, c.last_index + 1, ok=1)
        self.assertEqual(self.server_stats(d2)["conns"], "1")
        c.quit()


class PreTuneServer:
    """A server from before TUNE, scripted from docs/protocol.md (section 4: type 0x07 is an
    unknown type, answered by CLOSE(3)), because no build of ringbeatd predating TUNE is at hand.
    It clamps timeouts at max_timeout_ms, answers PINGs, and closes with CLOSE(2) after a silence
    of its timeout, as ringbeatd does."""

    def __init__(self, max_timeout_ms):
        self.max_timeout_ms = max_timeout_ms
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.conns = []  # per connection: {"hello": (i, t), "frames": [(t, type)], "end": why}
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.lsock.settimeout(0.2)
        while not self.stop:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"hello": None, "frames": [], "end": None}
            with self.lock:
                self.conns.append(rec)
            self._conn(s, rec)

    def _conn(self, s, rec):
        buf = b""
        timeout_s = 10.0
        last = time.monotonic()
        while not self.stop:
            s.settimeout(max(0.01, last + timeout_s - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                s.sendall(rbtest.close(rbtest.CLOSE_TIMEOUT))
                rec["end"] = "timeout"
                break
            except OSError:
                rec["end"] = "error"
                break
            if not chunk:
                rec["end"] = "eof"
                break
            buf += chunk
            last = time.monotonic()
            while len(buf) >= 4:
                ftype, _, n = struct.unpack_from(">BBH", buf)
                if len(buf) < 4 + n:
                    break
                p, buf = buf[4:4 + n], buf[4 + n:]
                with self.lock:
                    rec["frames"].append((last, ftype))
                if ftype == rbtest.HELLO:
                    _, mode, _, iv, to = struct.unpack(">BBHII", p[:12])
                    to = min(to or 3 * iv, self.max_timeout_ms)
                    rec["hello"] = (iv, to)
                    timeout_s = to / 1000.0
                    s.sendall(rbtest.welcome_frame(mode, iv, to, len(self.conns)))
                elif ftype == rbtest.PING:
                    s.sendall(rbtest.pong(struct.unpack(">Q", p)[0]))
                elif ftype == rbtest.CLOSE:
                    rec["end"] = "close"
                    s.close()
                    return
                elif ftype != rbtest.PONG:
                    s.sendall(rbtest.close(rbtest.CLOSE_PROTOCOL))  # TUNE: an unknown type
                    rec["end"] = "protocol"
                    s.close()
                    return
        s.close()

    def close(self):
        self.stop = True
        self.lsock.close()
        self.thread.join(5.0)


class OldServer(ClientCase):
    def test_close3_after_tune_keeps_the_interval_and_stays_inside_the_timeout(self):
        srv = PreTuneServer(max_timeout_ms=2500)
        self.addCleanup(srv.close)
        c = self.driver("127.0.0.1:%d" % srv.port, *FAST, "--max", 8000)
        w = c.wait_ev("connected", 5.0)
        self.assertEqual((w["interval"], w["timeout"]), (1000, 2500))
        closed = c.wait_ev("closed", 5.0, reason="tune_refused")
        self.assertEqual((closed["code"], closed["retry"]), (3, 0))
        w2 = c.wait_ev("connected", 2.0, c.last_index + 1)
        self.assertEqual((w2["interval"], w2["timeout"]), (1000, 2500), "its last WELCOME kept")
        self.assertLess(w2["t"] - closed["t"], 500, "reconnected at once")
        # Ten seconds on the old server: no TUNE, no CLOSE(2), heartbeats at most 2 s apart
        # (its 2.5 s timeout minus the 0.5 s answer time), and still learning below that.
        time.sleep(10.0)  # the observation window itself
        with srv.lock:
            conns = [dict(r) for r in srv.conns]
        self.assertEqual(len(conns), 2, "%r" % conns)
        self.assertEqual(conns[0]["end"], "protocol")
        second = conns[1]
        self.assertIsNone(second["end"], "the old server closed us: %r" % second["end"])
        types = [t for _, t in second["frames"]]
        self.assertNotIn(rbtest.TUNE, types)
        times = [t for t, _ in second["frames"]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreater(len(gaps), 4)
        self.assertLess(max(gaps), 2.3, "a silence near the server's timeout: %r" % gaps)
        info = c.info()
        self.assertEqual(info["tune"], 0)
        self.assertLessEqual(info["learned"], 2000)
        self.assertEqual(c.stats()["tunes_refused"], 1)
        c.quit()


if __name__ == "__main__":
    unittest.main()
