# test_tls_peers.py — bad TLS peers, the handshake timeout and a reconnect storm, with a witness.
"""Each bad peer is closed with the right alert (or none) and released, while a witness TLS
connection keeps its heartbeats: nothing else is disturbed. Python's ssl module (the pyenv
python3 has it) plays both the witness and, at the record level, the bad peers. The storm needs
ringbeat-load (RINGBEAT_LOAD); each load run is bounded in count and time."""

import json
import os
import socket
import struct
import subprocess
import time
import unittest

import ssl

from rbtest import MODE_CLIENT, PONG, hello, load_path, ping
from rbtls import TlsDaemonTestCase, TlsStream

METRIC_ALERT = 'ringbeat_tls_alerts_sent_total{alert="%s"}'
METRIC_HS = 'ringbeat_tls_handshakes_total{result="%s"}'


class BadPeers(TlsDaemonTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.start_tls_daemon("--mode", "client", "--interval", "1s",
                                       "--handshake-timeout", "400ms")
        self.witness = self.tls_client(self.d)
        self.witness.handshake(MODE_CLIENT, 1000, 3000, b"witness")
        self.token = 0

    def tearDown(self):
        # the witness saw nothing of it
        for _ in range(3):
            self.token += 1
            self.witness.roundtrip(self.token)
        m = self.metrics(self.d)
        self.assertEqual(m['ringbeat_tls_connections{phase="established"}'], 1, "witness only")
        self.assertEqual(m['ringbeat_tls_connections{phase="handshake"}'], 0)

    def raw(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=5.0)
        self.addCleanup(s.close)
        return s

    def read_all(self, s, timeout=2.0):
        """Everything until the server closes."""
        s.settimeout(timeout)
        got = b""
        while True:
            try:
                b = s.recv(4096)
            except ConnectionResetError:
                return got
            if not b:
                return got
            got += b

    def established(self):
        t = self.stream(self.d)
        t.write(hello(MODE_CLIENT, 1000, 3000))
        t.read()  # WELCOME
        return t

    def test_garbage_instead_of_a_client_hello_gets_no_alert(self):
        s = self.raw()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(self.read_all(s), b"")  # not TLS at all: no alert, just closed
        self.wait_metric(self.d, METRIC_HS % "failed", 1)

    def test_broken_client_hello_gets_decode_error(self):
        s = self.raw()
        s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        got = self.read_all(s)
        self.assertEqual(got[0], 21, "expected an alert record, got %r" % got)
        self.assertEqual(got[5:7], b"\x02\x32")  # fatal, decode_error
        self.wait_metric(self.d, METRIC_ALERT % "decode_error", 1)

    def test_client_alert_during_the_handshake(self):
        # A client that checks the certificate rejects ours: it sends its alert, we send none.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        with self.assertRaises(ssl.SSLCertVerificationError):
            TlsStream(self.d.port, ctx=ctx)
        self.wait_metric(self.d, METRIC_HS % "failed", 1)
        m = self.metrics(self.d)
        self.assertEqual(sum(v for k, v in m.items() if k.startswith(
            "ringbeat_tls_alerts_sent_total")), 0)

    def test_truncated_record_then_eof(self):
        t = self.established()
        t.obj.write(ping(1))
        rec = t.take()
        t.send_raw(rec[:-3])
        t.sock.shutdown(socket.SHUT_WR)
        with self.assertRaises(Exception):
            t.read(3.0)  # no PONG; the server closes (its close_notify at most)
        self.wait_metric(self.d, 'ringbeat_closed_total{protocol="v1",reason="eof"}', 1)

    def test_bad_mac_gets_bad_record_mac(self):
        t = self.established()
        t.obj.write(ping(1))
        rec = bytearray(t.take())
        rec[-1] ^= 1
        t.send_raw(bytes(rec))
        self.assertIn("BAD_RECORD_MAC", t.expect_alert())
        t.expect_eof()
        self.wait_metric(self.d, METRIC_ALERT % "bad_record_mac", 1)
        self.wait_metric(self.d, 'ringbeat_closed_total{protocol="v1",reason="protocol"}', 1)

    def test_oversized_record_gets_record_overflow(self):
        t = self.established()
        t.send_raw(b"\x17\x03\x03" + struct.pack(">H", 2 ** 14 + 257))
        self.assertIn("RECORD_OVERFLOW", t.expect_alert())
        t.expect_eof()
        self.wait_metric(self.d, METRIC_ALERT % "record_overflow", 1)

    def test_plaintext_handshake_record_after_the_handshake(self):
        t = self.established()
        t.send_raw(b"\x16\x03\x03\x00\x04\x01\x00\x00\x00")
        self.assertIn("UNEXPECTED_MESSAGE", t.expect_alert())
        self.wait_metric(self.d, METRIC_ALERT % "unexpected_message", 1)

    def test_close_notify_is_answered(self):
        t = self.established()
        try:
            t.obj.unwrap()  # our close_notify; unwrap completes when the server's arrives
        except ssl.SSLWantReadError:
            pass
        t.flush()
        deadline = time.monotonic() + 3.0
        while True:
            try:
                t.obj.unwrap()
                break
            except ssl.SSLWantReadError:
                self.assertTrue(t._pull(deadline), "EOF before the server's close_notify")
        t.expect_eof()
        self.wait_metric(self.d, METRIC_ALERT % "close_notify", 1)

    def test_fin_right_behind_the_finished_and_a_hello(self):
        # Finished, HELLO and FIN in one go: all of it is judged, then the FIN closes.
        t = TlsStream(self.d.port, handshake=False)
        self.addCleanup(t.close)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                t.obj.do_handshake()  # the Finished stays in the BIO
                break
            except ssl.SSLWantReadError:
                t.flush()
                self.assertTrue(t._pull(deadline))
        t.obj.write(hello(MODE_CLIENT, 1000, 3000))
        t.send_raw(t.take())
        t.sock.shutdown(socket.SHUT_WR)
        got = b""
        with self.assertRaises(Exception):
            while True:
                got += t.read(3.0)
        self.assertEqual(got[0], 0x02, "expected the WELCOME before the close: %r" % got)
        self.wait_metric(self.d, 'ringbeat_closed_total{protocol="v1",reason="eof"}', 1)

    def test_silent_connection_closed_at_the_handshake_timeout(self):
        s = self.raw()
        t0 = time.monotonic()
        self.assertEqual(self.read_all(s, 3.0), b"")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.39)
        self.assertLess(elapsed, 1.2)
        self.wait_metric(self.d, METRIC_HS % "timeout", 1)

    def test_half_a_client_hello_is_closed_at_the_timeout(self):
        t = TlsStream(self.d.port, handshake=False)
        self.addCleanup(t.close)
        try:
            t.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        ch = t.take()
        t.send_raw(ch[:len(ch) // 2])
        t0 = time.monotonic()
        self.assertEqual(self.read_all(t.sock, 3.0), b"")
        self.assertLess(time.monotonic() - t0, 1.2)
        self.wait_metric(self.d, METRIC_HS % "timeout", 1)


@unittest.skipUnless(load_path(), "ringbeat-load not built (set RINGBEAT_LOAD)")
class ReconnectStorm(TlsDaemonTestCase):
    """A storm of full handshakes from ringbeat-load while a witness pings every 20 ms: every
    PING is answered, and the budget shows it held handshakes back. (The RTT figures themselves
    are bench/'s: bench/tls_storm.py.)"""

    def test_witness_keeps_its_heartbeats(self):
        # Generous handshake and connect timeouts: under ASan on a shared box a handshake costs
        # several ms, and 1,500 of them behind a budget of 4 may wait seconds; this test is about
        # the witness, not about how fast the storm drains.
        d = self.start_tls_daemon("--mode", "client", "--interval", "1s", "--workers", "1",
                                  "--tls-handshake-budget", "4", "--handshake-timeout", "30s")
        w = self.tls_client(d)
        w.handshake(MODE_CLIENT, 1000, 3000, b"witness")
        out = os.path.join(self.tmp.name, "load.json")
        n = 1500
        load = subprocess.Popen([load_path(), "--tls", "--target", "127.0.0.1:%d" % d.port,
                                 "--connections", str(n), "--rate", "100000", "--inflight",
                                 "512", "--connect-timeout", "30s", "--duration", "1s", "--interval", "1s", "--mode",
                                 "client", "--json", out, "--quiet"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: load.poll() is None and load.kill())
        rtts, token = [], 0
        deadline = time.monotonic() + 60
        while load.poll() is None and time.monotonic() < deadline:
            token += 1
            rtts.append(w.roundtrip(token, timeout=2.0))
            time.sleep(0.02)
        self.assertIsNotNone(load.poll(), "ringbeat-load did not finish in 60 s")
        err = load.stderr.read().decode("utf-8", "replace")
        load.stderr.close()
        with open(out) as f:
            res = json.load(f)
        self.assertEqual(res["connections_established"], n, err[-2000:])
        m = self.metrics(d)
        self.assertGreaterEqual(m[METRIC_HS % "full"], n)
        self.assertGreater(m["ringbeat_tls_handshake_budget_exhausted_total"], 0)
        rtts.sort()
        print("\nwitness: %d PINGs during %d full handshakes: RTT p50 %.2f ms p99 %.2f ms max "
              "%.2f ms" % (len(rtts), n, 1e3 * rtts[len(rtts) // 2],
                           1e3 * rtts[int(len(rtts) * 0.99)], 1e3 * rtts[-1]))


if __name__ == "__main__":
    unittest.main()
