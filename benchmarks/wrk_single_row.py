"""Single-row /predict under wrk at 1, 8 and 64 connections, against fresh local stacks.

    .venv/bin/python benchmarks/wrk_single_row.py [--seconds 10] [--repeats 3]
    .venv/bin/python benchmarks/wrk_single_row.py --variant no-metrics:FORECAST_METRICS_ENABLED=false

Starts nginx + uWSGI + mules with the launcher on a free port (the registry's production model),
warms up, runs wrk with benchmarks/wrk/predict.lua (10,000 distinct rows), prints each run and
the median per connection count as a Markdown table, and stops the stack. Each ``--variant
NAME:VAR=VALUE[,VAR=VALUE]`` starts another stack beside the default one; runs alternate between
the stacks (default, variant, default, ...) so every configuration sees the same machine noise,
and the table adds each variant's throughput relative to the default. Each run also records the
server's CPU time per request (the whole uWSGI tree and nginx, from /proc): on this shared VM
throughput swings by +-20% between minutes, CPU per request much less, so it is the better
measure of what a change costs. Needs wrk (apt-get install wrk). wrk runs on the same cores as
the server: throughput includes its cost; CPU per request does not.
"""

from __future__ import annotations

import argparse
import os
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
CONNECTIONS = (1, 8, 64)


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


def server_cpu_s(stack: Stack) -> float:
    """User + system CPU seconds used so far by the stack's uWSGI tree and nginx processes."""
    assert stack.uwsgi is not None
    assert stack.nginx is not None
    pids = [stack.uwsgi.pid, stack.nginx.pid]
    for parent in list(pids):
        children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        pids += [int(child) for child in children]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured_run(stack: Stack, connections: int, seconds: int) -> dict[str, float]:
    before = server_cpu_s(stack)
    result = wrk(stack.url, connections, seconds)
    requests = result["rps"] * seconds
    result["cpu_us"] = (server_cpu_s(stack) - before) / requests * 1e6 if requests else 0.0
    return result


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in assignments.split(",") if pair)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE[,VAR=VALUE]")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    configs = [("default", {})] + [parse_variant(v) for v in args.variant]
    stacks = {name: Stack(Path(tempfile.mkdtemp(prefix=f"wrk-{name}-")), free_port(), env) for name, env in configs}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {name: {c: [] for c in args.connections} for name in stacks}
    try:
        for stack in stacks.values():
            stack.start()
            stack.wait_ready()
            wrk(stack.url, 64, 3)  # warm-up, not reported
        for repeat in range(args.repeats):
            for connections in args.connections:
                for name, stack in stacks.items():
                    result = measured_run(stack, connections, args.seconds)
                    runs[name][connections].append(result)
                    print(f"run {repeat + 1} {name} c={connections}: {result}", flush=True)
    finally:
        for stack in stacks.values():
            stack.stop()
    print_table(runs)
    return 0


def print_table(runs: dict[str, dict[int, list[dict[str, float]]]]) -> None:
    print("\n| configuration | connections | req/s | vs default | server CPU µs/req | vs default | p50 ms | p99 ms "
          "| non-2xx |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    medians = {
        name: {c: {key: statistics.median(r[key] for r in results) for key in results[0]} for c, results in per.items()}
        for name, per in runs.items()
    }
    for name, per in medians.items():
        for connections, median in per.items():
            ratio = median["rps"] / medians["default"][connections]["rps"]
            cpu_ratio = median["cpu_us"] / medians["default"][connections]["cpu_us"]
            print(
                f"| {name} | {connections} | {median['rps']:,.0f} | {ratio:.1%} | {median['cpu_us']:.0f} "
                f"| {cpu_ratio:.1%} | {median['p50']:.2f} | {median['p99']:.2f} | {median['non2xx']:.0f} |"
            )
    # Runs alternate, so run i of a variant and run i of the default saw the same machine: their
    # ratio is the fairest comparison on a noisy VM.
    for name, per in runs.items():
        if name == "default":
            continue
        for connections, results in per.items():
            paired = [r["rps"] / d["rps"] for r, d in zip(results, runs["default"][connections], strict=True)]
            print(
                f"paired {name} / default at {connections} connections: median {statistics.median(paired):.1%}, "
                f"mean {statistics.mean(paired):.1%}, range {min(paired):.1%}-{max(paired):.1%} ({len(paired)} pairs)"
            )


if __name__ == "__main__":
    sys.exit(main())
