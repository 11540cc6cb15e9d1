# test_ws_frames.py — WebSocket frames on ringbeatd: every error row and its close code, the
# close handshake, heartbeats in each mode, liveness from complete frames only, messages.
"""Each test starts its own ringbeatd with a ws:// listener (python3 stdlib only; the raw
client is wstest.WsClient)."""

import signal
import socket
import struct
import time
import unittest

import rbtest
from wstest import (BINARY, CLOSE, CONT, PING, PONG, TEXT, WsClient, close_payload, frame,
                    metric, scrape)

WS = "ws://127.0.0.1:0"


class WsFrameTest(rbtest.DaemonTestCase):
    def ws_daemon(self, *flags, metrics=False):
        if metrics:
            flags += ("--metrics", "127.0.0.1:0")
        d = self.start_daemon(*flags, listen=WS)
        if metrics:
            m = d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0)
            d.metrics_port = int(m.group(1).rpartition(":")[2])
        return d

    def ws(self, d, query=""):
        c = WsClient(d.port)
        self.addCleanup(c.close)
        c.upgrade("/" + query)
        return c

    def test_error_rows_and_their_close_codes(self):
        d = self.ws_daemon("--mode", "client", "--interval", "5s", "--max-frame", "1000",
                           metrics=True)
        big = struct.pack(">BBQ", 0x82, 0x80 | 127, 1 << 63) + b"\0\0\0\0"
        rows = [
            ("unmasked frame", frame(TEXT, b"hi", mask=False), 1002),
            ("RSV1 set", frame(TEXT, b"hi", rsv=4), 1002),
            ("RSV3 set", frame(BINARY, b"hi", rsv=1), 1002),
            ("unknown data opcode", frame(0x3, b"x"), 1002),
            ("unknown control opcode", frame(0xB, b"x"), 1002),
            ("control frame over 125", frame(PING, b"p" * 126), 1002),
            ("fragmented control frame", frame(PING, b"p", fin=False), 1002),
            ("64-bit length, top bit set", big, 1002),
            ("length not in its shortest form", struct.pack(">BBH", 0x82, 0xFE, 5) +
             b"\1\2\3\4" + b"abcde", 1002),
            ("continuation with no start", frame(CONT, b"x"), 1002),
            ("new message inside a fragmented one",
             frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002),
            ("close with a 1-byte payload", frame(CLOSE, b"\x03"), 1002),
            ("close with code 1005", frame(CLOSE, close_payload(1005)), 1002),
            ("close with code 999", frame(CLOSE, close_payload(999)), 1002),
            ("close reason not UTF-8", frame(CLOSE, close_payload(1000, b"\xff")), 1007),
            ("text not UTF-8", frame(TEXT, b"ok \xc3\x28"), 1007),
            ("surrogate in text", frame(TEXT, b"\xed\xa0\x80"), 1007),
            ("invalid UTF-8 across fragments",
             frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b"\x28"), 1007),
            ("text ends inside a character", frame(TEXT, b"\xe2", fin=False) + frame(CONT, b"\x82"),
             1007),
            ("over --max-frame, header only", struct.pack(">BBH", 0x82, 0xFE, 1001) + b"\1\2\3\4",
             1009),
            ("over --max-frame in total", frame(TEXT, b"a" * 600, fin=False) +
             struct.pack(">BBH", 0x80, 0xFE, 401) + b"\1\2\3\4", 1009),
        ]
        for name, raw, code in rows:
            with self.subTest(name):
                c = self.ws(d)
                c.send(raw)
                c.expect_close(code)
        text = scrape(d.metrics_port)
        closed = lambda reason: metric(text, "ringbeat_closed_total", protocol="ws", reason=reason)
        self.assertEqual(closed("protocol"), 14)
        self.assertEqual(closed("bad_payload"), 5)
        self.assertEqual(closed("too_big"), 2)
        # A fragmented message up to --max-frame in total is fine, and echoed whole.
        c = self.ws(d)
        c.send(frame(TEXT, b"a" * 600, fin=False) + frame(CONT, "é".encode() * 200))
        self.assertEqual(c.expect(TEXT), b"a" * 600 + "é".encode() * 200)

    def test_close_handshake(self):
        d = self.ws_daemon()
        for sent, answer in ((close_payload(1000, b"bye"), 1000), (close_payload(4321), 4321),
                             (b"", None), (close_payload(1001, "ça".encode()), 1001)):
            c = self.ws(d)
            c.send_frame(CLOSE, sent)
            c.expect_close(answer)

    def test_messages_echoed_with_their_opcode_fragmented_or_not(self):
        d = self.ws_daemon("--mode", "client", "--interval", "5s", "--max-frame", "60000")
        c = self.ws(d)
        c.send_frame(TEXT, "héllo".encode())
        self.assertEqual(c.expect(TEXT), "héllo".encode())
        c.send_frame(BINARY, b"\0\1\2")
        self.assertEqual(c.expect(BINARY), b"\0\1\2")
        c.send_frame(BINARY, b"")
        self.assertEqual(c.expect(BINARY), b"")
        blob = bytes(range(256)) * 230  # 58,880 bytes, 16-bit length
        raw = frame(BINARY, blob)
        for i in range(0, len(raw), 777):  # split at odd points, as reads would
            c.send(raw[i:i + 777])
        self.assertEqual(c.expect(BINARY, timeout=5), blob)
        # Fragments with a ping between them: the pong first, then the message whole.
        c.send(frame(TEXT, b"one ", fin=False) + frame(PING, b"mid") + frame(CONT, b"two ", fin=False))
        self.assertEqual(c.expect(PONG), b"mid")
        c.send(frame(CONT, b"three"))
        self.assertEqual(c.expect(TEXT), b"one two three")
        # A header cut after every byte.
        raw = frame(TEXT, b"cut header")
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
            time.sleep(0.002)
        self.assertEqual(c.expect(TEXT), b"cut header")

    def test_server_mode_pings_carry_a_token_and_pongs_keep_it_alive(self):
        d = self.ws_daemon("--mode", "server", "--interval", "1s", "--timeout", "2500ms",
                           metrics=True)
        c = self.ws(d)
        t0 = time.monotonic()
        for _ in range(4):  # 4 s > the timeout: only our Pongs keep it open
            payload = c.expect(PING, timeout=3, skip=())
            self.assertEqual(len(payload), 8)
            c.send_frame(PONG, payload)
        self.assertGreater(time.monotonic() - t0, 2.5)
        deadline = time.monotonic() + 2  # our last Pong may still be on its way
        while True:
            text = scrape(d.metrics_port)
            pongs = metric(text, "ringbeat_heartbeats_total", protocol="ws", direction="in",
                           kind="pong")
            if pongs >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assertGreaterEqual(pongs, 4)
        self.assertGreaterEqual(metric(text, "ringbeat_heartbeats_total", protocol="ws",
                                       direction="out", kind="ping"), 4)
        # Now stop answering: Close 4002 at the timeout after the last frame we sent.
        last = c.t_last_sent
        c.expect_close(4002, timeout=5)
        late = time.monotonic() - last
        self.assertGreaterEqual(late, 2.5)
        self.assertLess(late, 2.5 + 0.3)

    def test_client_mode_pong_echoes_the_ping_payload(self):
        d = self.ws_daemon("--mode", "client", "--interval", "1s", "--timeout", "2s")
        c = self.ws(d)
        for payload in (b"", b"x", b"12345678", b"p" * 125):
            c.send_frame(PING, payload)
            self.assertEqual(c.expect(PONG, skip=()), payload)
        c.send_frame(PONG, b"unsolicited")  # allowed: a one-way heartbeat, no answer
        c.expect_silence(0.3)
        last = c.t_last_sent
        c.expect_close(4002, timeout=4, skip=())
        self.assertGreaterEqual(time.monotonic() - last, 2.0)

    def test_silent_mode_answers_nothing_but_listens(self):
        d = self.ws_daemon("--interval", "1s", "--timeout", "2s")
        c = self.ws(d, "?mode=silent")
        for _ in range(5):  # 3 s of pings every 600 ms: alive, never answered
            c.send_frame(PING, b"hb")
            c.expect_silence(0.6)
        last = c.t_last_sent
        c.expect_close(4002, timeout=4, skip=())
        self.assertGreaterEqual(time.monotonic() - last, 2.0)

    def test_a_partial_frame_is_not_a_sign_of_life_a_fragment_is(self):
        d = self.ws_daemon("--mode", "client", "--interval", "1s", "--timeout", "2s")
        c = self.ws(d)
        t_up = time.monotonic()
        raw = frame(PING, b"slowly")
        closed = None
        for i in range(len(raw)):  # a byte every 400 ms: the frame completes after ~4.8 s
            try:
                c.send(raw[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                c.expect_close(4002, timeout=0.4, skip=())
                closed = time.monotonic()
                break
            except rbtest.FrameTimeout:
                continue
        self.assertIsNotNone(closed, "a frame dribbled in byte by byte kept the connection alive")
        self.assertGreaterEqual(closed - t_up, 2.0)
        self.assertLess(closed - t_up, 2.0 + 0.5)
        # Fragments of one message, each complete, every 700 ms for 3.5 s: alive throughout.
        c = self.ws(d)
        for i in range(5):
            c.send_frame(TEXT if i == 0 else CONT, b"%d" % i, fin=False)
            c.expect_silence(0.7)
        c.send_frame(CONT, b"!")
        self.assertEqual(c.expect(TEXT, skip=()), b"01234!")

    def test_shutdown_sends_1001(self):
        d = self.ws_daemon("--interval", "5s")
        c = self.ws(d)
        d.signal(signal.SIGTERM)
        c.expect_close(1001)
        self.assertEqual(d.wait_exit(5), 0)

    def test_v1_and_ws_listeners_in_one_process(self):
        d = self.start_daemon("--listen", WS, "--listen", "[::1]:0", "--mode", "client",
                              "--interval", "1s", "--metrics", "127.0.0.1:0")
        m = d.wait_line(r" info listening addr=(\S+) protocol=ws", 5.0)
        ws_port = int(m.group(1).rpartition(":")[2])
        mp = int(d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0).group(1)
                 .rpartition(":")[2])
        v1 = self.client(d)
        self.assertEqual(v1.handshake(interval_ms=1000)["interval_ms"], 1000)
        self.assertLess(v1.roundtrip(7), 1.0)
        w = WsClient(ws_port)
        self.addCleanup(w.close)
        w.upgrade("/")
        w.send_frame(PING, b"ws")
        self.assertEqual(w.expect(PONG, skip=()), b"ws")
        text = scrape(mp)
        self.assertEqual(metric(text, "ringbeat_protocol_connections", protocol="ws"), 1)
        self.assertEqual(metric(text, "ringbeat_protocol_connections", protocol="v1"), 1)
        self.assertEqual(metric(text, "ringbeat_heartbeats_total", protocol="ws", direction="in",
                                kind="ping"), 1)

    def test_slow_reader_is_released(self):
        d = self.ws_daemon("--mode", "client", "--interval", "5s", "--max-frame", "1000",
                           "--max-pending-out", "4k", metrics=True)
        c = WsClient(d.port)
        self.addCleanup(c.close)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.upgrade("/")
        msg = frame(BINARY, b"m" * 1000)
        sent = 0
        try:  # we never read: echoes fill our window, then the daemon's queue
            while sent < 64 << 20:
                c.send(msg * 64)
                sent += len(msg) * 64
                text = scrape(d.metrics_port)
                if metric(text, "ringbeat_closed_total", protocol="ws", reason="slow_reader"):
                    break
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = scrape(d.metrics_port)
            if metric(text, "ringbeat_closed_total", protocol="ws", reason="slow_reader") == 1:
                break
            time.sleep(0.05)
        self.assertEqual(metric(text, "ringbeat_closed_total", protocol="ws",
                                reason="slow_reader"), 1)


if __name__ == "__main__":
    unittest.main()
