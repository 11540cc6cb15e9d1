# rbnetns.py — a NAT lab of three network namespaces (client, MASQUERADE router, server) for tests.
"""client ns (NET_C.2) --- router ns (NET_C.1 | NET_S.1, MASQUERADE out) --- server ns (NET_S.2)

Every rule and sysctl lives inside the namespaces (never the root one): the router forwards,
masquerades out of wan0, drops INVALID packets and, with nf_conntrack_tcp_loose 0, never adopts a
connection it did not see open, so once the mapping of an idle connection expires every later
packet of it is dropped both ways, as behind a carrier NAT. Namespace names carry the test's pid,
and those of killed runs (pid gone) are removed first. Needs root, ip, iptables and conntrack.
"""

import os
import re
import subprocess
import unittest

import rbtest


def run(*args, check=True):
    p = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (rc=%d): %s" % (" ".join(args), p.returncode,
                                                       p.stderr.decode(errors="replace").strip()))
    return p.stdout.decode(errors="replace")


def remove_stale(prefix):
    """Namespaces left by a killed run (their pid is gone) are removed before a new one."""
    try:
        names = run("ip", "netns", "list", check=False).split()
    except (OSError, subprocess.SubprocessError):
        return
    for name in names:
        m = re.match(re.escape(prefix) + r"(\d+)-[crs]$", name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            run("ip", "netns", "del", name, check=False)


class NatLab(unittest.TestCase):
    """setUp of a subclass calls build_lab(); PREFIX, NET_C and NET_S are its own (unique)."""

    PREFIX = NET_C = NET_S = None

    def build_lab(self, conntrack_s):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to create network namespaces")
        for tool in ("ip", "iptables", "conntrack"):
            if not rbtest.which(tool):
                raise unittest.SkipTest("%s is not installed (tools/install-deps.sh)" % tool)
        rbtest.daemon_path()
        remove_stale(self.PREFIX)
        pid = os.getpid()
        self.ns = {k: "%s%d-%s" % (self.PREFIX, pid, k) for k in "crs"}
        self.procs = []
        self.addCleanup(self.teardown_all)
        for ns in self.ns.values():
            run("ip", "netns", "add", ns)
        c, r, s = self.ns["c"], self.ns["r"], self.ns["s"]
        # Each veth pair is created with both ends inside namespaces: nothing in the root one.
        run("ip", "link", "add", "eth0", "netns", c, "type", "veth", "peer", "name", "lan0",
            "netns", r)
        run("ip", "link", "add", "wan0", "netns", r, "type", "veth", "peer", "name", "eth0",
            "netns", s)
        for ns, dev, addr in ((c, "eth0", self.NET_C + ".2"), (r, "lan0", self.NET_C + ".1"),
                              (r, "wan0", self.NET_S + ".1"), (s, "eth0", self.NET_S + ".2")):
            run("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", c, "route", "add", "default", "via", self.NET_C + ".1")
        self.in_ns(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.in_ns(r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j",
                   "MASQUERADE")
        self.in_ns(r, "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID",
                   "-j", "DROP")
        self.in_ns(r, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
        self.set_nat_timeout(conntrack_s)

    def in_ns(self, ns, *args):
        return run("ip", "netns", "exec", ns, *args)

    def set_nat_timeout(self, seconds):
        self.in_ns(self.ns["r"], "sysctl", "-qw",
                   "net.netfilter.nf_conntrack_tcp_timeout_established=%d" % seconds)

    def teardown_all(self):
        for p in reversed(self.procs):
            try:
                p.kill()
            except Exception:  # noqa: BLE001 — cleanup goes on whatever one step raised
                pass
        for ns in self.ns.values():
            run("ip", "netns", "del", ns, check=False)
