# test_client_nat.py — the smart heartbeat finds a real NAT's idle timeout, and follows it down.
"""Three network namespaces built here: the client, a NAT router, and the server side.

    client ns                router ns                         server ns
    driver(s) 10.231.1.2 --- 10.231.1.1 | 10.231.2.1 ---------- 10.231.2.2 ringbeatd
                              MASQUERADE out, INVALID dropped,
                              conntrack established timeout 12 s, tcp_loose 0

With tcp_loose 0 the router never adopts a connection it did not see open, so once the mapping of
an idle connection expires, every later packet of it is INVALID and dropped, both ways: the
connection is silently dead, as behind a carrier NAT. All rules live inside the namespaces.

The smart client (min 2 s, step 2 s, margin 1 s) must settle below 12 s, count its failures,
then hold a minute without a drop; the router's timeout then drops to 7 s, and the client must
notice, fall back and settle below 7 s. A fixed-interval client at the 2 s minimum runs beside
it through the same NAT, for the heartbeat count.

CI runs it with one success per step and one failure per probe (about 3 minutes); set
RINGBEAT_NAT_LONG=1 for the Mars counts (3 warm-up, 5 successes per step, 2 failures; about
9 minutes). Needs root, `ip netns`, iptables and conntrack (tools/install-deps.sh).
"""

import os
import re
import sys
import time
import unittest

import rbnetns
import rbtest
from rbclient import Driver
from rbtest import Daemon

PREFIX = "rbnat-"
NET_C, NET_S = "10.231.1", "10.231.2"
PORT = 7600
LONG = os.environ.get("RINGBEAT_NAT_LONG") == "1"
SMART = ["--min", 2000, "--step", 2000, "--margin", 1000, "--max", 60000, "--answer", 1000,
         "--backoff-min", 200, "--backoff-max", 1000, "--network", "nat-lab"]
if LONG:
    SMART += ["--warmup", 3, "--to-step", 5, "--to-settle", 2]  # the Mars counts
    CONVERGE_S, REFIT_S = 420, 300
else:
    SMART += ["--warmup", 1, "--to-step", 1, "--to-settle", 1]
    CONVERGE_S, REFIT_S = 150, 120
HOLD_S = 60.0






class Nat(rbnetns.NatLab):
    PREFIX, NET_C, NET_S = PREFIX, NET_C, NET_S

    def setUp(self):
        self.build_lab(12)
        s = self.ns["s"]
        self.daemon = Daemon("--mode", "client", "--interval", "2s", "--min-interval", "1s",
                             "--max-interval", "120s", "--stats-interval", "0",
                             listen="%s.2:%d" % (NET_S, PORT), prefix=("ip", "netns", "exec", s))
        self.procs.append(self.daemon)

    def client(self, *flags):
        d = Driver("%s.2:%d" % (NET_S, PORT), *flags, prefix=("ip", "netns", "exec",
                                                              self.ns["c"]))
        self.procs.append(d)
        return d

    def conntrack_timeouts(self):
        out = self.in_ns(self.ns["r"], "conntrack", "-L", "-p", "tcp", "--dport", str(PORT))
        return [int(m.group(1)) for m in re.finditer(r"^tcp\s+\d+\s+(\d+)\s+ESTABLISHED", out,
                                                    re.M)]

    def wait_stable_below(self, c, limit_ms, timeout_s, since):
        return c.wait(lambda e: e["ev"] == "interval" and e["phase"] == "stable" and
                      e["learned"] < limit_ms, timeout_s, "stable below %d ms" % limit_ms, since)

    def test_converges_below_the_nat_timeout_and_follows_it_down(self):
        smart = self.client(*SMART)
        fixed = self.client("--fixed", "--min", 2000, "--answer", 1000, "--backoff-min", 200)
        t0 = smart.wait_ev("connected", 10.0)["t"]
        fixed.wait_ev("connected", 10.0)

        # 1. Converge below 12 s.
        st = self.wait_stable_below(smart, 12000, CONVERGE_S, 0)
        converge_ms = st["t"] - t0
        fails1 = [e for e in smart.snapshot("heartbeat") if not e["ok"]]
        self.assertGreaterEqual(len(fails1), 1, "it found the edge, so it crossed it")
        self.assertGreaterEqual(st["learned"], 12000 - 2000 - 1000, "settled too low: %r" % st)
        # The router really applies the short timeout (a fresh entry counts down from 12 s).
        self.assertTrue(all(t <= 12 for t in self.conntrack_timeouts()))
        learned1 = st["learned"]

        # 2. A minute without a drop at the learned interval (from its reconnect: the probe
        # that failed took the connection with it).
        smart.wait_ev("tuned", 30.0, smart.last_index, interval=learned1)
        n = smart.last_index + 1
        time.sleep(HOLD_S)  # the observation window itself
        window = smart.snapshot(since=n)
        self.assertEqual([e for e in window if e["ev"] == "closed"], [], "dropped while stable")
        held = [e for e in window if e["ev"] == "heartbeat"]
        self.assertTrue(all(e["ok"] for e in held), "failed while stable: %r" % held)
        self.assertGreaterEqual(sum(1 for e in held if e["interval"] == learned1),
                                int(HOLD_S * 1000 / learned1) - 1, "%r" % held)
        self.assertEqual(smart.info()["learned"], learned1)

        # 3. The NAT gets stricter: 7 s.
        n = smart.count()
        self.set_nat_timeout(7)
        t1 = smart.snapshot()[-1]["t"]
        st2 = self.wait_stable_below(smart, 7000, REFIT_S, n)
        refit_ms = st2["t"] - t1
        after = smart.snapshot(since=n)
        fails2 = [e for e in after if e["ev"] == "heartbeat" and not e["ok"]]
        self.assertGreaterEqual(len(fails2), 1, "it must notice the shorter timeout")
        self.assertTrue(any(e["ev"] == "interval" and e["phase"] != "stable" for e in after),
                        "it fell back and searched again")
        self.assertGreaterEqual(st2["learned"], 7000 - 2000 - 1000)
        # Settled: after its reconnect and warm-up, two heartbeats at the new value, answered.
        smart.wait_ev("tuned", 30.0, smart.last_index, interval=st2["learned"])
        m = smart.last_index + 1
        for _ in range(2):
            smart.wait_ev("heartbeat", st2["learned"] / 1000 + 5, m, interval=st2["learned"],
                          ok=1)
            m = smart.last_index + 1
        t_end = smart.snapshot()[-1]["t"]

        # The fixed 2 s client never failed through the same NAT; count heartbeats over the
        # same period.
        self.assertEqual([e for e in fixed.snapshot("heartbeat") if not e["ok"]], [])
        beats_smart = len([e for e in smart.snapshot("heartbeat") if t0 <= e["t"] <= t_end])
        beats_fixed = len([e for e in fixed.snapshot("heartbeat") if t0 <= e["t"] <= t_end])
        self.assertLess(beats_smart, beats_fixed)
        st_smart = smart.stats()
        report = ("nat report (%s): converged below 12 s in %.1f s at %d ms with %d failures; "
                  "held %.0f s; after 12->7 s settled in %.1f s at %d ms with %d failures; "
                  "heartbeats over %.1f s: smart %d, fixed 2 s %d (%.0f%%); smart connects %d"
                  % ("long" if LONG else "short", converge_ms / 1000, learned1, len(fails1),
                     HOLD_S, refit_ms / 1000, st2["learned"], len(fails2), (t_end - t0) / 1000,
                     beats_smart, beats_fixed, 100.0 * beats_smart / beats_fixed,
                     st_smart["opened"]))
        sys.stderr.write(report + "\n")
        smart.quit()
        fixed.quit()
        self.daemon.stop()


if __name__ == "__main__":
    unittest.main()
