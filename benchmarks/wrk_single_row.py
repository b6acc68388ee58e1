"""Single-row /predict under wrk at 1, 8 and 64 connections, against a fresh local stack.

    .venv/bin/python benchmarks/wrk_single_row.py [--seconds 10] [--repeats 3]

Starts nginx + uWSGI + mules with the launcher on a free port (the registry's production model),
warms up, runs wrk with benchmarks/wrk/predict.lua (10,000 distinct rows), prints each run and
the median per connection count as a Markdown table, and stops the stack. Needs wrk
(apt-get install wrk). wrk runs on the same cores as the server: the numbers include its cost.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.stack import Stack  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "wrk" / "predict.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def to_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(SCRIPT), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    stack = Stack(Path(tempfile.mkdtemp(prefix="wrk-bench-")), free_port())
    stack.start()
    try:
        stack.wait_ready()
        wrk(stack.url, 64, 3)  # warm-up, not reported
        runs: dict[int, list[dict[str, float]]] = {1: [], 8: [], 64: []}
        for repeat in range(args.repeats):
            for connections in runs:
                result = wrk(stack.url, connections, args.seconds)
                runs[connections].append(result)
                print(f"run {repeat + 1} c={connections}: {result}", flush=True)
    finally:
        stack.stop()
    print("\n| connections | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
    for connections, results in runs.items():
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(
            f"| {connections} | {median['rps']:.0f} | {median['p50']:.2f} | {median['p99']:.2f} "
            f"| {median['non2xx']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
