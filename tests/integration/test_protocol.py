# test_protocol.py — ringbeatd speaks protocol v1: every frame type, HELLO clamping, framing edge cases.
import struct
import time
import unittest

import rbtest
from rbtest import (DATA, MODE_CLIENT, MODE_SERVER, MODE_SILENT, PING, PONG, DaemonTestCase,
                    close, data, frame, hello, ping, tune)


class HelloWelcome(DaemonTestCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "server", "--interval", "2s", "--timeout", "7s",
                                   "--min-interval", "1s", "--max-interval", "10s")

    def test_hello_gets_welcome_with_effective_values_and_connection_id(self):
        a = self.client(self.d)
        b = self.client(self.d)
        wa = a.handshake(MODE_CLIENT, 1500, 4500, b"client-a")
        wb = b.handshake(MODE_SILENT, 3000, 9000)
        self.assertEqual(wa["version"], 1)
        self.assertEqual((wa["mode"], wa["interval_ms"], wa["timeout_ms"]), (MODE_CLIENT, 1500, 4500))
        self.assertEqual((wb["mode"], wb["interval_ms"], wb["timeout_ms"]), (MODE_SILENT, 3000, 9000))
        self.assertNotEqual(wa["conn_id"], wb["conn_id"], "two connections share a connection id")
        # The connection is usable afterwards.
        a.roundtrip(7)

    def test_hello_zero_values_take_server_defaults(self):
        c = self.client(self.d)
        w = c.handshake(MODE_SERVER, 0, 0)
        self.assertEqual((w["mode"], w["interval_ms"], w["timeout_ms"]), (MODE_SERVER, 2000, 7000))

    def test_hello_interval_below_min_is_clamped_up(self):
        c = self.client(self.d)
        w = c.handshake(MODE_CLIENT, 100, 5000)
        self.assertEqual(w["interval_ms"], 1000)
        self.assertEqual(w["timeout_ms"], 5000)

    def test_hello_interval_above_max_is_clamped_down(self):
        c = self.client(self.d)
        w = c.handshake(MODE_CLIENT, 20000, 30000)
        self.assertEqual(w["interval_ms"], 10000)
        self.assertEqual(w["timeout_ms"], 30000)

    def test_hello_timeout_above_max_timeout_is_clamped(self):
        # max timeout defaults to 4 x max interval (40 s here); the result must stay above interval.
        c = self.client(self.d)
        w = c.handshake(MODE_CLIENT, 5000, 3600000)
        self.assertEqual(w["interval_ms"], 5000)
        self.assertGreater(w["timeout_ms"], 5000)
        self.assertLessEqual(w["timeout_ms"], 40000)

    def test_hello_timeout_equal_to_interval_gets_close3(self):
        c = self.client(self.d)
        c.send(hello(MODE_CLIENT, 2000, 2000))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_hello_timeout_below_interval_gets_close3(self):
        c = self.client(self.d)
        c.send(hello(MODE_CLIENT, 3000, 1500))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_hello_with_64_byte_client_id_is_accepted(self):
        c = self.client(self.d)
        w = c.handshake(MODE_CLIENT, 1000, 3000, b"x" * 64)
        self.assertEqual(w["interval_ms"], 1000)

    def test_hello_with_65_byte_client_id_gets_close3(self):
        c = self.client(self.d)
        c.send(hello(MODE_CLIENT, 1000, 3000, b"x" * 65))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_hello_unknown_mode_gets_close3(self):
        c = self.client(self.d)
        c.send(hello(4, 1000, 3000))  # 3 is kernel mode (test_kernel_mode.py)
        c.expect_close(rbtest.CLOSE_PROTOCOL)


class Tune(DaemonTestCase):
    """TUNE (0x07): a client changes its interval and timeout on an open connection."""

    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "2s", "--timeout", "6s",
                                   "--min-interval", "1s", "--max-interval", "10s", "--tick", "10ms")

    def test_tune_is_clamped_like_hello_and_answered_with_welcome(self):
        c = self.client(self.d)
        w0 = c.handshake(MODE_CLIENT, 2000, 6000)
        c.send(tune(200, 0))  # interval raised to the minimum, timeout 3 x interval
        w = c.expect_welcome()
        self.assertEqual((w["mode"], w["interval_ms"], w["timeout_ms"]), (MODE_CLIENT, 1000, 3000))
        self.assertEqual(w["conn_id"], w0["conn_id"])
        c.send(tune(0, 0))  # back to the server defaults
        w = c.expect_welcome()
        self.assertEqual((w["interval_ms"], w["timeout_ms"]), (2000, 6000))
        c.roundtrip(5)

    def test_new_timeout_is_enforced_from_the_tune(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 2000, 6000)
        c.send(tune(1000, 1500))
        c.expect_welcome()
        t0 = time.monotonic()
        # Silent from now on: the server must close at 1.5 s, not at the 6 s of the HELLO.
        f, _ = c.wait_close(4.0)
        waited = time.monotonic() - t0
        self.assertEqual(f.close_code, rbtest.CLOSE_TIMEOUT)
        self.assertGreaterEqual(waited, 1.4)
        self.assertLess(waited, 3.0)

    def test_longer_timeout_keeps_a_quiet_client(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 1500)
        c.send(tune(3000, 8000))
        self.assertEqual(c.expect_welcome()["timeout_ms"], 8000)
        c.expect_silence(2.5)  # past the old 1.5 s timeout: still open
        c.roundtrip(9)

    def test_tune_that_cannot_be_honoured_gets_close3(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 2000, 6000)
        c.send(tune(3000, 2000))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_tune_of_wrong_length_gets_close3(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 2000, 6000)
        c.send(frame(rbtest.TUNE, b"\x00" * 7))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_tune_as_first_frame_opens_with_defaults_then_tunes(self):
        c = self.client(self.d)
        c.send(tune(1000, 4000))
        w = c.expect_welcome()
        self.assertEqual((w["mode"], w["interval_ms"], w["timeout_ms"]), (MODE_CLIENT, 1000, 4000))


class Frames(DaemonTestCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "3s",
                                   "--max-frame", "100")

    def test_ping_gets_pong_with_same_token_in_client_mode(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        for token in (0, 1, 0xFFFFFFFFFFFFFFFF, 0x0123456789ABCDEF):
            c.roundtrip(token)

    def test_data_is_echoed(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        for payload in (b"", b"hello", bytes(range(100))):
            c.send(data(payload))
            f = c.expect(DATA)
            self.assertEqual(f.payload, payload)

    def test_data_flags_bits_are_ignored(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        c.send(frame(DATA, b"abc", flags=0x80))
        self.assertEqual(c.expect(DATA).payload, b"abc")

    def test_client_close_makes_server_close(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        c.send(close(rbtest.CLOSE_NORMAL, b"bye"))
        c.expect_eof(2.0)

    def test_ping_without_hello_gets_pong(self):
        c = self.client(self.d)
        c.roundtrip(42)  # server default mode is client: the PING is answered, no WELCOME first

    def test_data_without_hello_is_echoed(self):
        c = self.client(self.d)
        c.send(data(b"first"))
        self.assertEqual(c.expect(DATA).payload, b"first")

    def test_hello_split_into_single_bytes(self):
        c = self.client(self.d)
        c.send_bytewise(hello(MODE_CLIENT, 1000, 3000, b"slow"))
        w = c.expect_welcome()
        self.assertEqual((w["mode"], w["interval_ms"]), (MODE_CLIENT, 1000))
        c.send_bytewise(ping(99))
        self.assertEqual(c.expect(PONG).token, 99)
        c.send_bytewise(data(b"xyz"))
        self.assertEqual(c.expect(DATA).payload, b"xyz")

    def test_fifty_coalesced_pings_get_fifty_pongs_in_order(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        tokens = [1000 + 37 * i for i in range(50)]
        c.send(b"".join(ping(t) for t in tokens))
        got = [c.expect(PONG).token for _ in tokens]
        self.assertEqual(got, tokens)
        c.expect_silence(0.2)

    def test_hello_and_frames_coalesced_in_one_send(self):
        c = self.client(self.d)
        c.send(hello(MODE_CLIENT, 1000, 3000) + ping(5) + data(b"d") + ping(6))
        c.expect_welcome()
        self.assertEqual(c.expect(PONG).token, 5)
        self.assertEqual(c.expect(DATA).payload, b"d")
        self.assertEqual(c.expect(PONG).token, 6)

    def test_data_at_max_frame_is_echoed(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        c.send(data(b"m" * 100))
        self.assertEqual(c.expect(DATA).payload, b"m" * 100)

    def test_data_over_max_frame_refused_from_header_alone(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        c.send(frame(DATA, b"", length=101))  # header only: the payload never comes
        c.expect_close(rbtest.CLOSE_TOO_BIG)

    def test_data_65535_refused_from_header_alone(self):
        c = self.client(self.d)
        c.send(frame(DATA, b"", length=65535))
        c.expect_close(rbtest.CLOSE_TOO_BIG)


class ProtocolErrors(DaemonTestCase):
    """Every CLOSE(3) cause; each connection is closed after the CLOSE frame."""

    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "3s")
        self.c = self.client(self.d)
        self.c.handshake(MODE_CLIENT, 1000, 3000)

    def test_unknown_type_0x07(self):
        self.c.send(frame(0x07, b"\0" * 4))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_unknown_type_0x00(self):
        self.c.send(frame(0x00, b""))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_unknown_type_0xff(self):
        self.c.send(frame(0xFF, b"\1\2"))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_ping_with_7_bytes(self):
        self.c.send(frame(PING, b"1234567"))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_ping_with_9_bytes(self):
        self.c.send(frame(PING, b"123456789"))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_pong_with_9_bytes(self):
        self.c.send(frame(PONG, b"123456789"))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_pong_with_7_bytes(self):
        self.c.send(frame(PONG, b"1234567"))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_second_hello(self):
        self.c.send(hello(MODE_CLIENT, 1000, 3000))
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_welcome_sent_by_client(self):
        self.c.send(rbtest.welcome_frame())
        self.c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_welcome_as_first_frame(self):
        c = self.client(self.d)
        c.send(rbtest.welcome_frame())
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_bad_hello_version(self):
        c = self.client(self.d)
        c.send(hello(MODE_CLIENT, 1000, 3000, version=2))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_hello_shorter_than_fixed_part(self):
        c = self.client(self.d)
        c.send(frame(rbtest.HELLO, struct.pack(">BBHI", 1, MODE_CLIENT, 0, 1000)))
        c.expect_close(rbtest.CLOSE_PROTOCOL)

    def test_bad_client_does_not_disturb_a_good_one(self):
        good = self.c
        bad1 = self.client(self.d)
        bad2 = self.client(self.d)
        stall = self.client(self.d)
        stall.send(frame(DATA, b"abc", length=50))  # a partial frame that never completes
        token = 0
        deadline = time.monotonic() + 1.5
        bad_done = False
        while time.monotonic() < deadline:
            token += 1
            rtt = good.roundtrip(token, timeout=1.0)
            self.assertLess(rtt, 0.5, "good client's PONG took %.3f s while a bad client misbehaved"
                            % rtt)
            if not bad_done:
                bad1.send(frame(0x09, b"garbage" * 10))
                bad2.send(b"\xff" * 64)
                bad1.expect_close(rbtest.CLOSE_PROTOCOL)
                bad2.expect_close(rbtest.CLOSE_PROTOCOL)
                bad_done = True
            time.sleep(0.05)  # pacing of the good client's heartbeats, not a wait for an event
        self.assertGreaterEqual(token, 10)
        good.send(data(b"still here"))
        self.assertEqual(good.expect(DATA).payload, b"still here")


if __name__ == "__main__":
    unittest.main()
