"""Memory of one large batch request: how far each process of the tree grows while it is answered.

    .venv/bin/python benchmarks/batch_memory.py [--sizes 45000 500000] [--repeats 3]
    .venv/bin/python benchmarks/batch_memory.py --checkout before:/tmp/checkout-of-the-old-commit

Starts this checkout's stack (and each ``--checkout NAME:PATH``'s own, as
benchmarks/wrk_single_row.py does), then posts each batch of benchmarks/scenarios.py (JSON and
the Kaggle CSV, the published benchmark's bodies), one request at a time, the stacks
interleaved, while a thread reads every server process's PSS (``/proc/<pid>/smaps_rollup``)
every few milliseconds. For each request it records the seconds, the whole tree's PSS just
before, its highest sum at one instant during the request, and which process grew most. Prints
each run and a Markdown table of medians. A request's answer is checked for its row count only;
the suite (``make bench``) checks every value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scenarios import BATCH_FORMATS, batch_body, batch_sales, post_raw  # noqa: E402
from benchmarks.systems import memory_mb  # noqa: E402
from benchmarks.wrk_single_row import Target, in_turns, targets  # noqa: E402

SAMPLE_S = 0.005


@dataclass(frozen=True)
class Run:
    """One request: how long, and the tree's PSS (MB) before, at its highest, and the largest growth of one process."""

    seconds: float
    rows: int
    before_mb: float
    peak_mb: float
    worst_growth_mb: float

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.before_mb


def pss_mb(pid: int) -> float:
    """The process's proportional set size in MB (0 once it is gone)."""
    return memory_mb([pid])["pss_mb"]


def measured_request(target: Target, size: int, fmt: str) -> Run:
    """Post one batch while sampling every server process's PSS."""
    pids = target.server_pids()
    before = {pid: pss_mb(pid) for pid in pids}
    highest = dict(before)
    peak_sum = sum(before.values())
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_sum
        while not done.wait(SAMPLE_S):
            now = {pid: pss_mb(pid) for pid in pids}
            peak_sum = max(peak_sum, sum(now.values()))
            for pid, kb in now.items():
                highest[pid] = max(highest[pid], kb)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    body, headers = batch_body(size, fmt)
    started = time.perf_counter()
    status, data = post_raw(target.url, body, headers)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    rows = len(batch_sales(data, fmt)) if status == 200 else 0
    worst = max(highest[pid] - before[pid] for pid in pids)
    return Run(round(seconds, 3), rows, sum(before.values()), peak_sum, worst)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[45_000, 500_000])
    parser.add_argument("--formats", nargs="+", default=list(BATCH_FORMATS), choices=BATCH_FORMATS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE[,VAR=VALUE]")
    parser.add_argument("--checkout", action="append", default=[], help="NAME:PATH[:REGISTRY] of another checkout")
    args = parser.parse_args()
    stacks = targets(args)
    runs: dict[tuple[str, int, str], list[Run]] = {}
    try:
        for target in stacks.values():
            target.start()
        for repeat in range(args.repeats):
            for size in args.sizes:
                for fmt in args.formats:
                    for name, target in in_turns(stacks, repeat):
                        run = measured_request(target, size, fmt)
                        runs.setdefault((name, size, fmt), []).append(run)
                        print(f"run {repeat + 1} {name} {size} {fmt}: {run}", flush=True)
    finally:
        for target in stacks.values():
            target.stop()
    print_table(runs)
    return 0


def print_table(runs: dict[tuple[str, int, str], list[Run]]) -> None:
    print("\n| stack | rows | format | s | tree PSS before MB | growth at peak MB | most one process grew MB |")
    print("|---|---|---|---|---|---|---|")
    for (name, size, fmt), found in runs.items():
        complete = all(run.rows == size for run in found)
        seconds = f"{statistics.median(r.seconds for r in found):.3f}" if complete else "incomplete"
        print(
            f"| {name} | {size:,} | {fmt} | {seconds} | {statistics.median(r.before_mb for r in found):.0f} "
            f"| {statistics.median(r.growth_mb for r in found):.0f} "
            f"| {statistics.median(r.worst_growth_mb for r in found):.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
