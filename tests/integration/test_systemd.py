# test_systemd.py — the generated ringbeatd.service passes systemd-analyze verify and its flags work.
"""The build configures tools/ringbeatd.service for the install prefix, so its ExecStart names a
binary that is usually not installed here. The unit is copied to a temporary directory with
ExecStart pointing at the built ringbeatd, and verified there. `Documentation=man:ringbeatd(8)` is
checked against the man page the project ships (docs/man/ringbeatd.8) through MANPATH.
"""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

import rbtest

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The only complaint allowed: the documentation reference cannot be resolved by `man`.
MAN_WARNING = re.compile(r"Command 'man ringbeatd\(8\)' failed|man:ringbeatd\(8\)")


def unit_path():
    build = os.environ.get("RINGBEAT_BUILD_DIR")
    path = os.path.join(build, "tools", "ringbeatd.service") if build else None
    if not path or not os.path.exists(path):
        raise unittest.SkipTest("generated ringbeatd.service not found: set RINGBEAT_BUILD_DIR "
                                "(got %r)" % path)
    return path


def exec_start(text):
    """The ExecStart command line of a unit, continuation lines joined, split like a shell."""
    joined = re.sub(r"\\\n", " ", text)
    m = re.search(r"^ExecStart=(.*)$", joined, re.M)
    if not m:
        raise AssertionError("no ExecStart in the unit:\n%s" % text)
    return shlex.split(m.group(1))


class SystemdUnitTest(unittest.TestCase):
    def setUp(self):
        self.unit = unit_path()
        with open(self.unit, encoding="utf-8") as f:
            self.text = f.read()
        self.tmp = tempfile.mkdtemp(prefix="rb-systemd-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def rewritten_unit(self):
        """The unit with ExecStart's binary replaced by the built daemon, in a temp dir."""
        daemon = rbtest.daemon_path()
        argv = exec_start(self.text)
        text = self.text.replace("ExecStart=" + argv[0], "ExecStart=" + daemon, 1)
        self.assertEqual(exec_start(text)[0], daemon)
        path = os.path.join(self.tmp, "ringbeatd.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def verify(self, path, *extra, env=None):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze is not installed (tools/install-deps.sh installs "
                          "systemd); the unit file was not verified")
        p = subprocess.run([tool, "verify", *extra, path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, env=env)
        out = p.stdout.decode("utf-8", "replace")
        return p.returncode, [l for l in out.splitlines() if l.strip()]

    def test_configured_for_the_install_prefix(self):
        self.assertNotRegex(self.text, r"@[A-Z_]+@", "unsubstituted @VAR@ left in the unit")
        argv = exec_start(self.text)
        self.assertTrue(os.path.isabs(argv[0]), argv[0])
        self.assertEqual(os.path.basename(argv[0]), "ringbeatd")
        self.assertRegex(self.text, r"(?m)^Type=notify$")

    def test_verify_clean(self):
        path = self.rewritten_unit()
        rc, lines = self.verify(path, "--man=no")
        self.assertEqual(lines, [], "systemd-analyze verify complained")
        self.assertEqual(rc, 0)

    def test_verify_with_documentation(self):
        """Without --man=no, the only thing allowed to fail is finding the man page."""
        path = self.rewritten_unit()
        rc, lines = self.verify(path)
        others = [l for l in lines if not MAN_WARNING.search(l)]
        self.assertEqual(others, [], "systemd-analyze verify complained about more than the "
                                     "man page")
        if rc != 0:
            self.assertTrue(lines, "verify failed (rc=%d) without saying why" % rc)

        # With the shipped man page on MANPATH the documentation reference resolves too.
        man_src = os.path.join(SOURCE_DIR, "docs", "man", "ringbeatd.8")
        if not shutil.which("man") or not os.path.exists(man_src):
            return
        os.makedirs(os.path.join(self.tmp, "man", "man8"))
        shutil.copy(man_src, os.path.join(self.tmp, "man", "man8", "ringbeatd.8"))
        env = dict(os.environ, MANPATH=os.path.join(self.tmp, "man"))
        rc, lines = self.verify(path, env=env)
        self.assertEqual(lines, [], "verify with the shipped man page complained")
        self.assertEqual(rc, 0)

    def test_exec_start_flags_are_accepted(self):
        """The unit's own command line starts the daemon (on loopback ephemeral ports) and it
        drains on SIGTERM, the unit's KillSignal: a flag typo would exit 2 and never restart."""
        argv = exec_start(self.text)[1:]
        flags = []
        i = 0
        while i < len(argv):
            a = argv[i]
            if a in ("--listen", "--metrics"):
                self.assertLess(i + 1, len(argv), "%s without a value" % a)
                if a == "--metrics":
                    flags += ["--metrics", "127.0.0.1:0"]
                i += 2  # --listen is given by Daemon
                continue
            flags.append(a)
            i += 1
        self.assertIn("json", flags)
        d = rbtest.Daemon(*flags, listen="127.0.0.1:0", log_format="json")
        try:
            with d.client() as c:
                w = c.handshake()
                self.assertEqual(w["interval_ms"], 30000)
                self.assertEqual(w["timeout_ms"], 90000)
            d.stop(10.0)
        finally:
            d.kill()


if __name__ == "__main__":
    unittest.main()
