# rbclient.py — helpers for the client-library tests: run tests/client_driver.c and read its events.
"""The driver (tests/client_driver.c) is libringbeat-client inside a small program: it prints one
line per event ("<clock_ms> <event> key=value ...") and takes commands on stdin. Driver collects
the lines in a thread; wait() blocks on a predicate with a deadline, never a blind sleep.
"""

import os
import struct
import subprocess
import threading
import time
import unittest


def driver_path():
    path = os.environ.get("RBC_DRIVER")
    if not path:
        build = os.environ.get("RINGBEAT_BUILD_DIR")
        if build:
            path = os.path.join(build, "tests", "client_driver")
    if not path or not os.access(path, os.X_OK):
        raise unittest.SkipTest("client_driver not found: set RBC_DRIVER (got %r)" % path)
    return path


def parse(line):
    parts = line.split()
    if len(parts) < 2:
        return None
    ev = {"t": int(parts[0]), "ev": parts[1]}
    for kv in parts[2:]:
        k, sep, v = kv.partition("=")
        if not sep:
            continue
        if k == "text":  # the rest of the line, spaces included
            ev[k] = line.split(" text=", 1)[1]
            break
        ev[k] = int(v) if v.lstrip("-").isdigit() else v
    return ev


def record(interval_ms, fallback_ms=None, stable=True, successes=0, failures=0, stable_ms=0):
    """A persisted smart-heartbeat record (docs/client.md, "Persistence"), as hex."""
    return struct.pack(">BBBBIII", 1, 1 if stable else 0, successes, failures, interval_ms,
                       interval_ms if fallback_ms is None else fallback_ms, stable_ms).hex()


class Driver:
    def __init__(self, url, *flags, prefix=(), state=None):
        args = list(prefix) + [driver_path()] + [str(f) for f in flags]
        if state:
            args += ["--state", state]
        args.append(url)
        self.args = args
        self.events = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait(lambda e: e["ev"] in ("created", "create_failed"), 10.0, "start")

    def _read(self):
        for raw in self.proc.stdout:
            ev = parse(raw.decode("utf-8", "replace").rstrip("\n"))
            if ev is None:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def snapshot(self, name=None, since=0):
        with self.cond:
            return [e for e in self.events[since:] if name is None or e["ev"] == name]

    def count(self):
        with self.cond:
            return len(self.events)

    def wait(self, pred, timeout, what, since=0):
        """The first event from index `since` that satisfies pred; fails on exit or deadline."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        self.last_index = i
                        return self.events[i]
                    i += 1
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError("driver exited (rc=%s) before %s; stderr: %s; last "
                                         "events: %r" % (self.proc.returncode, what,
                                                         self.proc.stderr.read().decode(),
                                                         self.events[-15:]))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("driver: no %s within %.1f s; last events: %r"
                                         % (what, timeout, self.events[-15:]))
                self.cond.wait(min(remaining, 0.2))

    def wait_ev(self, name, timeout, since=0, **match):
        def pred(e):
            return e["ev"] == name and all(e.get(k) == v for k, v in match.items())
        return self.wait(pred, timeout, "%s %r" % (name, match), since)

    def command(self, line, timeout=5.0):
        """Sends a command; returns its result event (r=0 or -errno)."""
        n = self.count()
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        cmd = line.split(" ", 1)[0]
        return self.wait(lambda e: e["ev"] == "result" and e.get("cmd") == cmd, timeout,
                         "result of %r" % line, n)

    def stats(self):
        n = self.count()
        self.command("stats")
        return self.wait_ev("stats", 5.0, n)

    def info(self):
        n = self.count()
        self.command("info")
        return self.wait_ev("info", 5.0, n)

    def quit(self, timeout=10.0):
        """Ends the driver through its own rbc_destroy; it must exit 0 with a clean stderr."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
                raise AssertionError("driver did not exit within %.1f s" % timeout)
        self.reader.join(5.0)
        err = self.proc.stderr.read().decode("utf-8", "replace")
        if self.proc.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
            raise AssertionError("driver exit rc=%s, stderr:\n%s" % (self.proc.returncode, err))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        self.reader.join(5.0)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
