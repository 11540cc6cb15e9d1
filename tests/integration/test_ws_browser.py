# test_ws_browser.py — headless Chromium (Debian `chromium`) holds 200 WebSockets to ringbeatd
# in server mode (ws:// and wss://); the browser's own Pongs keep them alive, and SIGSTOP makes all
# 200 time out.
"""No page code answers the server's Pings: the browser does it by itself (the page only opens
the sockets). ringbeatd's /metrics must show the Pongs, no close for 10 s, and after SIGSTOP of
the browser's process group every one of the 200 closed at its timeout, within the tick plus
scheduling slack (the detection lateness histogram). The browser runs in its own process group
and is killed with SIGKILL whatever happens."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import rbtest
from rbtls import make_cert
from wstest import metric, scrape

N = 200
INTERVAL_S, TIMEOUT_S, TICK_MS = 1.0, 3.0, 10

PAGE = """<!doctype html><meta charset="utf-8"><title>ringbeat ws</title>
<script>
// Opens the sockets and does nothing else: no onmessage, no ping code.
const sockets = [];
for (let i = 0; i < %(n)d; i++)
  sockets.push(new WebSocket("%(scheme)s://127.0.0.1:%(port)d/hb?id=tab-" + i));
</script>
"""


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class WsChromiumTest(rbtest.DaemonTestCase):
    @unittest.skipUnless(chromium(), "Debian chromium is not installed")
    def test_200_browser_websockets_answer_pings_and_die_on_sigstop(self):
        self.browser_run("ws")

    @unittest.skipUnless(chromium(), "Debian chromium is not installed")
    def test_200_browser_websockets_over_tls(self):
        """The same over wss:// (ringbeat's TLS transport; a test certificate the browser is told
        to accept): the browser's Pongs arrive through our record layer."""
        self.browser_run("wss")

    def browser_run(self, scheme):
        tmp = tempfile.mkdtemp(prefix="rb-chromium-")
        self.addCleanup(shutil.rmtree, tmp, True)
        tls = []
        if scheme == "wss":
            cert, key = make_cert(tmp)
            tls = ["--tls-cert", cert, "--tls-key", key]
        d = self.start_daemon("--interval", "1s", "--timeout", "3s", "--tick", "%dms" % TICK_MS,
                              "--mode", "server", "--ws-path", "/hb", "--metrics", "127.0.0.1:0",
                              *tls, listen="%s://127.0.0.1:0" % scheme)
        mport = int(d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0).group(1)
                    .rpartition(":")[2])
        page = os.path.join(tmp, "page.html")
        with open(page, "w") as f:
            f.write(PAGE % {"n": N, "port": d.port, "scheme": scheme})
        browser = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--ignore-certificate-errors",
             "--user-data-dir=" + os.path.join(tmp, "profile"), "file://" + page],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: SIGSTOP/SIGKILL reach every process

        def kill_browser():
            try:
                os.killpg(browser.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            browser.wait(10)
        self.addCleanup(kill_browser)

        def sample(name, **labels):
            return metric(scrape(mport), name, **labels)

        deadline = time.monotonic() + 30
        while sample("ringbeat_protocol_connections", protocol="ws") != N:
            self.assertLess(time.monotonic(), deadline, "the browser did not open %d sockets" % N)
            self.assertIsNone(browser.poll(), "chromium exited")
            time.sleep(0.2)
        text = scrape(mport)
        pongs0 = metric(text, "ringbeat_heartbeats_total", protocol="ws", direction="in",
                        kind="pong")
        self.assertEqual(metric(text, "ringbeat_opened_total", protocol="ws"), N)
        # 10 s: every socket is pinged about ten times and the browser answers each Ping.
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            time.sleep(1)
            self.assertEqual(sample("ringbeat_protocol_connections", protocol="ws"), N)
        text = scrape(mport)
        pongs = metric(text, "ringbeat_heartbeats_total", protocol="ws", direction="in",
                       kind="pong") - pongs0
        pings = metric(text, "ringbeat_heartbeats_total", protocol="ws", direction="out",
                       kind="ping")
        self.assertGreaterEqual(pongs, N * 8, "Pongs from the browser in 10 s")
        self.assertGreaterEqual(metric(text, "ringbeat_heartbeats_total", protocol="ws",
                                       direction="in", kind="pong"), pings - N)
        self.assertEqual(metric(text, "ringbeat_pong_unmatched_total"), 0)
        total_closed = sum(metric(text, "ringbeat_closed_total", protocol="ws", reason=r) or 0
                           for r in ("normal", "timeout", "protocol", "peer", "eof", "reset"))
        self.assertEqual(total_closed, 0)

        os.killpg(browser.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        first_close = None
        deadline = t_stop + TIMEOUT_S + 5
        while True:
            conns = sample("ringbeat_protocol_connections", protocol="ws")
            now = time.monotonic()
            if conns < N and first_close is None:
                first_close = now
            if conns == 0:
                break
            self.assertLess(now, deadline, "%d sockets still open %.1f s after SIGSTOP"
                            % (conns, now - t_stop))
            time.sleep(0.05)
        t_all = time.monotonic()
        # The last frame of each came at most an interval and a half before the stop.
        self.assertGreaterEqual(first_close - t_stop, TIMEOUT_S - 1.5 * INTERVAL_S - 0.1)
        self.assertLessEqual(t_all - t_stop, TIMEOUT_S + 0.5)
        text = scrape(mport)
        self.assertEqual(metric(text, "ringbeat_closed_total", protocol="ws", reason="timeout"), N)
        # Each one at its timeout: detection minus (last frame + timeout) within tick + slack.
        within = metric(text, "ringbeat_detection_lateness_seconds_bucket", le="0.02")
        self.assertEqual(within, N, "detections later than 20 ms:\n%s"
                         % "\n".join(l for l in text.splitlines() if "lateness" in l))
        if scheme == "wss":
            self.assertEqual(metric(text, "ringbeat_tls_handshakes_total", result="failed"), 0)
            self.assertGreaterEqual((metric(text, "ringbeat_tls_handshakes_total", result="full") or 0)
                                    + (metric(text, "ringbeat_tls_handshakes_total",
                                              result="resumed") or 0), N)


if __name__ == "__main__":
    unittest.main()
