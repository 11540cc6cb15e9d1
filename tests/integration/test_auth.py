# test_auth.py — who may claim a client id: tokens in the HELLO, refusals, key rotation.
"""ringbeatd --auth-secret-file with tokens minted by ringbeat-token (docs/presence.md). The
tests that need Redis start their own redis-server. python3 stdlib only."""

import os
import signal
import subprocess
import tempfile
import time
import unittest

import rbservers
import rbtest
from rbservers import wait_for
from rbtest import MODE_CLIENT

KEY_A = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
KEY_B = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
P = "ringbeat:"


def write_keys(path, *keys):
    with open(path + ".tmp", "w") as f:
        f.write("# newest first\n" + "".join(k + "\n" for k in keys))
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


class Tokens(rbservers.ServersTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="rb_auth_")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        self.keys = os.path.join(self.dir, "keys")
        write_keys(self.keys, KEY_A)
        self.tool = rbservers.tool_path("ringbeat-token")

    def mint(self, client, *extra, keys=None):
        p = subprocess.run([self.tool, "--secret-file", keys or self.keys, "--client", client,
                            *extra], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    def refused(self, d, hello_frame):
        c = self.client(d)
        c.send(hello_frame)
        c.expect_close(rbtest.CLOSE_UNAUTHORIZED, 3)

    def test_missing_malformed_forged_expired_are_refused_and_counted(self):
        d = self.start_daemon("--auth-secret-file", self.keys, "--metrics", "127.0.0.1:0")
        mport = int(d.wait_line(r"metrics_listening addr=\S+:(\d+)").group(1))
        good = self.mint("alice")
        c = self.client(d)
        self.assertGreater(c.handshake(MODE_CLIENT, 1000, 3000, b"alice", token=good)["conn_id"], 0)
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"alice"))          # missing
        self.refused(d, rbtest.ping(1))                                          # no HELLO at all
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"alice", token="12.x"))  # malformed
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"mallory", token=good))  # forged
        other = self.mint("alice", keys=self.write_other())                       # forged (key)
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"alice", token=other))
        expired = self.mint("alice", "--expiry", str(int(time.time()) - 1))
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"alice", token=expired))
        m = rbservers.metrics(mport)
        self.assertEqual(m['ringbeat_auth_refused_total{why="missing"}'], 2)
        self.assertEqual(m['ringbeat_auth_refused_total{why="malformed"}'], 1)
        self.assertEqual(m['ringbeat_auth_refused_total{why="forged"}'], 2)
        self.assertEqual(m['ringbeat_auth_refused_total{why="expired"}'], 1)
        self.assertEqual(m['ringbeat_closed_total{protocol="v1",reason="unauthorized"}'], 6)
        self.assertEqual(m['ringbeat_opened_total{protocol="v1"}'], 1)
        c.roundtrip(9)  # the real session is untouched

    def write_other(self):
        path = os.path.join(self.dir, "other")
        write_keys(path, KEY_B)
        return path

    def test_without_the_flag_ids_are_on_trust_and_a_token_is_ignored(self):
        d = self.start_daemon()
        c = self.client(d)
        c.handshake(MODE_CLIENT, 1000, 3000, b"anyone")
        c2 = self.client(d)
        c2.handshake(MODE_CLIENT, 1000, 3000, b"anyone", token="not-even-a-token")
        c2.roundtrip(1)

    def test_rotated_key_still_accepts_tokens_of_the_previous_key(self):
        d = self.start_daemon("--auth-secret-file", self.keys)
        old = self.mint("frank")
        write_keys(self.keys, KEY_B, KEY_A)  # the new key first, the old one below it
        d.signal(signal.SIGHUP)
        d.wait_line(r"info auth_reloaded path=\S+ keys=2", 5)
        new = self.mint("frank")
        self.assertNotEqual(old, new)
        for tok in (old, new):
            c = self.client(d)
            c.handshake(MODE_CLIENT, 1000, 3000, b"frank", token=tok)
            c.roundtrip(2)
        write_keys(self.keys, KEY_B)  # the old key retired: its tokens stop working
        d.signal(signal.SIGHUP)
        d.wait_line(r"info auth_reloaded path=\S+ keys=1", 5, start=d.last_index + 1)
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"frank", token=old))
        c = self.client(d)
        c.handshake(MODE_CLIENT, 1000, 3000, b"frank", token=new)
        # A file that does not parse keeps the keys in force.
        with open(self.keys, "w") as f:
            f.write("garbage\n")
        d.signal(signal.SIGHUP)
        d.wait_line(r"error auth_reload_failed", 5)
        c = self.client(d)
        c.handshake(MODE_CLIENT, 1000, 3000, b"frank", token=new)

    def test_forged_token_cannot_kick_a_real_session(self):
        redis = self.start_redis()
        r = self.redis_client(redis)
        d = self.start_node(redis, "n1", "--single-session", "--auth-secret-file", self.keys)
        real = self.client(d)
        w = real.handshake(MODE_CLIENT, 1000, 3000, b"grace", token=self.mint("grace"))
        wait_for(lambda: r.hgetall(P + "presence:grace").get("conn") == str(w["conn_id"]), 3,
                 "the real session's hash")
        forged = self.mint("grace", keys=self.write_other())
        stolen = self.mint("heidi")  # a valid token, for someone else
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"grace", token=forged))
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"grace", token=stolen))
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"grace"))
        real.roundtrip(3)
        real.expect_silence(0.3)  # no CLOSE(8)
        self.assertEqual(r.hgetall(P + "presence:grace")["conn"], str(w["conn_id"]))
        # Nothing was published for the refused ones: one open, no close.
        ev = r.xrange(P + "events")
        self.assertEqual([(f["event"], f["client"]) for _, f in ev], [("open", "grace")])
        # An expired token is refused the same way, and publishes nothing either.
        expired = self.mint("grace", "--expiry", str(int(time.time()) - 60))
        self.refused(d, rbtest.hello(MODE_CLIENT, 1000, 3000, b"grace", token=expired))
        self.assertEqual(len(r.xrange(P + "events")), 1)
        real.roundtrip(4)

    def test_websocket_token_in_the_url(self):
        """A ws:// listener takes the token as ?token=; a bad one gets HTTP 401 before the upgrade."""
        import urllib.parse
        from wstest import WsClient, handshake_request, new_key
        d = self.start_daemon("--auth-secret-file", self.keys, "--mode", "client",
                              "--stats-interval", "200ms", listen="ws://127.0.0.1:0")
        good = self.mint("judy")

        def ws(path):
            c = WsClient(d.port)
            self.addCleanup(c.close)
            c.send(handshake_request(path, key=new_key()))
            return c

        r = ws("/?id=judy&token=" + urllib.parse.quote(good)).read_response()
        self.assertEqual(r.status, 101, r)
        self.assertTrue(r.headers.get("ringbeat-connection-id"))
        for path in ("/?id=judy",                                       # missing
                     "/?id=mallory&token=" + urllib.parse.quote(good),  # forged: another id
                     "/?id=judy&token=12.x"):                           # malformed
            c = ws(path)
            r = c.read_response()
            self.assertEqual(r.status, 401, (path, r))
            c.expect_eof()
        d.wait_line(r" closed_unauthorized=3\b", 5)  # the stats line counts them

    def test_token_tool_verifies(self):
        tok = self.mint("ivan", "--ttl", "1h")
        exp = int(tok.split(".")[0])
        self.assertAlmostEqual(exp, time.time() + 3600, delta=5)
        for client, token, want_rc, want in (("ivan", tok, 0, "ok"), ("ivy", tok, 1, "forged"),
                                             ("ivan", "x", 1, "malformed")):
            p = subprocess.run([self.tool, "--secret-file", self.keys, "--client", client,
                                "--verify", token], capture_output=True, text=True, timeout=10)
            self.assertEqual((p.returncode, p.stdout.strip()), (want_rc, want))


if __name__ == "__main__":
    unittest.main()
