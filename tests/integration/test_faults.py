# test_faults.py — ringbeatd under faults: restart under load, buffer exhaustion, many rings, max-conns.
"""Each test drives ringbeatd with the real load generator ($RINGBEAT_LOAD) and asserts on both
sides: the load's JSON summary (tools/load/main.c write_json) and the daemon's own counters (the
SIGUSR1 stats line, or GET /metrics). Every load is bounded in time (--duration) and stays far
below RLIMIT_NOFILE: the load generator holds its sockets as io_uring direct descriptors.

Note on the load generator's accounting: a close by the server of a connection it did not
silence is a false death, except CLOSE(4) (server full) and CLOSE(5) (shutting down): the server
said why, and nobody was declared dead. The tests assert false_deaths == 0 in every case and
fail on any close with a code they did not expect.
"""

import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import rbtest
from rbtest import DaemonTestCase

BASE = ("--stats-interval", "0")  # every stats line is one the test asked for
# The daemon side of start_load()'s workload: client-initiated heartbeats every 1 s, 6 s timeout.
CLIENT = ("--mode", "client", "--interval", "1s", "--timeout", "6s")


def stats_fields(text):
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def free_port():
    """A free TCP port below 32768, so that it never collides with the clients' ephemeral ports.

    A fixed port (not port 0) is needed to restart the daemon on the same address."""
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port found in 20000..32000")


def load_or_skip():
    path = rbtest.load_path()
    if path is None:
        raise unittest.SkipTest("ringbeat-load not found: set RINGBEAT_LOAD")
    return path


class FaultCase(DaemonTestCase):
    def setUp(self):
        self.load = load_or_skip()
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    # ---- daemon side ----

    def stats(self, d):
        """Asks the daemon for a stats line now (SIGUSR1); returns its key=value fields."""
        n = d.line_count()
        d.signal(signal.SIGUSR1)
        m = d.wait_line(r" info stats (.*)$", 3.0, start=n)
        return stats_fields(m.group(1))

    def wait_conns(self, d, want, timeout, proc=None):
        """Polls the daemon's stats until conns == want. Returns the stats, or None when `proc`
        (the load) exits first; fails at the deadline with the last stats seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return None
            last = self.stats(d)
            if last.get("conns") == str(want):
                return last
            time.sleep(0.2)  # pacing between stats requests
        self.fail("daemon never reported conns=%d within %.1f s; last stats: %r"
                  % (want, timeout, last))

    # ---- load side ----

    def start_load(self, port, connections, duration_s, *extra, rate=2000, addrs=1):
        out = os.path.join(self.tmp.name, "load-%d.json" % len(os.listdir(self.tmp.name)))
        target = ("127.0.0.1-127.0.0.%d:%d" % (addrs, port)) if addrs > 1 else \
            "127.0.0.1:%d" % port
        args = [self.load, "--target", target, "--connections", str(connections),
                "--rate", str(rate), "--duration", "%ds" % duration_s, "--mode", "client",
                "--interval", "1s", "--timeout", "6s", "--quiet", "--json", out] + list(extra)
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(self._kill, proc)
        proc.json_path = out
        proc.t_start = time.monotonic()
        return proc

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    def start_load_held(self, d, duration_s, *extra, **kw):
        """start_load() against daemon `d`, returned once `d` holds all CONNS connections."""
        load = self.start_load(d.port, self.CONNS, duration_s, *extra, **kw)
        self.assertIsNotNone(self.wait_conns(d, self.CONNS, 8.0, load),
                             "load exited before the daemon held every connection")
        return load

    def finish_load(self, proc, timeout):
        """Waits for the load to end by itself; returns (exit code, JSON summary)."""
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            self.fail("ringbeat-load did not finish within %.0f s\n%s" % (timeout, stderr[-2000:]))
        self.assertTrue(os.path.exists(proc.json_path),
                        "ringbeat-load (rc=%d) wrote no JSON\nstdout:%s\nstderr:%s"
                        % (proc.returncode, stdout[-1500:], stderr[-1500:]))
        with open(proc.json_path) as f:
            res = json.load(f)
        res["_stdout"] = stdout.decode("utf-8", "replace")[-1500:]
        return proc.returncode, res

    def assert_no_close_but(self, res, allowed, send_errors_ok=False):
        """The server closed connections only with the codes (and counts) in `allowed`; the load
        saw no EOF or reset without a CLOSE frame, and no protocol error. `send_errors_ok`: a
        PING sent just as the server shut the connection down may fail (EPIPE) before the load
        has read the CLOSE frame; how the connection ended is still checked above."""
        got = {int(k): v for k, v in res.get("closes_by_code", {}).items()}
        self.assertEqual(got, allowed, "closes by code: %r\n%s" % (got, res["_stdout"]))
        keys = ["closed_eof", "closed_reset", "protocol_errors", "closes_bad_code",
                "pong_unmatched"]
        if not send_errors_ok:
            keys.append("send_errors")
        for key in keys:
            self.assertEqual(res.get(key, 0), 0, "%s in %s" % (key, res["_stdout"]))

    def assert_no_false_death(self, res):
        """CLOSE(4) and CLOSE(5) are the server's word, not a death (see module doc)."""
        self.assertEqual(res["false_deaths"], 0, res["_stdout"])

    def assert_heartbeats_answered(self, res, conns, hold_s):
        # About one PING per connection per second of hold; each answered except those in
        # flight when the load stopped.
        self.assertGreaterEqual(res["pings_sent"], conns * (hold_s - 2), res["_stdout"])
        self.assertGreaterEqual(res["pongs_received"], res["pings_sent"] - conns, res["_stdout"])


class Restart(FaultCase):
    CONNS = 2000
    HOLD_S = 12

    def test_restart_mid_load_every_connection_comes_back(self):
        port = free_port()
        d1 = self.start_daemon(*CLIENT, *BASE, listen="0.0.0.0:%d" % port)
        load = self.start_load(port, self.CONNS, self.HOLD_S, "--reconnect")
        self.assertIsNotNone(self.wait_conns(d1, self.CONNS, 8.0, load),
                             "load exited before the first daemon held every connection")
        time.sleep(1.0)  # one heartbeat round on the first daemon before it goes away
        d1.stop(timeout=5.0)  # SIGTERM: CLOSE(5) to all, exit 0, clean stderr
        t_down = time.monotonic()
        d2 = self.start_daemon(*CLIENT, *BASE, listen="0.0.0.0:%d" % port)
        restart_s = time.monotonic() - t_down
        self.assertLess(restart_s, 2.0, "restart on the same port took %.2f s" % restart_s)
        # The load's reconnect backoff is 100 ms doubling to 5 s; it ends 12 s after its ramp.
        remaining = self.HOLD_S + 1.0 - (time.monotonic() - load.t_start) - 0.5
        back = self.wait_conns(d2, self.CONNS, max(1.0, remaining), load)
        self.assertIsNotNone(back, "load ended before the restarted daemon held %d connections"
                             % self.CONNS)
        rc, res = self.finish_load(load, 30)
        self.assertEqual(res["connections_established"], self.CONNS, res["_stdout"])
        # Every connection was closed by the shutdown and came back at least once.
        self.assertGreaterEqual(res["reconnects"], self.CONNS, res["_stdout"])
        # Every connection got CLOSE(5) before the FIN: none ended with a bare EOF or a reset.
        self.assert_no_close_but(res, {5: self.CONNS}, send_errors_ok=True)
        self.assert_no_false_death(res)
        self.assertEqual(rc, 0, res["_stdout"])
        # The restarted daemon saw the load's normal goodbye, not timeouts.
        st = self.wait_conns(d2, 0, 10.0)
        self.assertEqual(st.get("closed_timeout"), "0", st)
        self.assertGreaterEqual(int(st.get("accepted", 0)), self.CONNS, st)


class DrainWithTinySubmissionQueue(FaultCase):
    CONNS = 2000

    def test_every_close_frame_goes_before_its_fin(self):
        # 8 SQ entries: draining 2,000 connections (CLOSE frame, shutdown and close linked, per
        # connection) fills the SQ hundreds of times, and each time the turn submits mid-way. A
        # submit that split a chain handed its CLOSE send to an io-wq thread that the shutdown
        # could overtake: measured before the fix, 211 and 371 of 2,000 peers saw a bare FIN.
        d = self.start_daemon(*CLIENT, "--workers", "1", "--ring-entries", "8", *BASE,
                              listen="0.0.0.0:0")
        load = self.start_load_held(d, 6)
        d.stop(timeout=5.0)
        rc, res = self.finish_load(load, 30)
        self.assertEqual(res["connections_established"], self.CONNS, res["_stdout"])
        self.assert_no_close_but(res, {5: self.CONNS}, send_errors_ok=True)
        self.assert_no_false_death(res)
        self.assertEqual(rc, 0, res["_stdout"])


class BufferExhaustion(FaultCase):
    CONNS = 3000
    HOLD_S = 8

    def test_eight_buffers_per_ring_slow_down_but_lose_nothing(self):
        # One worker, one ring, 8 buffers: more than 8 receives complete between two reaps all
        # the time (3,000 connects in 0.1 s, then 3,000 PINGs/s), so the buffer ring runs dry.
        # Measured on the development machine: ENOBUFS for 9-47% of the frames received.
        d = self.start_daemon(*CLIENT, "--workers", "1", "--buffers", "8",
                              "--metrics", "127.0.0.1:0", *BASE, listen="0.0.0.0:0")
        load = self.start_load_held(d, self.HOLD_S, rate=30000, addrs=2)
        rc, res = self.finish_load(load, 40)
        self.assertEqual(rc, 0, res["_stdout"])
        self.assertEqual(res["connections_established"], self.CONNS, res["_stdout"])
        self.assertEqual(res["false_deaths"], 0, res["_stdout"])
        self.assert_no_close_but(res, {})
        self.assert_heartbeats_answered(res, self.CONNS, self.HOLD_S)
        m = self.metrics(d)
        enobufs = m["ringbeat_enobufs_total"]
        frames_in = sum(v for k, v in m.items() if k.startswith("ringbeat_frames_in_total{"))
        # Exhaustion did happen (otherwise this test proves nothing) ...
        self.assertGreater(enobufs, 0, "no ENOBUFS with 8 buffers: the test did not exhaust them")
        # ... but as a bounded slowdown: a naive immediate re-arm turns each shortage into a storm
        # (the field notes measured 94 million ENOBUFS for 30,000 connections). With re-arms
        # paced per turn, at most a few ENOBUFS per frame received can happen.
        self.assertLess(enobufs, 2 * frames_in + self.CONNS,
                        "ENOBUFS storm: %d ENOBUFS for %d frames received" % (enobufs, frames_in))
        self.assertLessEqual(m["ringbeat_cq_overflow_total"], 2, m)


class ManyRings(FaultCase):
    CONNS = 2000
    HOLD_S = 6

    def test_64_slots_per_ring_spread_over_more_than_30_rings(self):
        d = self.start_daemon(*CLIENT, "--workers", "2", "--slots-per-ring", "64",
                              "--metrics", "127.0.0.1:0", *BASE, listen="0.0.0.0:0")
        self.assertRegex(d.stderr_text(), r"listening .*slots_per_ring=64\b")
        load = self.start_load_held(d, self.HOLD_S)
        rings = self.metrics(d)["ringbeat_rings"]
        # 2000 connections in 64-slot tables: at least 32 rings, 16 per worker.
        self.assertGreater(rings, 30, "only %d rings for %d connections" % (rings, self.CONNS))
        rc, res = self.finish_load(load, 30)
        self.assertEqual(rc, 0, res["_stdout"])
        self.assertEqual(res["connections_established"], self.CONNS, res["_stdout"])
        self.assertEqual(res["false_deaths"], 0, res["_stdout"])
        self.assert_no_close_but(res, {})
        self.assert_heartbeats_answered(res, self.CONNS, self.HOLD_S)
        # The load closed everything with CLOSE(1): the daemon releases every slot of every ring.
        st = self.wait_conns(d, 0, 10.0)
        self.assertEqual(st.get("closed_timeout"), "0", st)


class ServerFull(FaultCase):
    CONNS = 800
    MAX = 500
    HOLD_S = 5

    def test_max_conns_500_of_800_rest_get_close4_and_500_unaffected(self):
        d = self.start_daemon(*CLIENT, "--max-conns", str(self.MAX), *BASE, listen="0.0.0.0:0")
        load = self.start_load(d.port, self.CONNS, self.HOLD_S, rate=1000)
        # The load exits 1 (not every connection established), so its end is no signal: wait for
        # the daemon to hold the cap and to have refused the rest.
        deadline = time.monotonic() + 8.0
        st = None
        while time.monotonic() < deadline:
            st = self.stats(d)
            if st.get("conns") == str(self.MAX) and \
                    st.get("rejected_full") == str(self.CONNS - self.MAX):
                break
            time.sleep(0.2)  # pacing between stats requests
        self.assertEqual(st.get("conns"), str(self.MAX), st)
        self.assertEqual(st.get("rejected_full"), str(self.CONNS - self.MAX), st)
        rc, res = self.finish_load(load, 30)
        self.assertEqual(rc, 1, "the load must report the refused connections\n" + res["_stdout"])
        self.assertEqual(res["connections_established"], self.MAX, res["_stdout"])
        self.assert_no_close_but(res, {4: self.CONNS - self.MAX})
        self.assert_no_false_death(res)
        # The 500 held kept their heartbeat for the whole hold.
        self.assert_heartbeats_answered(res, self.MAX, self.HOLD_S)
        st = self.wait_conns(d, 0, 10.0)
        self.assertEqual(st.get("closed_timeout"), "0", st)
        self.assertEqual(st.get("rejected_full"), str(self.CONNS - self.MAX), st)


if __name__ == "__main__":
    unittest.main()
