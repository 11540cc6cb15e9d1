# test_redis.py — one ringbeatd node against a real redis-server: events, hashes, node key, resync.
"""Presence in Redis (docs/presence.md) with the real server: each test starts its own
redis-server on a free loopback port (rbservers.RedisServer) and a ringbeatd with --redis.
Needs redis-server (Debian redis-server); python3 stdlib only."""

import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

import rbservers
import rbtest
from rbservers import wait_for
from rbtest import CLOSE, MODE_CLIENT, PING

P = "ringbeat:"


class OneNode(rbservers.ServersTestCase):
    def setUp(self):
        self.redis = self.start_redis()
        self.r = self.redis_client(self.redis)

    def test_events_in_order_with_their_fields(self):
        d = self.start_node(self.redis, "n1", "--interval", "300ms", "--log-level", "debug")
        t0 = time.time() * 1000
        c = self.client(d)
        w = c.handshake(MODE_CLIENT, 300, 1500, b"alice")
        conn = str(w["conn_id"])
        h = wait_for(lambda: self.r.hgetall(P + "presence:alice"), 3, "presence hash")
        self.assertEqual((h["node"], h["conn"], h["state"]), ("n1", conn, "alive"))
        self.assertLessEqual(abs(int(h["since_ms"]) - t0), 2000)
        # Silent for more than one interval and its grace: suspect (the mark lost a unit).
        wait_for(lambda: self.r.hgetall(P + "presence:alice").get("state") == "suspect", 3,
                 "suspect state in the hash")
        c.send(rbtest.ping(7))
        c.expect(rbtest.PONG)
        wait_for(lambda: self.r.hgetall(P + "presence:alice").get("state") == "alive", 3,
                 "alive again")
        c.send(rbtest.close(1))
        wait_for(lambda: not self.r("EXISTS", P + "presence:alice"), 3, "hash removed at close")
        ev = wait_for(lambda: (lambda e: e if len(e) >= 4 else None)(self.r.xrange(P + "events")),
                      3, "four events")
        self.assertEqual([e[1]["event"] for e in ev], ["open", "suspect", "alive", "close"])
        for _, f in ev:
            self.assertEqual(f["node"], "n1")
            self.assertEqual(f["conn"], conn)
            self.assertEqual(f["client"], "alice")
            self.assertEqual(set(f), {"event", "node", "conn", "client", "reason", "t_ms"})
        self.assertEqual([e[1]["reason"] for e in ev], ["", "", "", "peer"])
        times = [int(e[1]["t_ms"]) for e in ev]
        self.assertEqual(times, sorted(times))
        self.assertLessEqual(abs(times[0] - t0), 2000)
        # Trimmed with MAXLEN ~: the stream is created with the default limit in force.
        m = rbservers.metrics(d.metrics_port)
        self.assertEqual(m["ringbeat_redis_up"], 1)
        self.assertEqual(m["ringbeat_redis_events_written_total"], 4)
        self.assertEqual(m['ringbeat_redis_events_dropped_total{why="queue_full"}'], 0)
        # The node's set of clients is empty again and the node key carries a TTL.
        self.assertEqual(self.r("SCARD", P + "clients:n1"), 0)
        self.assertGreater(self.r("PTTL", P + "node:n1"), 0)

    def test_a_connection_without_client_id_has_events_but_no_hash(self):
        d = self.start_node(self.redis, "n1")
        c = self.client(d)
        c.send(rbtest.ping(1))  # opens with the defaults, no HELLO, no id
        c.expect(rbtest.PONG)
        c.close()
        ev = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(self.r.xrange(P + "events")),
                      3, "open and close")
        self.assertEqual([(e[1]["event"], e[1]["client"]) for e in ev],
                         [("open", ""), ("close", "")])
        self.assertEqual(rbservers.client_ids_of_keys(self.r.scan_keys(P + "presence:*")), [])

    def test_silenced_client_hash_gone_at_its_timeout(self):
        d = self.start_node(self.redis, "n1", "--interval", "200ms", "--stats-interval", "0")
        c = self.client(d)
        c.handshake(MODE_CLIENT, 250, 1000, b"quiet")
        t_last = c.t_last_sent
        wait_for(lambda: self.r("EXISTS", P + "presence:quiet"), 3, "hash")
        wait_for(lambda: not self.r("EXISTS", P + "presence:quiet"), 4, "hash gone", step=0.005)
        gone_after = time.monotonic() - t_last
        # Dead at the timeout (1 s) plus a tick, then one pipelined write: well within 0.5 s.
        self.assertGreaterEqual(gone_after, 0.99)
        self.assertLess(gone_after, 1.5)
        f, _ = c.wait_close(2.0, allow=(PING,))
        self.assertEqual(f.close_code, rbtest.CLOSE_TIMEOUT)
        ev = self.r.xrange(P + "events")
        self.assertEqual(ev[-1][1]["event"], "close")
        self.assertEqual(ev[-1][1]["reason"], "timeout")

    def test_node_key_expires_after_kill9_and_a_restart_clears_what_it_left(self):
        d = self.start_node(self.redis, "n1", "--redis-node-ttl", "1s")
        c = self.client(d)
        c.handshake(MODE_CLIENT, 1000, 3000, b"left-behind")
        wait_for(lambda: self.r("EXISTS", P + "presence:left-behind"), 3, "hash")
        self.assertTrue(0 < self.r("PTTL", P + "node:n1") <= 1000)
        d.killed = True
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        t_kill = time.monotonic()
        wait_for(lambda: not self.r("EXISTS", P + "node:n1"), 3, "node key expired", step=0.01)
        self.assertLess(time.monotonic() - t_kill, 1.6)
        # The hash stays (nobody said goodbye) but names a node whose key is gone: stale.
        self.assertEqual(self.r.hgetall(P + "presence:left-behind")["node"], "n1")
        c.close()
        # A node starting under the same name removes what the earlier run left.
        d2 = self.start_node(self.redis, "n1")
        d2.wait_line(r"info redis_resync node=n1", 5)
        wait_for(lambda: not self.r("EXISTS", P + "presence:left-behind"), 3, "stale hash gone")
        self.assertEqual(self.r("EXISTS", P + "node:n1"), 1)

    def test_a_dead_node_is_collected_by_a_live_one(self):
        d = self.start_node(self.redis, "dead", "--redis-node-ttl", "1s")
        c = self.client(d)
        c.handshake(MODE_CLIENT, 1000, 3000, b"orphan")
        wait_for(lambda: self.r("EXISTS", P + "presence:orphan"), 3, "hash")
        d.killed = True
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        c.close()
        self.start_node(self.redis, "alive", "--redis-node-ttl", "1s")
        # The live node's refresh (every third of its TTL) collects nodes whose key expired.
        wait_for(lambda: not self.r("EXISTS", P + "presence:orphan"), 4, "orphan hash collected")
        wait_for(lambda: not self.r("SISMEMBER", P + "nodes", "dead"), 2, "dead node unregistered")

    def test_inbox_delivers_and_counts_undeliverable(self):
        d = self.start_node(self.redis, "n1")
        c = self.client(d)
        w = c.handshake(MODE_CLIENT, 1000, 3000, b"bob")
        wait_for(lambda: self.r("EXISTS", P + "presence:bob"), 3, "hash")
        self.r("XADD", P + "inbox:n1", "*", "client", "bob", "data", b"\x00hello\xff")
        self.assertEqual(c.expect(rbtest.DATA, 3).payload, b"\x00hello\xff")
        self.r("XADD", P + "inbox:n1", "*", "conn", str(w["conn_id"]), "data", "by conn")
        self.assertEqual(c.expect(rbtest.DATA, 3).payload, b"by conn")
        self.r("XADD", P + "inbox:n1", "*", "client", "nobody", "data", "x")
        self.r("XADD", P + "inbox:n1", "*", "conn", "12345", "data", "x")
        self.r("XADD", P + "inbox:n1", "*", "something", "else")
        m = wait_for(lambda: (lambda m: m if m['ringbeat_inbox_messages_total{result="malformed"}']
                              else None)(rbservers.metrics(d.metrics_port)), 3, "inbox counters")
        self.assertEqual(m['ringbeat_inbox_messages_total{result="delivered"}'], 2)
        self.assertEqual(m['ringbeat_inbox_messages_total{result="undeliverable"}'], 2)
        self.assertEqual(m['ringbeat_inbox_messages_total{result="malformed"}'], 1)
        # Every entry was acknowledged, and the stream trimmed to the last one read.
        groups = self.r("XINFO", "GROUPS", P + "inbox:n1")
        g = {groups[0][i].decode(): groups[0][i + 1] for i in range(0, len(groups[0]), 2)}
        self.assertEqual(g["pending"], 0)
        self.assertEqual(self.r("XLEN", P + "inbox:n1"), 1)

    def test_single_session_on_one_node(self):
        d = self.start_node(self.redis, "n1", "--single-session")
        a = self.client(d)
        wa = a.handshake(MODE_CLIENT, 1000, 3000, b"carol")
        b = self.client(d)
        wb = b.handshake(MODE_CLIENT, 1000, 3000, b"carol")
        a.expect_close(rbtest.CLOSE_REPLACED, 3)
        self.assertAlmostEqual(b.roundtrip(5), 0, delta=1)
        h = wait_for(lambda: (lambda h: h if h.get("conn") == str(wb["conn_id"]) else None)(
            self.r.hgetall(P + "presence:carol")), 3, "hash names the newer session")
        self.assertEqual(h["node"], "n1")
        ev = wait_for(lambda: (lambda e: e if len(e) >= 3 else None)(self.r.xrange(P + "events")),
                      3, "events")
        closes = [f for _, f in ev if f["event"] == "close"]
        self.assertEqual([(f["conn"], f["reason"]) for f in closes],
                         [(str(wa["conn_id"]), "replaced")])

    def test_redis_restart_under_2000_connections(self):
        """Redis goes away (with its data saved) and comes back: no heartbeat missed, and after
        the resync the hashes are exactly the sessions that are open (those closed during the
        outage gone, those opened during it there)."""
        load = rbtest.load_path()
        if not load:
            self.skipTest("ringbeat-load not built")
        d = self.start_node(self.redis, "n1", "--stats-interval", "0", "--accept-rate", "0")
        out = tempfile.NamedTemporaryFile(prefix="rb_load_", suffix=".json", delete=False)
        out.close()
        self.addCleanup(os.unlink, out.name)
        lp = subprocess.Popen([load, "--target", "127.0.0.1:%d" % d.port, "--connections", "2000",
                               "--rate", "4000", "--duration", "9s", "--mode", "client",
                               "--interval", "1s", "--timeout", "3s", "--quiet",
                               "--json", out.name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lp.stderr.close)
        self.addCleanup(lambda: lp.poll() is None and lp.kill())
        wait_for(lambda: rbservers.metrics(d.metrics_port).get(
            'ringbeat_presence_sessions{client_id="yes"}', 0) >= 2000, 10, "2000 sessions")
        py = [self.client(d) for _ in range(20)]
        for i, c in enumerate(py):  # these do not heartbeat: a timeout longer than the test
            c.handshake(MODE_CLIENT, 10000, 60000, b"py-%d" % i)
        wait_for(lambda: self.r("SCARD", P + "clients:n1") == 2020, 5, "2020 clients in Redis")
        self.redis.stop(save=True)
        wait_for(lambda: rbservers.metrics(d.metrics_port)["ringbeat_redis_up"] == 0, 5, "down")
        resyncs0 = rbservers.metrics(d.metrics_port)["ringbeat_redis_resyncs_total"]
        for c in py[:10]:  # closed while Redis is away: their hashes are in the saved data
            c.send(rbtest.close(1))
            c.close()
        fresh = [self.client(d) for _ in range(5)]
        for i, c in enumerate(fresh):
            c.handshake(MODE_CLIENT, 10000, 60000, b"fresh-%d" % i)
        for c in py[10:] + fresh:
            c.roundtrip(1)  # heartbeats go on while Redis is down
        time.sleep(1.0)
        self.redis.start()
        r = self.redis.client()
        self.addCleanup(r.close)
        self.assertEqual(r("EXISTS", P + "presence:py-0"), 1)  # the saved data came back
        wait_for(lambda: rbservers.metrics(d.metrics_port)["ringbeat_redis_resyncs_total"]
                 > resyncs0, 10, "a resync after the restart")
        want = sorted(["load-%d" % i for i in range(2000)] + ["py-%d" % i for i in range(10, 20)]
                      + ["fresh-%d" % i for i in range(5)])
        got = wait_for(lambda: (lambda k: k if k == want else None)(
            rbservers.client_ids_of_keys(r.scan_keys(P + "presence:*"))), 5,
            "hashes equal the open sessions")
        self.assertEqual(len(got), 2015)
        for cid in ("load-0", "load-1999", "py-15", "fresh-4"):
            self.assertEqual(r.hgetall(P + "presence:" + cid)["node"], "n1")
        self.assertEqual(r("SCARD", P + "clients:n1"), 2015)
        rc = lp.wait(30)
        err = lp.stderr.read().decode()
        with open(out.name) as f:
            res = json.load(f)
        self.assertEqual(rc, 0, err)
        self.assertEqual(res["false_deaths"], 0)
        self.assertEqual(res["connections_established"], 2000)
        self.assertEqual(res["closes_by_code"], {})  # the server closed none of them
        self.assertEqual(res["closed_eof"] + res["closed_reset"], 0)
        # Every PING answered, but for the last one of each connection still in flight.
        self.assertGreaterEqual(res["pongs_received"], res["pings_sent"] - 2000)
        self.assertGreater(res["pings_sent"], 2000 * 6)
        m = rbservers.metrics(d.metrics_port)
        self.assertEqual(m['ringbeat_closed_total{protocol="v1",reason="timeout"}'], 0)

    def test_redis_stalled_queue_overflows_then_resync(self):
        """Redis stops answering (SIGSTOP) longer than the writer's 5 s reply timeout, with a
        64-event queue: heartbeats go on, events are dropped and counted, and once Redis answers
        again the node rewrites its state and the hashes are exactly the open sessions."""
        load = rbtest.load_path()
        if not load:
            self.skipTest("ringbeat-load not built")
        d = self.start_node(self.redis, "n1", "--redis-queue", "64", "--stats-interval", "0")
        lp = subprocess.Popen([load, "--target", "127.0.0.1:%d" % d.port, "--connections", "300",
                               "--rate", "3000", "--duration", "14s", "--mode", "client",
                               "--interval", "1s", "--timeout", "3s", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: lp.poll() is None and lp.kill())
        wait_for(lambda: self.r("SCARD", P + "clients:n1") == 300, 10, "300 clients in Redis")
        old = [self.client(d) for _ in range(20)]
        for i, c in enumerate(old):
            c.handshake(MODE_CLIENT, 10000, 60000, b"old-%d" % i)
        wait_for(lambda: self.r("SCARD", P + "clients:n1") == 320, 5, "320 clients")
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            for c in old[:10]:
                c.send(rbtest.close(1))
                c.close()
            new = [self.client(d) for _ in range(100)]
            for i, c in enumerate(new):
                c.handshake(MODE_CLIENT, 10000, 60000, b"new-%d" % i)
            wait_for(lambda: rbservers.metrics(d.metrics_port)[
                'ringbeat_redis_events_dropped_total{why="queue_full"}'] > 0, 5, "drops")
            wait_for(lambda: rbservers.metrics(d.metrics_port)["ringbeat_redis_up"] == 0, 8,
                     "the writer gave up on the stalled link")
            for c in old[10:] + new[:5]:
                c.roundtrip(3)  # the engine does not wait for Redis
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        want = sorted(["load-%d" % i for i in range(300)] + ["old-%d" % i for i in range(10, 20)]
                      + ["new-%d" % i for i in range(100)])
        wait_for(lambda: rbservers.client_ids_of_keys(self.r.scan_keys(P + "presence:*")) == want,
                 15, "hashes equal the open sessions after the resync")
        m = rbservers.metrics(d.metrics_port)
        self.assertGreaterEqual(m["ringbeat_redis_resyncs_total"], 2)
        self.assertEqual(m["ringbeat_redis_up"], 1)
        self.assertEqual(lp.wait(30), 0)  # no false death, every connection established


if __name__ == "__main__":
    unittest.main()
