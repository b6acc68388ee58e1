"""Quick wrk sweep of Ray Serve settings (the numbers in README "Tuning"). Project venv:

    .venv/bin/python benchmarks/ray_serve/tune.py [--seconds 10] [--port 18620] [NAME ...]

Each variant: a fresh RayStack, 3 s wrk warm-up, then `wrk -t2 -c64 -d10s --latency -s
benchmarks/wrk/predict.lua`; prints req/s, p50, p99, non-2xx/timeouts and the load average (the
machine may be shared), then stops the stack. Variants set app.py's RAY_BENCH_* knobs via env.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ray_serve.stack import RayStack  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "wrk" / "predict.lua"

# name: (config, server.py extra args, env for app.py's RAY_BENCH_* knobs)
B = {"RAY_BENCH_MAX_ONGOING": "256", "RAY_BENCH_BATCH_SIZE": "128", "RAY_BENCH_BATCH_WAIT_S": "0.003"}
VARIANTS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "tutorial": ("tutorial", (), {}),
    "tutorial-nice0-quiet": ("tutorial", ("--worker-niceness", "0", "--quiet"), {}),
    "tuned-nice15-loud": ("tuned", ("--worker-niceness", "15", "--no-quiet", "--no-throughput-optimized"), B),
    "tuned-noTO": ("tuned", ("--no-throughput-optimized",), B),
    "tuned": ("tuned", (), B),  # = RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (server.py default for tuned)
    "tuned-mo128-b64-w2ms": (
        "tuned",
        ("--no-throughput-optimized",),
        {**B, "RAY_BENCH_MAX_ONGOING": "128", "RAY_BENCH_BATCH_SIZE": "64", "RAY_BENCH_BATCH_WAIT_S": "0.002"},
    ),
    "tuned-b256-w5ms": (
        "tuned",
        ("--no-throughput-optimized",),
        {**B, "RAY_BENCH_BATCH_SIZE": "256", "RAY_BENCH_BATCH_WAIT_S": "0.005"},
    ),
    "tuned-nobatch": (
        "tuned",
        ("--no-throughput-optimized",),
        {**B, "RAY_BENCH_BATCH_SIZE": "1", "RAY_BENCH_BATCH_WAIT_S": "0"},
    ),
}


def wrk(url: str, seconds: int, connections: int = 64) -> dict[str, object]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(SCRIPT), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def grab(pattern: str) -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else "-"

    return {
        "rps": grab(r"Requests/sec:\s+([\d.]+)"),
        "p50": grab(r"50%\s+(\S+)"),
        "p99": grab(r"99%\s+(\S+)"),
        "non2xx": grab(r"Non-2xx or 3xx responses:\s+(\d+)"),
        "timeouts": grab(r"timeout (\d+)"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=18620)
    args = parser.parse_args()
    print("| variant | req/s | p50 | p99 | non-2xx | timeouts | startup s | load avg |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.names:
        config, extra, env = VARIANTS[name]
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        stack = RayStack(config, args.port, ROOT / "registry", Path(f"/tmp/ray-tune-{name}.log"), extra_args=extra)
        try:
            stack.start()
            ready = stack.wait_ready(180)
            wrk(stack.url, 3)
            result = wrk(stack.url, args.seconds)
            load = os.getloadavg()[0]
            print(
                f"| {name} | {result['rps']} | {result['p50']} | {result['p99']} | {result['non2xx']} | "
                f"{result['timeouts']} | {ready:.1f} | {load:.1f} |",
                flush=True,
            )
        finally:
            stack.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
