# histwin.py — ringbeatd's /metrics histograms for bench/run.py: scrape, window, percentiles.
"""The server's RTT and detection-lateness histograms, per sampling window.

ringbeatd's histograms are cumulative since it started: a ramp's seconds-long answers would pin
their p99 for the whole run. run.py scrapes /metrics with every sample; the difference of two
consecutive scrapes is the histogram of that window alone, and its percentiles are what run.py
reports and plots. The cumulative figure is kept as the one labelled "whole run" value.
Python 3 standard library only.
"""

import http.client
import math
import re
import statistics

# family -> (Prometheus name, factor from seconds to the unit run.py reports)
HISTS = {"rtt": ("ringbeat_heartbeat_rtt_seconds", 1e6),  # microseconds
         "late": ("ringbeat_detection_lateness_seconds", 1e3)}  # milliseconds
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LE_RE = re.compile(r'(?:^|,)le="([^"]*)"')


def parse_hists(text):
    """The exposition -> {family: (finite bounds in run.py's unit, cumulative counts incl. +Inf)}.

    Series that differ in labels other than le are summed (any future per-label split)."""
    acc = {k: {} for k in HISTS}
    names = {v[0] + "_bucket": k for k, v in HISTS.items()}
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if not m or m.group(1) not in names:
            continue
        le = LE_RE.search(m.group(2) or "")
        if not le:
            continue
        fam = names[m.group(1)]
        bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
        acc[fam][bound] = acc[fam].get(bound, 0) + float(m.group(3))
    out = {}
    for fam, buckets in acc.items():
        if not buckets or math.inf not in buckets:
            continue
        les = sorted(buckets)
        scale = HISTS[fam][1]
        cum, top = [], 0.0
        for le in les:
            top = max(top, buckets[le])  # relaxed counter reads: keep it monotonic
            cum.append(top)
        out[fam] = ([round(le * scale, 6) for le in les[:-1]], cum)
    return out


def scrape_hists(addr, timeout=1.0):
    """GET /metrics from addr ("HOST:PORT", "[v6]:PORT"); parse_hists() of it, or None."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return parse_hists(body) if r.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def hist_quantile(bounds, cum, q):
    """Like Prometheus' histogram_quantile: linear inside the bucket; None without samples.

    A quantile in the +Inf bucket is reported as the highest finite bound (a lower limit)."""
    total = cum[-1] if cum else 0
    if total <= 0:
        return None
    rank = q * total
    prev = 0.0
    for i, c in enumerate(cum):
        if c >= rank and c > prev:
            if i >= len(bounds):
                return float(bounds[-1])
            lo = bounds[i - 1] if i > 0 else 0.0
            return lo + (bounds[i] - lo) * (rank - prev) / (c - prev)
        prev = c
    return float(bounds[-1])


def hist_between(h0, h1, fam):
    """(bounds, cumulative counts) of what happened between two scrapes, or None."""
    if not h0 or not h1 or fam not in h0 or fam not in h1 or h0[fam][0] != h1[fam][0]:
        return None
    d = [b - a for a, b in zip(h0[fam][1], h1[fam][1])]
    if d and d[-1] < 0:
        return None  # the server restarted
    top = 0.0
    for i, v in enumerate(d):
        top = max(top, v)
        d[i] = top
    return h1[fam][0], d


def window_stats(h_prev, h_now):
    """Per-window figures of one scrape against the one before it, plus the cumulative p99."""
    out = {}
    for fam in HISTS:
        w = hist_between(h_prev, h_now, fam)
        if w is not None:
            out[f"{fam}_n"] = w[1][-1]
            out[f"{fam}_p50"] = hist_quantile(w[0], w[1], 0.50)
            out[f"{fam}_p99"] = hist_quantile(w[0], w[1], 0.99)
        if h_now and fam in h_now:
            out[f"{fam}_cum_p99"] = hist_quantile(h_now[fam][0], h_now[fam][1], 0.99)
    return out


class Scraper:
    """Scrapes the server's /metrics once per sample; keeps the last histograms for windows."""

    def __init__(self, reader):
        self.reader = reader
        self.prev = None
        self.first = None
        self.failures = 0

    def sample(self):
        """Window figures since the last scrape ({} before the first or when none answers)."""
        addr = self.reader.metrics_addr
        if addr is None:
            return {}, None
        h = scrape_hists(addr)
        if h is None:
            self.failures += 1
            return {}, None
        w = window_stats(self.prev, h)
        self.prev = h
        if self.first is None:
            self.first = h
        return w, h


def window_figures(samples, t1, t2, f):
    """Per-window RTT (hold windows) and server lateness (every window with a detection)."""
    hold = [x for x in samples if t1 <= x["t"] <= t2 and x.get("w")]
    rtt = [x["w"] for x in hold if x["w"].get("rtt_n")]
    if rtt:
        f["rtt_p50_us"] = round(statistics.median(w["rtt_p50"] for w in rtt), 1)
        f["rtt_p99_us"] = round(statistics.median(w["rtt_p99"] for w in rtt), 1)
        f["rtt_p99_us_window_max"] = round(max(w["rtt_p99"] for w in rtt), 1)
        f["rtt_windows"] = len(rtt)
        f["rtt_source"] = ("server /metrics histogram, per sampling window (differences of "
                           "consecutive scrapes), median over the hold's windows")
    # The hold as one window: first and last scrape inside it.
    hs = [x for x in samples if t1 <= x["t"] <= t2 and x.get("hist")]
    if len(hs) >= 2:
        w = hist_between(hs[0]["hist"], hs[-1]["hist"], "rtt")
        if w is not None and w[1][-1] > 0:
            f["rtt_p99_us_hold"] = round(hist_quantile(w[0], w[1], 0.99), 1)
    late = [x["w"] for x in samples if x.get("w") and x["w"].get("late_n")]
    if late:
        f["server_lateness_ms_p50"] = round(statistics.median(w["late_p50"] for w in late), 2)
        f["server_lateness_ms_p99"] = round(statistics.median(w["late_p99"] for w in late), 2)
        f["server_lateness_ms_p99_window_max"] = round(max(w["late_p99"] for w in late), 2)
        f["server_lateness_windows"] = len(late)
        f["server_detections"] = int(sum(w["late_n"] for w in late))
    last = next((x["hist"] for x in reversed(samples) if x.get("hist")), None)
    if last:
        for fam, key, nd in (("rtt", "rtt_p99_us_whole_run", 1),
                             ("late", "server_lateness_ms_p99_whole_run", 2)):
            if fam in last:
                v = hist_quantile(last[fam][0], last[fam][1], 0.99)
                if v is not None:
                    f[key] = round(v, nd)
