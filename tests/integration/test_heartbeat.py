# test_heartbeat.py — ringbeatd's heartbeat modes and dead-peer detection: who PINGs, and when CLOSE(2) comes.
import time
import unittest

from rbtest import (CLOSE_TIMEOUT, DATA, MODE_CLIENT, MODE_SERVER, MODE_SILENT, PING,
                    DaemonTestCase, data, ping, pong)

# --interval 1s --timeout 3s --tick 10ms: a silent peer gets CLOSE(2) 3.0..3.5 s after its last frame.
TIMEOUT_S = 3.0
LATE_S = 0.5
# Server mode PINGs each connection at a point of the interval of its own (a phase in
# [0, interval) from its id: a burst of arrivals, or answers a stall bunched, are not pinged in a
# burst): the first PING one to two intervals after the HELLO, later ones at most an interval +
# interval/16 after the last frame, never before three quarters of an interval of silence
# (docs/protocol.md, section 3).
FIRST_PING_MAX_S = 2.0 + LATE_S
NEXT_PING_MAX_S = 1.0 + LATE_S
MIN_SILENCE_S = 0.75 - 0.01


class Modes(DaemonTestCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "3s",
                                   "--tick", "10ms")

    def test_silent_mode_ping_gets_no_answer_but_keeps_connection_alive(self):
        c = self.client(self.d)
        w = c.handshake(MODE_SILENT, 1000, 3000)
        self.assertEqual(w["mode"], MODE_SILENT)
        start = time.monotonic()
        token = 0
        # Past the 3 s timeout: PINGs alone must keep the connection open, and none is answered.
        while time.monotonic() - start < TIMEOUT_S + 1.5:
            token += 1
            c.send(ping(token))
            c.expect_silence(0.5)
        c.send(data(b"alive"))
        self.assertEqual(c.expect(DATA).payload, b"alive")

    def test_server_mode_server_pings_after_interval_and_answering_client_stays_alive(self):
        c = self.client(self.d)
        w = c.handshake(MODE_SERVER, 1000, 3000)
        self.assertEqual(w["mode"], MODE_SERVER)
        start = time.monotonic()
        pings = 0
        seen_tokens = set()
        while time.monotonic() - start < TIMEOUT_S + 2.0:
            f = c.recv_frame(FIRST_PING_MAX_S + 0.1)
            self.assertEqual(f.type, PING, "server mode: expected only PINGs, got %r" % f)
            silence = f.t - c.t_last_sent
            self.assertGreaterEqual(silence, MIN_SILENCE_S,
                                    "server PINGed after only %.3f s of silence" % silence)
            self.assertLess(silence, NEXT_PING_MAX_S if pings else FIRST_PING_MAX_S,
                            "PING #%d came after %.3f s of silence" % (pings + 1, silence))
            seen_tokens.add(f.token)
            c.send(pong(f.token))
            pings += 1
        self.assertGreaterEqual(pings, 3, "expected a PING about every second for 5 s")
        self.assertGreater(len(seen_tokens), 1, "server reused one PING token for every PING")
        c.send(data(b"alive"))
        self.assertEqual(c.expect(DATA).payload, b"alive")

    def test_server_mode_busy_client_gets_no_ping(self):
        c = self.client(self.d)
        c.handshake(MODE_SERVER, 1000, 3000)
        start = time.monotonic()
        n = 0
        # DATA every 0.3 s (more often than the 1 s interval) for longer than the timeout.
        while time.monotonic() - start < TIMEOUT_S + 0.5:
            n += 1
            payload = b"busy%d" % n
            c.send(data(payload))
            f = c.expect(DATA, 1.0)
            self.assertEqual(f.payload, payload)
            c.expect_silence(0.3)
        # Once the client goes quiet the server does PING: the absence above was not an accident.
        f = c.expect(PING, FIRST_PING_MAX_S + 0.1)
        self.assertGreaterEqual(f.t - c.t_last_sent, MIN_SILENCE_S)
        self.assertLess(f.t - c.t_last_sent, FIRST_PING_MAX_S)

    def test_timeout_defaults_to_three_intervals(self):
        d = self.start_daemon("--mode", "client", "--interval", "1500ms")
        c = self.client(d)
        w = c.handshake(MODE_CLIENT, 0, 0)
        self.assertEqual((w["interval_ms"], w["timeout_ms"]), (1500, 4500))


class TimeoutPrecision(DaemonTestCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "3s",
                                   "--tick", "10ms")

    def assert_on_time(self, elapsed, timeout_s=TIMEOUT_S):
        self.assertGreaterEqual(elapsed, timeout_s, "CLOSE(2) came early: %.3f s after the last frame"
                                % elapsed)
        self.assertLessEqual(elapsed, timeout_s + LATE_S, "CLOSE(2) came late: %.3f s after the last "
                             "frame" % elapsed)

    def test_client_mode_silent_client_closed_3s_after_last_frame(self):
        c = self.client(self.d)
        c.handshake(MODE_CLIENT, 1000, 3000)
        c.roundtrip(1)
        last = c.t_last_sent
        f, seen = c.wait_close(TIMEOUT_S + 2.0, allow=())
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        self.assert_on_time(f.t - last)
        c.expect_eof()

    def test_server_mode_unanswering_client_closed_3s_after_last_frame(self):
        c = self.client(self.d)
        c.handshake(MODE_SERVER, 1000, 3000)
        last = c.t_last_sent
        f, seen = c.wait_close(TIMEOUT_S + 2.0, allow=(PING,))  # never answered
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        self.assert_on_time(f.t - last)
        self.assertGreaterEqual(len(seen), 1, "server mode: no PING before the timeout")
        c.expect_eof()

    def test_silent_mode_client_closed_3s_after_last_ping(self):
        c = self.client(self.d)
        c.handshake(MODE_SILENT, 1000, 3000)
        c.send(ping(1))
        c.expect_silence(0.3)
        c.send(ping(2))
        last = c.t_last_sent
        f, _ = c.wait_close(TIMEOUT_S + 2.0, allow=())
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        self.assert_on_time(f.t - last)
        c.expect_eof()

    def test_connection_that_never_sends_is_closed_after_timeout(self):
        c = self.client(self.d)
        f, _ = c.wait_close(TIMEOUT_S + 2.0, allow=(PING,))
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        self.assert_on_time(f.t - c.t_connected)
        c.expect_eof()


class DefaultsWithoutHello(DaemonTestCase):
    def test_first_frame_ping_takes_default_mode_and_timeout(self):
        d = self.start_daemon("--mode", "client", "--interval", "1s", "--timeout", "2s",
                              "--tick", "10ms")
        c = self.client(d)
        c.roundtrip(11)  # default mode is client: answered
        last = c.t_last_sent
        f, _ = c.wait_close(4.0, allow=())
        self.assertEqual(f.close_code, CLOSE_TIMEOUT)
        elapsed = f.t - last
        self.assertGreaterEqual(elapsed, 2.0, "default timeout 2 s not applied: closed at %.3f s" % elapsed)
        self.assertLessEqual(elapsed, 2.0 + LATE_S, "default timeout 2 s not applied: closed at %.3f s"
                             % elapsed)
        c.expect_eof()

    def test_first_frame_data_takes_default_server_mode(self):
        d = self.start_daemon("--mode", "server", "--interval", "1s", "--timeout", "3s",
                              "--tick", "10ms")
        c = self.client(d)
        c.send(data(b"hi"))
        self.assertEqual(c.expect(DATA).payload, b"hi")
        f = c.expect(PING, FIRST_PING_MAX_S + 0.1)  # default mode is server: it PINGs within 2 s
        self.assertGreaterEqual(f.t - c.t_last_sent, MIN_SILENCE_S)
        self.assertLess(f.t - c.t_last_sent, FIRST_PING_MAX_S)
        c.send(pong(f.token))
        f = c.expect(PING, NEXT_PING_MAX_S + 0.1)
        self.assertGreaterEqual(f.t - c.t_last_sent, MIN_SILENCE_S)
        self.assertLess(f.t - c.t_last_sent, NEXT_PING_MAX_S)

    def test_first_frame_ping_in_silent_default_gets_no_pong(self):
        d = self.start_daemon("--mode", "silent", "--interval", "1s", "--timeout", "3s")
        c = self.client(d)
        c.send(ping(3))
        c.expect_silence(0.5)
        c.send(data(b"x"))
        self.assertEqual(c.expect(DATA).payload, b"x")


if __name__ == "__main__":
    unittest.main()
