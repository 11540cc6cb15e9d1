# test_cluster.py — three ringbeatd nodes behind a real haproxy (PROXY v2) sharing one Redis.
"""The deployment of docs/operations.md, run for real: redis-server, three ringbeatd nodes with
--proxy-protocol and --single-session, and haproxy with docs/examples/haproxy.cfg (leastconn,
send-proxy-v2, a protocol health check). Clients connect to HAProxy from distinct loopback
source addresses (127.0.1.x), so the address each node sees in the PROXY header is known.
Needs redis-server and haproxy; python3 stdlib only."""

import socket
import struct
import subprocess
import unittest

import rbservers
import rbtest
from rbservers import wait_for
from rbtest import MODE_CLIENT

P = "ringbeat:"
PER_IP = 3  # --max-conns-per-ip on every node


def v2_header(src, sport, dst="127.0.0.1", dport=7600):
    """A PROXY v2 header for a TCP over IPv4 connection from src:sport."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return sig + b"\x21\x11" + struct.pack(">H", len(body)) + body


class Cluster(rbservers.ServersTestCase):
    def setUp(self):
        self.redis = self.start_redis()
        self.r = self.redis_client(self.redis)
        self.nodes = [self.start_node(self.redis, "node%d" % i, "--proxy-protocol",
                                      "--single-session", "--max-conns-per-ip", str(PER_IP),
                                      "--log-level", "debug", "--stats-interval", "0")
                      for i in (1, 2, 3)]
        self.hap = self.start_haproxy([d.port for d in self.nodes])
        self.hap.wait_all_up(3)
        self.src = 0

    def via_haproxy(self, source=None):
        """A client through HAProxy from its own source address (unless one is given)."""
        if source is None:
            self.src += 1
            source = "127.0.1.%d" % self.src
        c = rbtest.Client(self.hap.port, source=source)
        self.addCleanup(c.close)
        return c

    def node_of(self, conn_id, client_id):
        h = wait_for(lambda: (lambda h: h if h.get("conn") == str(conn_id) else None)(
            self.r.hgetall(P + "presence:" + client_id)), 3, "hash of " + client_id)
        return h["node"]

    def test_spread_presence_and_peer_addresses(self):
        clients = {}
        for i in range(30):
            c = self.via_haproxy()
            w = c.handshake(MODE_CLIENT, 1000, 5000, b"user-%02d" % i)
            clients["user-%02d" % i] = (c, w["conn_id"], "127.0.1.%d" % self.src)
        by_node = {}
        for cid, (c, conn, src) in clients.items():
            node = self.node_of(conn, cid)
            by_node.setdefault(node, []).append((cid, conn, src))
        # leastconn spreads them evenly over the three nodes (10 each, give or take one).
        self.assertEqual(sorted(by_node), ["node1", "node2", "node3"])
        for node, members in by_node.items():
            self.assertGreaterEqual(len(members), 9, by_node)
            d = self.nodes[int(node[-1]) - 1]
            for cid, conn, src in members:
                # on_open's peer (and the log) is the client's address from the PROXY header.
                peer = rbservers.parse_open_peer(d, conn)
                self.assertEqual(peer.rpartition(":")[0], src)
            m = rbservers.metrics(d.metrics_port)
            self.assertEqual(m['ringbeat_presence_sessions{client_id="yes"}'], len(members))
        self.assertEqual(len(self.r.scan_keys(P + "presence:*")), 30)
        # The health checks (PROXY LOCAL) are answered but never published.
        for d in self.nodes:
            d.wait_line(r"conn_open conn=\d+ peer=127\.0\.0\.1:\d+ client=\"\" proxy_local=1", 5)
        ev = self.r.xrange(P + "events")
        self.assertEqual(sorted(f["client"] for _, f in ev if f["event"] == "open"),
                         sorted(clients))

    def test_per_ip_limit_counts_the_client_not_haproxy(self):
        # 3 nodes x PER_IP from one client address fit; the next one from it does not...
        same = [self.via_haproxy(source="127.0.2.1") for _ in range(3 * PER_IP)]
        for i, c in enumerate(same):
            c.handshake(MODE_CLIENT, 1000, 5000, b"same-%d" % i)
        extra = self.via_haproxy(source="127.0.2.1")
        extra.send(rbtest.hello(MODE_CLIENT, 1000, 5000, b"same-extra"))
        f, _ = extra.wait_close(3)
        self.assertEqual(f.close_code, rbtest.CLOSE_FULL)
        # ... while other addresses, all arriving from HAProxy's one address, still do.
        for i in range(3 * PER_IP):
            c = self.via_haproxy(source="127.0.2.%d" % (10 + i))
            c.handshake(MODE_CLIENT, 1000, 5000, b"other-%d" % i)
        rejected = sum(rbservers.metrics(d.metrics_port)['ringbeat_rejected_total{reason="per_ip"}']
                       for d in self.nodes)
        self.assertEqual(rejected, 1)

    def test_inbox_message_reaches_the_client_through_haproxy(self):
        c = self.via_haproxy()
        w = c.handshake(MODE_CLIENT, 1000, 5000, b"dave")
        node = self.node_of(w["conn_id"], "dave")
        p = subprocess.run([rbservers.SEND_SCRIPT, "dave", "hi dave", "-p", str(self.redis.port)],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.split()[0], node)
        self.assertEqual(c.expect(rbtest.DATA, 3).payload, b"hi dave")
        p = subprocess.run([rbservers.SEND_SCRIPT, "nobody", "x", "-p", str(self.redis.port)],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("offline", p.stderr)

    def test_single_session_across_nodes(self):
        a = self.via_haproxy()
        wa = a.handshake(MODE_CLIENT, 1000, 5000, b"erin")
        node_a = self.node_of(wa["conn_id"], "erin")
        b = self.via_haproxy()  # leastconn: another node (node_a holds one more connection)
        wb = b.handshake(MODE_CLIENT, 1000, 5000, b"erin")
        a.expect_close(rbtest.CLOSE_REPLACED, 5)
        node_b = self.node_of(wb["conn_id"], "erin")
        self.assertNotEqual(node_a, node_b)
        b.roundtrip(3)
        closes = wait_for(lambda: [f for _, f in self.r.xrange(P + "events")
                                   if f["event"] == "close" and f["client"] == "erin"], 3,
                          "the replaced close event")
        self.assertEqual([(f["node"], f["conn"], f["reason"]) for f in closes],
                         [(node_a, str(wa["conn_id"]), "replaced")])
        h = self.r.hgetall(P + "presence:erin")
        self.assertEqual((h["node"], h["conn"]), (node_b, str(wb["conn_id"])))
        # Exactly one session left across the three nodes.
        total = sum(rbservers.metrics(d.metrics_port)['ringbeat_presence_sessions{client_id="yes"}']
                    for d in self.nodes)
        self.assertEqual(total, 1)
        m = rbservers.metrics(self.nodes[int(node_a[-1]) - 1].metrics_port)
        self.assertEqual(m['ringbeat_sessions_replaced_total{where="other_node"}'], 1)

    def test_header_missing_malformed_or_from_elsewhere_is_closed(self):
        d = self.nodes[0]
        # No header: the first bytes are a HELLO.
        c = self.client(d)
        c.send(rbtest.hello(MODE_CLIENT, 1000, 5000, b"nohdr"))
        f, _ = c.wait_close(3)
        self.assertEqual(f.close_code, rbtest.CLOSE_PROTOCOL)
        # A v1 line that is not one.
        c = rbtest.Client(d.port, proxy_header=b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")
        self.addCleanup(c.close)
        f, _ = c.wait_close(3)
        self.assertEqual(f.close_code, rbtest.CLOSE_PROTOCOL)
        # A valid header sent directly from loopback (an allowed source) works, split anywhere.
        c = rbtest.Client(d.port)
        self.addCleanup(c.close)
        c.send_bytewise(v2_header("203.0.113.9", 4242), pause=0.002)
        w = c.handshake(MODE_CLIENT, 1000, 5000, b"direct")
        self.assertEqual(rbservers.parse_open_peer(d, w["conn_id"]), "203.0.113.9:4242")
        m = rbservers.metrics(d.metrics_port)
        self.assertEqual(m['ringbeat_proxy_refused_total{why="header"}'], 2)
        # A node that trusts only 10.0.0.0/8 closes a loopback connection before reading it.
        strict = self.start_node(self.redis, "strict", "--proxy-protocol", "--proxy-from",
                                 "10.0.0.0/8")
        c = rbtest.Client(strict.port, proxy_header=v2_header("203.0.113.9", 1))
        self.addCleanup(c.close)
        f, _ = c.wait_close(3)
        self.assertEqual(f.close_code, rbtest.CLOSE_PROTOCOL)
        m = rbservers.metrics(strict.metrics_port)
        self.assertEqual(m['ringbeat_proxy_refused_total{why="source"}'], 1)
        self.assertEqual(m['ringbeat_opened_total{protocol="v1"}'], 0)



if __name__ == "__main__":
    unittest.main()
