"""Sequential and wrk-concurrent latency plus uWSGI CPU per request for one probe endpoint."""

import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

port, path = int(sys.argv[1]), sys.argv[2]
pidfile = sys.argv[3]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
conc = int(sys.argv[5]) if len(sys.argv) > 5 else 16
TCK = os.sysconf("SC_CLK_TCK")
master = int(Path(pidfile).read_text())


def pids() -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [master] + [int(p) for p in out]


def cpu(extra: Iterable[int] = ()) -> float:
    t = 0
    for p in list(pids()) + list(extra):
        try:
            f = open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except FileNotFoundError:
            pass
    return t / TCK


c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(200):
    c.request("GET", path)
    c.getresponse().read()
c0 = cpu()
lat = []
t0 = time.perf_counter()
for _ in range(N):
    s = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    b = r.read()
    lat.append(time.perf_counter() - s)
    assert r.status == 200, (r.status, b)
wall = time.perf_counter() - t0
c1 = cpu()
lat.sort()


def q(p: float) -> float:
    return lat[int(p * (len(lat) - 1))] * 1e6


print(
    "SEQ %s n=%d p50=%.0fus p90=%.0fus p99=%.0fus max=%.0fus  rps=%.0f  uwsgiCPU/1000req=%.3fs"
    % (path, N, q(0.5), q(0.9), q(0.99), lat[-1] * 1e6, N / wall, (c1 - c0) / N * 1000)
)
# concurrent with wrk
c0 = cpu()
o = subprocess.run(
    ["wrk", "-t2", "-c%d" % conc, "-d8s", "--latency", "http://127.0.0.1:%d%s" % (port, path)],
    capture_output=True,
    text=True,
).stdout
c1 = cpu()
m_reqs = re.search(r"(\d+) requests in", o)
m_rps = re.search(r"Requests/sec:\s+([\d.]+)", o)
assert m_reqs, o
assert m_rps, o
reqs = int(m_reqs.group(1))
rps = float(m_rps.group(1))
wrk_lat = dict(re.findall(r"\s+(50|99)%\s+(\S+)", o))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", o)
errs = re.search(r"Socket errors.*", o)
print(
    "WRK c=%d %s reqs=%d rps=%.0f p50=%s p99=%s uwsgiCPU/1000req=%.3fs non2xx=%s %s"
    % (
        conc,
        path,
        reqs,
        rps,
        wrk_lat.get("50"),
        wrk_lat.get("99"),
        (c1 - c0) / reqs * 1000,
        non2xx.group(1) if non2xx else 0,
        errs.group(0) if errs else "",
    )
)
