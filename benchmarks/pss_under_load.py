"""The whole tree's PSS over minutes of single-row load: does it stay where it started?

    .venv/bin/python benchmarks/pss_under_load.py [--runs 6] [--seconds 20]
    .venv/bin/python benchmarks/pss_under_load.py --checkout before:/tmp/checkout-of-the-old-commit

Starts this checkout's stack (and each ``--checkout NAME:PATH[:REGISTRY]``'s, as
benchmarks/wrk_single_row.py does), then, one stack after the other, runs wrk for ``--runs`` runs
of ``--seconds`` alternating 64 and 1 connections while a thread reads each server process's PSS
every 5 s. Prints every sample (the tree's sum, then each process's) and each stack's first and
last sum. Growth that comes all at once in every process, minutes in, is a garbage collection
copying pages the processes shared (serving/processes.py). Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.systems import memory_mb  # noqa: E402
from benchmarks.wrk_single_row import Target, targets, wrk  # noqa: E402

SAMPLE_S = 5.0


def sample(target: Target) -> tuple[float, list[float]]:
    """The tree's PSS (MB) and each process's, now."""
    each = [memory_mb([pid])["pss_mb"] for pid in target.server_pids()]
    return round(sum(each), 1), each


def follow(name: str, target: Target, runs: int, seconds: int) -> list[float]:
    """Load ``target`` and return the tree's PSS at each sample."""
    sums: list[float] = []
    stop = threading.Event()

    def sampler() -> None:
        started = time.monotonic()
        while not stop.wait(SAMPLE_S):
            total, each = sample(target)
            sums.append(total)
            print(f"{name} +{time.monotonic() - started:4.0f} s: {total} MB {each}", flush=True)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    for run in range(runs):
        wrk(target.url, 64 if run % 2 == 0 else 1, seconds)
    stop.set()
    thread.join()
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE[,VAR=VALUE]")
    parser.add_argument("--checkout", action="append", default=[], help="NAME:PATH[:REGISTRY] of another checkout")
    args = parser.parse_args()
    stacks = targets(args)
    found: dict[str, list[float]] = {}
    try:
        for target in stacks.values():
            target.start()
        for name, target in stacks.items():
            wrk(target.url, 64, 3)  # warm-up, as the other scripts
            found[name] = follow(name, target, args.runs, args.seconds)
    finally:
        for target in stacks.values():
            target.stop()
    for name, sums in found.items():
        print(f"{name}: tree PSS {sums[0]} MB at the first sample, {sums[-1]} MB at the last, highest {max(sums)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
