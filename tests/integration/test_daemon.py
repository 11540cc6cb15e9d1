# test_daemon.py — ringbeatd as a process: limits, signals, log lines and its command line.
import json
import signal
import time
import unittest

import rbtest
from rbtest import (CLOSE_FULL, CLOSE_SHUTDOWN, DATA, MODE_CLIENT, Daemon, DaemonTestCase, data,
                    run_tool)


class MaxConns(DaemonTestCase):
    def test_sixth_connection_gets_close4_and_first_five_still_work(self):
        d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "5s",
                              "--max-conns", "5", "--workers", "2")
        five = [self.client(d) for _ in range(5)]
        ids = set()
        for c in five:
            ids.add(c.handshake(MODE_CLIENT, 1000, 5000)["conn_id"])
        self.assertEqual(len(ids), 5)
        sixth = self.client(d)
        sixth.expect_close(CLOSE_FULL, timeout=2.0, allow=())
        for i, c in enumerate(five):
            c.roundtrip(100 + i)
            c.send(data(b"ok%d" % i))
            self.assertEqual(c.expect(DATA).payload, b"ok%d" % i)

    def test_slot_is_reused_after_a_connection_closes(self):
        d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "5s",
                              "--max-conns", "5")
        five = [self.client(d) for _ in range(5)]
        for c in five:
            c.handshake(MODE_CLIENT, 1000, 5000)
        five[0].send(rbtest.close(rbtest.CLOSE_NORMAL))
        five[0].expect_eof()
        # The server may count the release a moment after the FIN it sent: retry briefly.
        deadline = time.monotonic() + 2.0
        while True:
            c = self.client(d)
            c.send(rbtest.hello(MODE_CLIENT, 1000, 5000))
            f = c.recv_frame(2.0)
            if f.type == rbtest.WELCOME:
                break
            self.assertEqual((f.type, f.close_code), (rbtest.CLOSE, CLOSE_FULL))
            c.close()
            self.assertLess(time.monotonic(), deadline, "slot of a closed connection never reused")
            time.sleep(0.05)
        c.roundtrip(5)


class Shutdown(DaemonTestCase):
    def test_sigterm_sends_close5_to_everyone_and_exits_0_within_5s(self):
        d = Daemon("--mode", "server", "--interval", "10s", "--workers", "2")
        try:
            clients = [d.client() for _ in range(4)]
            for c in clients[:3]:
                c.handshake(MODE_CLIENT, 1000, 3000)
            clients[3].send(data(b"no hello"))  # one without HELLO
            self.assertEqual(clients[3].expect(DATA).payload, b"no hello")
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            for c in clients:
                c.expect_close(CLOSE_SHUTDOWN, timeout=5.0, allow=())
            rc = d.wait_exit(max(0.1, t0 + 5.0 - time.monotonic()))
            self.assertIsNotNone(rc, "ringbeatd still running 5 s after SIGTERM")
            self.assertEqual(rc, 0, "ringbeatd exited %s after SIGTERM; stderr:\n%s" % (rc, d.tail()))
            d.check_output_clean()
            for c in clients:
                c.close()
        finally:
            d.kill()

    def test_sigint_also_shuts_down_cleanly(self):
        d = Daemon("--mode", "client", "--interval", "1s")
        try:
            c = d.client()
            c.handshake(MODE_CLIENT, 1000, 3000)
            d.signal(signal.SIGINT)
            c.expect_close(CLOSE_SHUTDOWN, timeout=5.0, allow=())
            self.assertEqual(d.wait_exit(5.0), 0)
            c.close()
        finally:
            d.kill()

    def test_sigterm_with_no_connections_exits_0(self):
        d = Daemon()
        try:
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            self.assertEqual(d.wait_exit(5.0), 0)
            self.assertLess(time.monotonic() - t0, 5.0)
        finally:
            d.kill()


class Logging(DaemonTestCase):
    def test_sigusr1_prints_a_stats_line(self):
        d = self.start_daemon("--mode", "client", "--interval", "1s", "--stats-interval", "0")
        a = self.client(d)
        b = self.client(d)
        a.handshake(MODE_CLIENT, 1000, 3000)
        b.handshake(MODE_CLIENT, 1000, 3000)
        a.roundtrip(1)
        n = d.line_count()
        d.signal(signal.SIGUSR1)
        m = d.wait_line(r" info stats (.*)$", 3.0, start=n)
        fields = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
        self.assertEqual(fields.get("conns"), "2", "stats line: %s" % m.string)
        self.assertIn("accepted", fields, "stats line: %s" % m.string)
        self.assertGreaterEqual(int(fields["accepted"]), 2)
        # The daemon keeps serving after the signal.
        a.roundtrip(2)

    def test_text_log_lines_have_the_documented_shape(self):
        d = self.start_daemon()
        with d.cond:
            lines = list(d.lines)
        listening = [l for l in lines if " listening " in l]
        self.assertTrue(listening)
        m = rbtest.LOG_LINE.match(listening[0])
        self.assertIsNotNone(m, "not `<ISO8601 UTC ms> <level> <event> key=value`: %r" % listening[0])
        self.assertEqual((m.group(2), m.group(3)), ("info", "listening"))
        self.assertIn("addr=127.0.0.1:%d" % d.port, listening[0])

    def test_json_log_format(self):
        d = self.start_daemon("--mode", "client", "--log-format", "json", log_format="json")
        c = self.client(d)
        c.roundtrip(1)
        with d.cond:
            lines = [l for l in d.lines if l.strip()]
        for l in lines:
            rec = json.loads(l)  # every line is one JSON object
            for key in ("ts", "level", "event"):
                self.assertIn(key, rec, l)
            self.assertRegex(rec["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Listeners(DaemonTestCase):
    def test_listen_is_repeatable(self):
        d = self.start_daemon("--mode", "client", "--listen", "127.0.0.2:0")
        m = d.wait_line(r" info listening .*addr=127\.0\.0\.2:(\d+)", 5.0)
        second = int(m.group(1))
        a = self.client(d)
        b = rbtest.Client(second, host="127.0.0.2")
        self.addCleanup(b.close)
        a.roundtrip(1)
        b.roundtrip(2)


class CommandLine(unittest.TestCase):
    BAD = [
        (["--workers", "abc"], "workers"),
        (["--workers", "-3"], "workers"),
        (["--mode", "bogus"], "mode"),
        (["--interval", "xyz"], "interval"),
        (["--interval", "10parsecs"], "interval"),
        (["--timeout", ""], "timeout"),
        (["--tick", "fast"], "tick"),
        (["--max-conns", "many"], "max-conns"),
        (["--max-frame", "-1"], "max-frame"),
        (["--listen", "not-an-address"], "listen"),
        (["--log-level", "loud"], "log-level"),
        (["--log-format", "xml"], "log-format"),
        (["--no-such-flag"], "no-such-flag"),
    ]

    def setUp(self):
        self.path = rbtest.daemon_path()

    def test_bad_flags_exit_2_with_one_line_naming_the_flag(self):
        for args, name in self.BAD:
            with self.subTest(args=args):
                rc, out, err = run_tool([self.path, "--listen", "127.0.0.1:0"] + args
                                        if args[0] != "--listen" else [self.path] + args, 5.0)
                self.assertEqual(rc, 2, "%r exited %d; stderr=%r" % (args, rc, err))
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, "%r: expected one error line, got %r" % (args, lines))
                self.assertIn(name, lines[0], "%r: error does not name the flag: %r" % (args, lines[0]))
                self.assertNotIn("listening", err)

    def test_help_exits_0(self):
        rc, out, err = run_tool([self.path, "--help"], 5.0)
        self.assertEqual(rc, 0, err)
        text = out + err
        for flag in ("--listen", "--workers", "--mode", "--interval", "--timeout", "--max-conns",
                     "--max-frame", "--help", "--version"):
            self.assertIn(flag, text)

    def test_version_exits_0(self):
        rc, out, err = run_tool([self.path, "--version"], 5.0)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out + err, r"\b\d+\.\d+\.\d+\b")
        self.assertNotIn("listening", out + err)

    def test_durations_accept_suffixes(self):
        d = Daemon("--mode", "client", "--interval", "1500000us", "--timeout", "6000", "--min-interval", "500ms", "--max-interval", "1m")
        try:
            c = d.client()
            w = c.handshake(MODE_CLIENT, 0, 0)
            self.assertEqual((w["interval_ms"], w["timeout_ms"]), (1500, 6000))
            c2 = d.client()
            self.assertEqual(c2.handshake(MODE_CLIENT, 100, 6000)["interval_ms"], 500)
            c3 = d.client()
            self.assertEqual(c3.handshake(MODE_CLIENT, 3600000, 7200000)["interval_ms"], 60000)
            for x in (c, c2, c3):
                x.close()
        finally:
            d.stop()
            d.kill()


if __name__ == "__main__":
    unittest.main()
