# test_no_false_death.py — peers that answer every PING are never declared dead, even on a starved server.
"""No false death from the server's own backlog (issue 12, part 2).

The server gets a receive buffer ring of 2 buffers (ENOBUFS on most turns: receives wait in the
re-arm queue) and 3,000 server-mode peers (ringbeat-load) that answer every PING, at a 1 s
interval with the tightest timeout a HELLO may ask for that still has a PING in it: 2 s. Every
one of them must live: 0 CLOSE(2) on both sides, while the server's ENOBUFS counter shows the
starvation really happened.

Before the fix, 10-20 of the 3,000 died each run (0.5%): the spread first PING (one interval
plus a phase in [0, interval)) went out as late as the tick of the death itself, leaving the peer
no time to answer. About 12 s. Stalled: the same for a server that stalls (SIGSTOP) mid-hold, about 12 s.
"""

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import rbtest
from rbtest import DaemonTestCase

CONNS = 3000


class Starved(DaemonTestCase):
    def test_answering_peers_live_with_two_receive_buffers(self):
        load = rbtest.load_path()
        if not load:
            raise unittest.SkipTest("ringbeat-load is not built (RINGBEAT_LOAD)")
        with socket_port() as mport:
            d = self.start_daemon("--buffers", "2", "--buffer-size", "64", "--workers", "1",
                                  "--interval", "1s", "--timeout", "2s", "--min-interval", "1s",
                                  "--stats-interval", "0", "--metrics", "127.0.0.1:%d" % mport)
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "load.json")
                p = subprocess.run([load, "--target", "127.0.0.1:%d" % d.port, "--connections",
                                    str(CONNS), "--rate", "3000", "--duration", "10s", "--mode",
                                    "server", "--interval", "1s", "--timeout", "2s", "--quiet",
                                    "--json", out], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=60)
                with open(out) as f:
                    res = json.load(f)
            metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
                                             timeout=5).read().decode()
        self.assertEqual(res["connections_established"], CONNS, p.stdout)
        self.assertGreater(res["pings_received"], CONNS * 5, "the server did PING")
        enobufs = int(re.search(r"^ringbeat_enobufs_total (\d+)", metrics, re.M).group(1))
        self.assertGreater(enobufs, 100, "the server was not starved of receive buffers")
        timeouts = sum(int(v) for v in re.findall(
            r'^ringbeat_closed_total\{protocol="\w+",reason="timeout"\} (\d+)', metrics, re.M))
        self.assertEqual(res["false_deaths"], 0, p.stdout)
        self.assertEqual(timeouts, 0, "server-side timeouts")
        self.assertEqual(p.returncode, 0, p.stdout)
        print("starved server: %d ENOBUFS, %d PINGs answered, 0 false deaths of %d"
              % (enobufs, res["pongs_sent"], CONNS))


class Stalled(DaemonTestCase):
    """The server itself stalls (SIGSTOP 2.5 s, timeout 3 s) under 5,000 answering peers: on
    SIGCONT every PONG sent meanwhile waits in its socket and many PING points passed unsent.
    Nobody may die: the death path reaps until nothing is left, and a death within a timeout of
    a late turn gets a PING and half an interval once. Before: 4,852 of 5,000 died."""

    def test_a_stalled_server_kills_nobody(self):
        load = rbtest.load_path()
        if not load:
            raise unittest.SkipTest("ringbeat-load is not built (RINGBEAT_LOAD)")
        with socket_port() as mport:
            d = self.start_daemon("--workers", "1", "--interval", "1s", "--timeout", "3s",
                                  "--stats-interval", "0", "--metrics", "127.0.0.1:%d" % mport)
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "load.json")
                lp = subprocess.Popen([load, "--target", "127.0.0.1:%d" % d.port,
                                       "--connections", "5000", "--rate", "5000", "--duration",
                                       "10s", "--mode", "server", "--interval", "1s", "--timeout",
                                       "3s", "--quiet", "--json", out], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
                try:
                    time.sleep(5.0)  # ramp (1 s) and a few intervals of steady PINGs
                    d.signal(signal.SIGSTOP)
                    time.sleep(2.5)
                finally:
                    d.signal(signal.SIGCONT)
                stdout, _ = lp.communicate(timeout=60)
                with open(out) as f:
                    res = json.load(f)
            metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
                                             timeout=5).read().decode()
        self.assertEqual(res["connections_established"], 5000, stdout)
        self.assertEqual(res["false_deaths"], 0, stdout)
        postponed = int(re.search(r"^ringbeat_deaths_postponed_total (\d+)", metrics,
                                  re.M).group(1))
        self.assertGreater(postponed, 0, "the stall made no death wait: it did not bite")
        self.assertEqual(lp.returncode, 0, stdout)
        print("stalled server: %d deaths postponed, 0 false deaths of 5000" % postponed)


class socket_port:
    """A free loopback TCP port for /metrics (bound and released: ephemeral range clash-free)."""

    def __enter__(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    unittest.main()
