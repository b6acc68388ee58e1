"""Single rows under load while mules are SIGKILLed one after another: is any request lost to a kill?

    .venv/bin/python benchmarks/mule_kills.py [--seconds 60] [--repeats 2] [--threads 16]
    .venv/bin/python benchmarks/mule_kills.py --checkout before:/tmp/checkout-of-the-old-commit

Starts this checkout's stack (and each ``--checkout NAME:PATH``'s own, as benchmarks/wrk_single_row.py
does), posts single rows from ``--threads`` threads for ``--seconds``, and meanwhile kills one mule,
waits until ``/status`` is 200 again (every mule serves: one always did), kills the next, and so
on. With a mule always serving, a request answered 504 (its deadline passed) is a job the kills
lost; 503 ``mule_died`` is the answer the service promises when a second mule dies holding the
same job. Runs alternate between the stacks; prints each run and a Markdown table of the totals.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.wrk_single_row import Target, in_turns, targets  # noqa: E402

BODY = b'{"date": "2018-01-21", "store": 10, "item": 23}'


def post_forever(url: str, stop: threading.Event, counts: Counter[str], lock: threading.Lock) -> None:
    """Post single rows on one keep-alive connection until ``stop``; count each status (or error kind)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    while not stop.is_set():
        try:
            connection.request("POST", "/predict", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            outcome = str(response.status)
            if response.status == 503:
                outcome += " " + json.loads(body).get("code", "?")
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
            connection.close()
        with lock:
            counts[outcome] += 1
    connection.close()


def status(url: str) -> tuple[int, list[int]]:
    """``/status``'s code and the mules' pids it names."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=5)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        body = json.loads(response.read())
        return response.status, [int(mule["pid"]) for mule in body.get("mules", [])]
    finally:
        connection.close()


def kill_in_turn(url: str, until: float) -> int:
    """Kill the mules one at a time, each once the pool is whole again; the number of kills."""
    kills, turn = 0, 0
    while time.monotonic() < until:
        code, pids = status(url)
        if code != 200 or not pids:
            time.sleep(0.05)  # polling interval while the killed mule comes back
            continue
        time.sleep(0.2)  # let the respawned mule take work before the next kill
        turn += 1
        try:
            os.kill(pids[turn % len(pids)], signal.SIGKILL)
        except ProcessLookupError:  # /status named a mule that had just exited: not a kill
            continue
        kills += 1
    return kills


def one_run(target: Target, seconds: int, threads: int) -> dict[str, int]:
    stop, lock, counts = threading.Event(), threading.Lock(), Counter[str]()
    posters = [threading.Thread(target=post_forever, args=(target.url, stop, counts, lock)) for _ in range(threads)]
    for poster in posters:
        poster.start()
    kills = kill_in_turn(target.url, time.monotonic() + seconds)
    time.sleep(6)  # longer than the request deadline (5 s): the last kill's requests are answered
    stop.set()
    for poster in posters:
        poster.join(60)
    return {"kills": kills, **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--variant", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME:PATH[:REGISTRY]")
    args = parser.parse_args()
    stacks = targets(args)
    totals: dict[str, Counter[str]] = {name: Counter() for name in stacks}
    try:
        for target in stacks.values():
            target.start()
        for repeat in range(args.repeats):
            for name, target in in_turns(stacks, repeat):
                result = one_run(target, args.seconds, args.threads)
                totals[name].update(result)
                print(f"run {repeat + 1} {name}: {result}", flush=True)
    finally:
        for target in stacks.values():
            target.stop()
    outcomes = sorted({key for total in totals.values() for key in total} - {"kills"})
    print("\n| stack | kills | " + " | ".join(outcomes) + " |")
    print("|---|---:|" + "---:|" * len(outcomes))
    for name, total in totals.items():
        print(f"| {name} | {total['kills']} | " + " | ".join(f"{total[key]:,}" for key in outcomes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
