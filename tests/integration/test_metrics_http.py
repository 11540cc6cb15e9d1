# test_metrics_http.py — /metrics under slow and idle scrapers: no scrape waits for another client.
"""ringbeatd --metrics serves with libmicrohttpd (engine/metrics_http.c): one epoll thread for all
connections, an idle timeout and a connection limit. Slow clients here send half a request and
then nothing, like a stalled or hostile scraper. python3 stdlib only (the pyenv python3 is fine)."""
import http.client
import socket
import time
import unittest

from rbtest import Daemon, DaemonTestCase

# engine/metrics_http.c: METRICS_IDLE_TIMEOUT_S and METRICS_MAX_CONNS.
IDLE_TIMEOUT_S = 3
MAX_CONNS = 128
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: never complete


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class MetricsHttp(DaemonTestCase):
    def start_with_metrics(self, addr="127.0.0.1:0"):
        d = self.start_daemon("--metrics", addr, "--mode", "client", "--workers", "1")
        m = d.wait_line(r" info metrics_listening .*addr=(\S+)", 5.0)
        host, _, port = m.group(1).rpartition(":")
        return d, host.strip("[]"), int(port)

    def slow_client(self, host, port):
        s = socket.create_connection((host, port), timeout=5.0)
        self.addCleanup(s.close)
        s.sendall(HALF_REQUEST)
        return s

    def scrape(self, host, port, timeout=1.0):
        """A whole GET /metrics within `timeout` s: (seconds taken, body); raises on a timeout."""
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            body = r.read().decode()  # IncompleteRead unless all Content-Length bytes came
            self.assertEqual(r.status, 200)
        finally:
            conn.close()
        return time.monotonic() - t0, body

    def http_conns(self, body):
        for line in body.splitlines():
            if line.startswith("ringbeat_metrics_http_connections "):
                return int(line.split()[1])
        self.fail("no ringbeat_metrics_http_connections in the exposition")

    def assert_open(self, s):
        """The server has neither closed s nor answered on it."""
        s.settimeout(0.0)  # with a timeout, recv would first wait for data
        try:
            data = s.recv(1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        self.fail("slow client got %r: the server closed or answered it" % data)

    def wait_http_conns(self, host, port, want, within_s):
        deadline = time.monotonic() + within_s
        while True:
            _, body = self.scrape(host, port)
            n = self.http_conns(body)
            if n == want:
                return
            self.assertLess(time.monotonic(), deadline,
                            "ringbeat_metrics_http_connections stayed at %d, want %d" % (n, want))
            time.sleep(0.05)

    def test_a_scrape_answers_within_1s_while_50_slow_clients_hold_connections(self):
        _, host, port = self.start_with_metrics()
        slow = [self.slow_client(host, port) for _ in range(50)]
        for _ in range(3):
            took, body = self.scrape(host, port, timeout=1.0)
            self.assertLess(took, 1.0)
            self.assertTrue(body.endswith("\n") and "ringbeat_build_info" in body)
            # All 50 were accepted and are held beside the scrape, not parked in the backlog.
            self.assertEqual(self.http_conns(body), 51)
        for s in slow:
            self.assert_open(s)

    def test_a_closed_slow_client_is_released_at_once(self):
        _, host, port = self.start_with_metrics()
        slow = [self.slow_client(host, port) for _ in range(10)]
        _, body = self.scrape(host, port)
        self.assertEqual(self.http_conns(body), 11)
        for s in slow:
            s.close()
        # Well inside the idle timeout: the close itself must release the connection.
        self.wait_http_conns(host, port, 1, within_s=1.0)

    def test_a_silent_slow_client_is_timed_out(self):
        _, host, port = self.start_with_metrics()
        s = self.slow_client(host, port)
        t0 = time.monotonic()
        s.settimeout(IDLE_TIMEOUT_S + 3.0)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - t0
        self.assertEqual(data, b"", "the server answered half a request")
        self.assertGreater(took, IDLE_TIMEOUT_S - 1.0)
        self.assertLess(took, IDLE_TIMEOUT_S + 2.0)
        self.wait_http_conns(host, port, 1, within_s=1.0)

    def test_the_connection_limit_holds_and_frees(self):
        _, host, port = self.start_with_metrics()
        slow = [self.slow_client(host, port) for _ in range(MAX_CONNS)]
        # At the limit the next connection waits in the kernel's backlog, unanswered...
        conn = http.client.HTTPConnection(host, port, timeout=0.5)
        conn.request("GET", "/metrics")
        with self.assertRaises(socket.timeout):
            conn.getresponse()
        conn.close()
        for s in slow[:10]:
            s.close()
        # ...and as soon as slots free up, scrapes are served again.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                _, body = self.scrape(host, port, timeout=1.0)
                break
            except (socket.timeout, ConnectionError, http.client.HTTPException):
                self.assertLess(time.monotonic(), deadline, "no scrape served after slots freed")
        self.assertLessEqual(self.http_conns(body), MAX_CONNS)
        for s in slow[10:]:
            self.assert_open(s)

    def test_other_paths_and_methods(self):
        _, host, port = self.start_with_metrics()
        for method, path, want in (("GET", "/", 404), ("GET", "/metricsx", 404),
                                   ("POST", "/metrics", 405), ("HEAD", "/metrics", 405),
                                   ("GET", "/metrics?x=1", 200)):
            conn = http.client.HTTPConnection(host, port, timeout=2.0)
            try:
                conn.request(method, path, body=b"x=1" if method == "POST" else None)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, want, "%s %s" % (method, path))
                if want == 405:
                    self.assertEqual(r.getheader("Allow"), "GET")
            finally:
                conn.close()

    def test_garbage_is_closed_and_others_are_undisturbed(self):
        _, host, port = self.start_with_metrics()
        bad = []
        for junk in (b"\x00\x01\x02 nonsense \xff\r\n\r\n", b"nonsense\r\n\r\n",
                     b"GET / HTTP/9.9\r\n\r\n", b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 4000):
            s = socket.create_connection((host, port), timeout=5.0)
            self.addCleanup(s.close)
            try:
                s.sendall(junk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # already refused
            bad.append(s)
        took, _ = self.scrape(host, port)
        self.assertLess(took, 1.0)
        # Each one is released: an error status or a plain close, within the idle timeout.
        for s in bad:
            s.settimeout(IDLE_TIMEOUT_S + 2.0)
            reply = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            except ConnectionResetError:
                pass
            self.assertTrue(reply == b"" or reply.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5")),
                            reply[:80])
            self.assertNotIn(b"ringbeat_", reply)
        self.wait_http_conns(host, port, 1, within_s=1.0)

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_address(self):
        _, host, port = self.start_with_metrics("[::1]:0")
        self.assertEqual(host, "::1")
        took, body = self.scrape(host, port)
        self.assertIn("ringbeat_build_info", body)

    def test_a_busy_address_is_a_clear_start_error(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            d = Daemon("--metrics", "127.0.0.1:%d" % busy.getsockname()[1])
            try:
                d.wait_line(r"error start_failed op=metrics .*err=\"Address already in use\"")
                self.assertEqual(d.wait_exit(5.0), 1)
            finally:
                d.kill()

if __name__ == "__main__":
    unittest.main()
