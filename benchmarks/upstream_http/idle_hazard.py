"""Idle keep-alive upstream connections against uWSGI's worker threads: do requests still get answered?

    .venv/bin/python benchmarks/upstream_http/idle_hazard.py --checkout keepalive:/tmp/http-keepalive \\
        [--idle 48] [--output FILE]

uWSGI's HTTP/1.1 socket (``--http11-socket``, what the keep-alive hop needs) keeps a worker thread on
each kept-alive connection until the client sends again or ``socket-timeout`` passes (unbit/uwsgi#2019,
#2038); nginx's ``uwsgi_pass`` closes its connection after every answer. Each stack (this checkout, and
every ``--checkout NAME:PATH[:REGISTRY]``, started by the launcher as in ``wrk_single_row.py``) is
measured twice:

1. ``idle``: ``--idle`` connections straight to uWSGI's socket (more than its workers x threads), each
   sending one ``POST /predict`` as nginx would over HTTP/1.1 and then left open, idle, as nginx's
   upstream ``keepalive`` cache leaves them (more nginx workers, a larger ``keepalive`` or fewer threads
   make nginx do this itself); at once, requests through nginx one after the other, each timed, and
   when each straight connection's own request was answered. Only for a stack whose uWSGI speaks HTTP
   (with ``uwsgi_pass`` nginx never leaves a connection idle).
2. ``burst``: the stack with ``--threads`` threads per worker (fewer workers x threads than nginx's
   ``keepalive 32``), a ``--burst``-connection wrk run of 2 s, then requests through nginx one after
   the other, each timed: what nginx's own cache of idle connections does to the next requests.

Prints the latencies (ms) of each series, its median and max, and how many took over 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.wrk_single_row import LauncherStack, Tee, commit_of, load_average, wrk  # noqa: E402

BODY = json.dumps({"date": "2018-01-21", "store": 10, "item": 23}).encode()


def http_request(body: bytes = BODY) -> bytes:
    return (
        b"POST /predict HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def speaks_http(stack: LauncherStack) -> bool:
    """Whether the stack's uWSGI socket answers HTTP (the keep-alive hop) rather than the uwsgi protocol."""
    return "--http11-socket" in " ".join(
        Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        for pid in stack.server_pids()
        if Path(f"/proc/{pid}/cmdline").exists()
    )


class IdleConnections:
    """``count`` connections to the unix socket ``path``, each sending one request as nginx would and then left
    open, idle, as nginx's keep-alive cache leaves them; a thread notes when each one's answer came."""

    def __init__(self, path: Path, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self.answered_after: list[float] = []  # seconds from the sends to each answer
        self.started = time.monotonic()
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            sock.sendall(http_request())
            self.sockets.append(sock)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self, timeout_s: float = 30) -> None:
        waiting = list(self.sockets)
        while waiting and time.monotonic() - self.started < timeout_s:
            ready, _, _ = select.select(waiting, [], [], 0.5)
            for sock in ready:
                if sock.recv(65536).startswith(b"HTTP/1.1 200"):
                    self.answered_after.append(time.monotonic() - self.started)
                waiting.remove(sock)

    def close(self) -> None:
        self.reader.join()
        for sock in self.sockets:
            sock.close()


def timed_requests(url: str, count: int, timeout_s: float = 30) -> list[float]:
    """``count`` single-row requests through nginx, one after the other: each one's milliseconds (-1: failed)."""
    latencies = []
    for _ in range(count):
        request = urllib.request.Request(f"{url}/predict", data=BODY, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
            latencies.append((time.perf_counter() - started) * 1000)
        except (urllib.error.URLError, OSError):
            latencies.append(-1.0)
    return latencies


def describe(name: str, what: str, latencies: list[float]) -> str:
    ok = [value for value in latencies if value >= 0]
    return (
        f"{name} {what}: {len(ok)}/{len(latencies)} answered, median {statistics.median(ok) if ok else 0:.1f} ms, "
        f"max {max(ok) if ok else 0:.1f} ms, over 1 s {sum(1 for value in ok if value > 1000)}; "
        f"ms in order {[round(value, 1) for value in latencies]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", default=[], help="NAME:PATH[:REGISTRY] of another checkout")
    parser.add_argument("--idle", type=int, default=48, help="idle connections straight to uWSGI (default 48)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker in the burst test (default 8)")
    parser.add_argument("--burst", type=int, default=64, help="wrk connections of the burst (default 64)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests after each (default 20)")
    parser.add_argument("--output", type=Path, help="write everything printed to this file too")
    args = parser.parse_args()
    if args.output is not None:
        sys.stdout = Tee(sys.stdout, args.output.open("w"))
    registry = Path(os.environ.get("FORECAST_REGISTRY_DIR", ROOT / "registry")).resolve()
    checkouts = {"uwsgi_pass": (ROOT, registry)}
    for text in args.checkout:
        name, _, where = text.partition(":")
        path, _, other = where.partition(":")
        checkouts[name] = (Path(path).resolve(), Path(other).resolve() if other else registry)
    print(f"# idle_hazard {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; load average {load_average()}")
    print(f"# command: {subprocess.list2cmdline([Path(sys.executable).name, *sys.argv])}")
    for name, (path, _) in checkouts.items():
        print(f"# stack {name}: {path} at {commit_of(path)}")
    for name, (path, reg) in checkouts.items():
        stack = LauncherStack(name, path, reg, {})
        stack.start()
        try:
            if not speaks_http(stack):
                print(f"{name} idle: not applicable (uwsgi protocol: nginx closes each connection after its answer)")
            else:
                idle = IdleConnections(stack.run_dir / "uwsgi.sock", args.idle)
                try:
                    latencies = timed_requests(stack.url, args.requests)
                finally:
                    idle.close()
                print(describe(name, f"through nginx beside {args.idle} connections straight to uWSGI", latencies))
                after = sorted(round(seconds, 2) for seconds in idle.answered_after)
                print(f"{name}: the {args.idle} straight connections' own requests answered after (s): {after}")
        finally:
            stack.stop()
        threads = {"FORECAST_UWSGI_THREADS": str(args.threads)}
        stack = LauncherStack(f"{name}-t{args.threads}", path, reg, threads)
        stack.start()
        try:
            burst = wrk(stack.url, args.burst, 2)
            latencies = timed_requests(stack.url, args.requests)
            print(f"{name} with {threads}: burst of {args.burst} connections for 2 s: {burst}")
            print(describe(name, f"after the burst ({args.threads} threads per worker)", latencies))
        finally:
            stack.stop()
    print(f"# ended {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
