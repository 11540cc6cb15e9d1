# test_client_thread.py — libringbeat-client's helper thread, with calls from another thread.
"""The driver runs the library's own thread (rbc_thread_start): events arrive on it while the
driver's main thread sends DATA, toggles the foreground and changes the network from stdin
commands, so every public call races the thread's steps. run-tests.sh also runs this file under
ThreadSanitizer.
"""

import unittest

from rbclient import record
from test_client import FAST, ClientCase


class HelperThread(ClientCase):
    def setUp(self):
        self.d = self.start_daemon("--mode", "client", "--interval", "2s", "--min-interval", "1s",
                                   "--max-interval", "60s", "--stats-interval", "0")

    def test_calls_from_another_thread_while_the_helper_steps(self):
        state = self.state_file(["b " + record(2000)])
        c = self.driver(self.url(self.d), "--thread", *FAST, "--network", "a", state=state)
        c.wait_ev("connected", 5.0)
        for i in range(20):
            self.assertEqual(c.command("send msg-%d" % i)["r"], 0)
        got = set()
        while len(got) < 20:
            got.add(c.wait_ev("data", 3.0, c.last_index + 1 if got else 0)["text"])
        self.assertEqual(got, {"msg-%d" % i for i in range(20)})
        c.command("fg 1")
        c.command("fg 0")
        n = c.count()
        c.command("net b")
        c.wait_ev("connected", 3.0, n)
        self.assertEqual(c.wait_ev("tuned", 4.0, c.last_index)["interval"], 2000)
        c.wait_ev("heartbeat", 4.0, c.last_index, ok=1, interval=2000)
        self.assertEqual(c.stats()["heartbeats_failed"], 0)
        c.quit()


if __name__ == "__main__":
    unittest.main()
