# test_load.py — ringbeat-load's own view: lateness from real send times, its lag, self-inflicted deaths.
"""The load generator measures the server (detection lateness, false deaths) and must not charge
the server with its own faults. These tests drive ringbeatd in server mode (the server PINGs,
the load answers) with the real load generator ($RINGBEAT_LOAD) and check its JSON summary
(tools/load/main.c write_json) against what the server did.
"""

import os
import signal
import time
import unittest

import test_faults

# Server-mode heartbeats every second, dead after 3 s of silence.
SERVER = ("--stats-interval", "0", "--mode", "server", "--interval", "1s", "--timeout", "3s")


class LoadOwnView(test_faults.FaultCase):
    CONNS = 400

    def start_server_load(self, d, duration_s, *extra):
        """The load in server mode against `d` (start_load() makes a client-mode load)."""
        return self.start_load(d.port, self.CONNS, duration_s, "--mode", "server", "--timeout",
                               "3s", *extra)

    def test_silenced_peers_detected_within_two_ticks_of_the_real_last_send(self):
        """5% go silent; the server closes them 3 s after its last frame from them, rounded up to
        its 10 ms tick. The load times that from when its last PONG's submit returned, so its
        lateness stays within two ticks: never the hundreds of ms a queueing time or a stale
        turn clock would add. Nothing is early, nobody else dies, no answer is late."""
        d = self.start_daemon(*SERVER)
        load = self.start_server_load(d, 8, "--silent-pct", "5", "--silent-after", "2s")
        rc, res = self.finish_load(load, 40)
        self.assertEqual(rc, 0, res["_stdout"])
        n = self.CONNS * 5 // 100
        self.assertEqual(res["silenced"], n, res["_stdout"])
        self.assertEqual(res["detected"], n, res["_stdout"])
        self.assertEqual(res["detected_early"], 0, res["_stdout"])
        self.assertLess(res["detection_lateness_ms"]["max"], 2 * 10 + 30, res["_stdout"])
        self.assertEqual(res["false_deaths"], 0, res["_stdout"])
        self.assertEqual(res["self_inflicted"], 0, res["_stdout"])
        self.assertEqual(res["late_answers"], 0, res["_stdout"])
        # The load's own lag is reported beside the figure, and every PONG had its time taken.
        self.assertEqual(res["answer_lag_us"]["count"], res["pongs_sent"], res["_stdout"])
        self.assertGreater(res["loop_lag_us"]["count"], 0, res["_stdout"])
        self.assertEqual(res["closes_by_code"], {"2": n}, res["_stdout"])

    def test_a_stalled_load_is_self_inflicted_not_a_false_death(self):
        """The load stops (SIGSTOP) for longer than the timeout: the server rightly closes every
        connection. By its own clock the load sent nothing for a whole timeout, so it counts
        those deaths as self-inflicted, not as the server's false deaths, says how late its loop
        ran, and exits 1 (the run is not clean)."""
        d = self.start_daemon(*SERVER)
        load = self.start_server_load(d, 10)
        self.assertIsNotNone(self.wait_conns(d, self.CONNS, 8.0, load))
        time.sleep(1.5)  # heartbeats going
        os.kill(load.pid, signal.SIGSTOP)
        try:
            time.sleep(4.5)  # > the 3 s timeout
        finally:
            os.kill(load.pid, signal.SIGCONT)
        rc, res = self.finish_load(load, 40)
        self.assertEqual(rc, 1, res["_stdout"])
        self.assertEqual(res["closes_by_code"], {"2": self.CONNS}, res["_stdout"])
        self.assertEqual(res["self_inflicted"], self.CONNS, res["_stdout"])
        self.assertEqual(res["false_deaths"], 0, res["_stdout"])
        self.assertGreater(res["loop_lag_us"]["max"], 3000000, res["_stdout"])
        self.assertIn("self_inflicted", res)


if __name__ == "__main__":
    unittest.main()
