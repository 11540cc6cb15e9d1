# test_ops.py — ringbeatd's operator surface: the /metrics endpoint, --log-file with SIGHUP reopen.
import http.client
import json
import os
import re
import signal
import socket
import tempfile
import time
import unittest

import rbtest
from rbtest import MODE_CLIENT, Daemon, DaemonTestCase

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """Prometheus text format 0.0.4 -> ({family: type}, [(name, labels, value)]); strict enough to
    fail on malformed lines."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            if name in types:
                raise AssertionError("TYPE given twice for %s" % name)
            types[name] = typ
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("malformed sample line: %r" % line)
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count", ""):
        base = name[: len(name) - len(suffix)] if suffix and name.endswith(suffix) else name
        if base in types:
            return base
    return None


class Metrics(DaemonTestCase):
    def start_with_metrics(self, *flags):
        d = self.start_daemon("--metrics", "127.0.0.1:0", *flags)
        m = d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0)
        host, _, port = m.group(1).rpartition(":")
        return d, host, int(port)

    def get(self, host, port, path="/metrics", method="GET"):
        conn = http.client.HTTPConnection(host, port, timeout=5.0)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type"), r.read().decode()
        finally:
            conn.close()

    def scrape(self, host, port):
        status, ctype, body = self.get(host, port)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        return parse_exposition(body)

    def value(self, samples, name, **labels):
        vals = [v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items())]
        self.assertTrue(vals, "no sample %s%r" % (name, labels))
        return sum(vals)

    def test_exposition_is_valid_and_counts_real_connections(self):
        d, host, port = self.start_with_metrics("--mode", "client", "--interval", "1s",
                                                "--timeout", "3s", "--workers", "2")
        clients = [self.client(d) for _ in range(3)]
        for i, c in enumerate(clients):
            c.handshake(MODE_CLIENT, 1000, 3000)
            c.roundtrip(10 + i)
        types, samples = self.scrape(host, port)

        for name, labels, _ in samples:
            fam = family_of(name, types)
            self.assertIsNotNone(fam, "sample %s has no TYPE line" % name)
            self.assertTrue(name.startswith("ringbeat_"), name)
            if types[fam] == "counter":
                self.assertTrue(name.endswith("_total"), "counter %s lacks _total" % name)
        for fam, typ in types.items():
            if typ != "histogram":
                continue
            buckets = [(float(l["le"]), v) for n, l, v in samples if n == fam + "_bucket"]
            self.assertEqual(buckets[-1][0], float("inf"), fam)
            self.assertEqual(buckets, sorted(buckets), "%s buckets not cumulative" % fam)
            self.assertEqual(buckets[-1][1], self.value(samples, fam + "_count"), fam)

        self.assertEqual(self.value(samples, "ringbeat_connections"), 3)
        self.assertEqual(self.value(samples, "ringbeat_connections", state="alive"), 3)
        self.assertEqual(self.value(samples, "ringbeat_accepted_total"), 3)
        self.assertGreaterEqual(self.value(samples, "ringbeat_frames_in_total", type="ping"), 3)
        self.assertGreaterEqual(self.value(samples, "ringbeat_frames_out_total", type="pong"), 3)
        self.assertGreaterEqual(self.value(samples, "ringbeat_frames_in_total", type="hello"), 3)
        self.assertEqual(self.value(samples, "ringbeat_workers"), 2)
        workers = {l["worker"] for n, l, _ in samples if n == "ringbeat_loop_turns_total"}
        self.assertEqual(workers, {"0", "1"})
        self.assertEqual(self.value(samples, "ringbeat_rejected_total", reason="full"), 0)

        # A goodbye from one client shows up as a close by the peer, and the gauge drops.
        clients[0].send(rbtest.close(rbtest.CLOSE_NORMAL))
        clients[0].expect_eof()
        deadline = time.monotonic() + 3.0
        while True:
            _, samples = self.scrape(host, port)
            if self.value(samples, "ringbeat_connections") == 2:
                break
            self.assertLess(time.monotonic(), deadline, "connection gauge never dropped to 2")
            time.sleep(0.05)
        self.assertEqual(self.value(samples, "ringbeat_closed_total", reason="peer"), 1)

    def test_other_paths_and_methods_are_refused(self):
        _, host, port = self.start_with_metrics()
        self.assertEqual(self.get(host, port, "/")[0], 404)
        self.assertEqual(self.get(host, port, "/metricsx")[0], 404)
        self.assertEqual(self.get(host, port, "/metrics", "POST")[0], 405)
        self.assertEqual(self.get(host, port, "/metrics?name=x")[0], 200)

    def test_an_idle_scraper_does_not_block_the_next_one(self):
        _, host, port = self.start_with_metrics()
        idle = socket.create_connection((host, port), timeout=5.0)
        try:
            t0 = time.monotonic()
            status, _, _ = self.get(host, port)  # served beside the idle one, not after it
            self.assertEqual(status, 200)
            self.assertLess(time.monotonic() - t0, 1.0)
        finally:
            idle.close()

    def test_sigterm_stops_promptly_with_an_idle_scraper_connected(self):
        d, host, port = self.start_with_metrics()
        idle = socket.create_connection((host, port), timeout=5.0)
        try:
            t0 = time.monotonic()
            d.stop(5.0)
            self.assertLess(time.monotonic() - t0, 1.5, "metrics thread delayed shutdown")
        finally:
            idle.close()


class LogFile(unittest.TestCase):
    def wait_for(self, path, pattern, timeout=5.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        m = rx.search(line)
                        if m:
                            return m
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("no /%s/ in %s within %.1f s" % (pattern, path, timeout))
            time.sleep(0.02)

    def test_sighup_reopens_the_log_file_after_rotation(self):
        tmp = tempfile.mkdtemp(prefix="ringbeat-log-")
        path = os.path.join(tmp, "ringbeatd.log")
        d = Daemon("--listen", "127.0.0.1:0", "--log-file", path, "--log-format", "json",
                   "--stats-interval", "0", listen=None)
        try:
            m = self.wait_for(path, r'"event":"listening"')
            rec = json.loads(m.string)
            self.assertRegex(rec["addr"], r"^127\.0\.0\.1:\d+$")
            os.rename(path, path + ".1")
            d.signal(signal.SIGHUP)
            self.wait_for(path, r'"event":"log_reopened"')
            d.signal(signal.SIGUSR1)
            self.wait_for(path, r'"event":"stats"')
            d.stop(5.0)
            with open(path) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            self.assertEqual(lines[-1]["event"], "stopped")
            with open(path + ".1") as f:
                old = [json.loads(l)["event"] for l in f if l.strip()]
            self.assertIn("started", old)
            self.assertNotIn("stats", old)
        finally:
            d.kill()
            for name in (path, path + ".1"):
                if os.path.exists(name):
                    os.unlink(name)
            os.rmdir(tmp)

    def test_unwritable_log_file_exits_1(self):
        rc, _, err = rbtest.run_tool([rbtest.daemon_path(), "--listen", "127.0.0.1:0",
                                      "--log-file", "/nonexistent-dir/x.log"], 5.0)
        self.assertEqual(rc, 1, err)
        self.assertIn("--log-file", err)


class ExitCodes(unittest.TestCase):
    def test_cross_flag_validation_exits_2(self):
        path = rbtest.daemon_path()
        cases = [
            (["--interval", "10s", "--timeout", "5s"], "--timeout"),
            (["--min-interval", "10s", "--max-interval", "5s"], "--min-interval"),
            (["--buffers", "100"], "--buffers"),
            (["--max-frame", "70000"], "--max-frame"),
            (["--metrics", "nowhere"], "--metrics"),
        ]
        for args, flag in cases:
            with self.subTest(args=args):
                rc, _, err = rbtest.run_tool([path, "--listen", "127.0.0.1:0"] + args, 5.0)
                self.assertEqual(rc, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(flag, err)

    def test_port_in_use_exits_1(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        try:
            port = s.getsockname()[1]
            rc, _, err = rbtest.run_tool([rbtest.daemon_path(), "--listen", "127.0.0.1:%d" % port],
                                         10.0)
            self.assertEqual(rc, 1, err)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
