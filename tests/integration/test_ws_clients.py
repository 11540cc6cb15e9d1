# test_ws_clients.py — ringbeatd with standard WebSocket clients: Python `websockets` (Debian
# python3-websockets, under /usr/bin/python3) and node `ws` (Debian node-ws).
"""Each client runs as its own process against a ringbeatd of this test (peers/*): client-mode
Ping/Pong, fragmented and large messages echoed, invalid UTF-8 (1007) and oversized (1009)
messages, the close handshake, the query parameters and the Ringbeat-* response headers, and
server-mode Pings answered by the library itself."""

import json
import os
import subprocess
import unittest

import tempfile

import rbtest
from rbtls import make_cert
from wstest import HERE, NODE_PATH, SYSTEM_PYTHON, have_node_ws, have_system_websockets, metric, scrape

FLAGS = ("--interval", "5s", "--max-frame", "60000", "--metrics", "127.0.0.1:0")


class WsStandardClientsTest(rbtest.DaemonTestCase):
    def run_peer(self, cmd, env=None, scheme="ws"):
        tls = []
        if scheme == "wss":
            tmp = tempfile.TemporaryDirectory(prefix="rb-wss-")
            self.addCleanup(tmp.cleanup)
            cert, key = make_cert(tmp.name)
            tls = ["--tls-cert", cert, "--tls-key", key]
        d = self.start_daemon(*FLAGS, *tls, listen="%s://127.0.0.1:0" % scheme)
        mport = int(d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0).group(1)
                    .rpartition(":")[2])
        args = [str(d.port)] + ([scheme] if scheme != "ws" else [])
        p = subprocess.run(cmd + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, "peer failed: %s\n%s" % (p.stdout.decode()[-2000:],
                                                                   p.stderr.decode()[-2000:]))
        return json.loads(p.stdout.decode().strip().splitlines()[-1]), scrape(mport)

    def check_headers(self, h, interval_ms, client_id_given=True):
        self.assertEqual(h["ringbeat-interval-ms"], str(interval_ms))
        self.assertEqual(h["ringbeat-timeout-ms"], str(3 * interval_ms))
        self.assertEqual(h["ringbeat-mode"], "client")
        self.assertTrue(h["ringbeat-connection-id"].isdigit())
        self.assertNotIn("sec-websocket-extensions", h)

    def check_counters(self, text):
        ws = lambda kind, direction: metric(text, "ringbeat_heartbeats_total", protocol="ws",
                                            direction=direction, kind=kind)
        self.assertGreaterEqual(ws("ping", "in"), 3)  # the client's pings ...
        self.assertGreaterEqual(ws("pong", "out"), 3)  # ... answered
        # Server mode for 4 s at 1 s: the first PING comes one interval plus the connection's
        # phase in [0, 1 s) after the upgrade, so two or three of ours, each answered.
        self.assertGreaterEqual(ws("ping", "out"), 2)  # server mode: ours ...
        self.assertGreaterEqual(ws("pong", "in"), ws("ping", "out") - 1)  # ... answered
        self.assertEqual(metric(text, "ringbeat_closed_total", protocol="ws", reason="timeout"), 0)
        self.assertEqual(metric(text, "ringbeat_closed_total", protocol="ws", reason="bad_payload"),
                         1)
        self.assertEqual(metric(text, "ringbeat_closed_total", protocol="ws", reason="too_big"), 1)

    @unittest.skipUnless(have_system_websockets(), "python3-websockets under /usr/bin/python3")
    def test_python_websockets(self):
        out, text = self.run_peer([SYSTEM_PYTHON, os.path.join(HERE, "peers", "ws_python_client.py")])
        self.check_headers(out["headers"], 1000)
        self.assertEqual([p[0] for p in out["pongs"]], [5, 0, 125])
        self.assertTrue(all(rtt < 1.0 for _, rtt in out["pongs"]))
        self.assertEqual(out["fragmented_echo"], "frag-1 frag-2 frag-3")
        self.assertTrue(out["large_echo_ok"])
        self.assertTrue(out["fragmented_binary_ok"])
        self.assertEqual(out["close"], [1000, ""])  # our Close answered with its code
        self.assertEqual(out["invalid_utf8"][0], 1007)
        self.assertEqual(out["oversized"][0], 1009)
        self.assertTrue(out["server_mode_open_after_4s"])
        self.check_counters(text)

    def test_node_ws(self):
        self.node_run("ws")

    def test_node_ws_over_tls(self):
        """node's tls module under node `ws` against wss:// (ringbeat's TLS transport)."""
        text = self.node_run("wss")
        self.assertEqual(metric(text, "ringbeat_tls_handshakes_total", result="failed"), 0)

    def node_run(self, scheme):
        node = have_node_ws()
        if not node:
            self.skipTest("node with node-ws (NODE_PATH=%s)" % NODE_PATH)
        env = dict(os.environ, NODE_PATH=NODE_PATH)
        out, text = self.run_peer([node, os.path.join(HERE, "peers", "ws_node_client.js")], env,
                                  scheme)
        self.check_headers(out["headers"], 1500)
        self.assertEqual(out["extensions"], "")
        self.assertEqual(out["pongs"], [True, True, True])
        self.assertEqual(out["fragmented_echo"], ["part one, part two", False])
        self.assertTrue(out["large_echo_ok"])
        self.assertEqual(out["close"], [4100, ""])
        self.assertEqual(out["invalid_utf8"], [1007, "invalid UTF-8"])
        self.assertEqual(out["oversized"], [1009, "message too big"])
        self.assertTrue(out["server_mode"][0])
        self.assertGreaterEqual(out["server_mode"][1], 3)
        self.check_counters(text)
        return text


if __name__ == "__main__":
    unittest.main()
