"""Quick wrk sweep of Ray Serve settings (the numbers in README "Tuning"). Project venv:

    .venv/bin/python -m benchmarks.ray_serve.tune [--seconds 10] [--connections 1,64] [NAME ...]

Each variant: a fresh RayStack, 3 s wrk warm-up, then `wrk -t2 -cN -d10s --latency -s
benchmarks/wrk/predict.lua` at each connection count; prints req/s, p50, p99, non-2xx/timeouts and
the load average (the machine may be shared), then stops the stack. Variants set app.py's
RAY_BENCH_* knobs via env. As root it runs in a loopback-only network namespace
(benchmarks/netns.py), which the HAProxy variants need; without it they are skipped.
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

from benchmarks import netns  # noqa: E402
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
    "tuned-proxy-grpc": ("tuned", (), {**B, "RAY_SERVE_PROXY_USE_GRPC": "1"}),  # the proxy's hop over gRPC
    "haproxy": ("tuned", ("--haproxy",), B),  # KubeRay's serve-high-throughput: HAProxy + throughput-optimized
    "haproxy-1-replica": ("tuned", ("--haproxy", "--replicas", "1"), B),
    "haproxy-nobatch": ("tuned", ("--haproxy",), {**B, "RAY_BENCH_BATCH_SIZE": "1", "RAY_BENCH_BATCH_WAIT_S": "0"}),
    "haproxy-plain": ("plain", ("--haproxy",), B),  # bare __call__ with Starlette's request, no FastAPI
    "haproxy-plain-1-replica": ("plain", ("--haproxy", "--replicas", "1"), B),
    "noop": ("noop", (), {}),  # Ray's floor through its Python proxy: a constant, no model
    "haproxy-noop": ("noop", ("--haproxy",), {}),  # Ray's floor behind HAProxy
}


def wrk(url: str, seconds: int, connections: int = 64) -> dict[str, object]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(SCRIPT), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def grab(pattern: str) -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else "-"

    return {
        "rps": grab(r"Requests/sec:\s+([\d.]+)"),
        "p50": grab(r"(?m)^\s+50%\s+(\S+)"),
        "p99": grab(r"(?m)^\s+99%\s+(\S+)"),
        "non2xx": grab(r"Non-2xx or 3xx responses:\s+(\d+)"),
        "timeouts": grab(r"timeout (\d+)"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--port", type=int, default=18620)
    parser.add_argument("--connections", default="1,64")
    args = parser.parse_args()
    if netns.can_isolate() and not netns.inside():
        netns.reexec_isolated("benchmarks.ray_serve.tune", sys.argv[1:])
    if netns.inside():
        netns.bring_loopback_up()
    print(f"network: {'own namespace, loopback only' if netns.inside() else 'the host'}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print("| variant | connections | req/s | p50 | p99 | non-2xx | timeouts | startup s | load avg |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.names:
        config, extra, env = VARIANTS[name]
        if "--haproxy" in extra and not netns.inside():
            print(f"| {name} | skipped: HAProxy binds every interface; run as root for a namespace |", flush=True)
            continue
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        stack = RayStack(config, args.port, ROOT / "registry", Path(f"/tmp/ray-tune-{name}.log"), extra_args=extra)
        try:
            stack.start()
            ready = stack.wait_ready(180)
            wrk(stack.url, 3)
            for connections in (int(c) for c in args.connections.split(",")):
                result = wrk(stack.url, args.seconds, connections)
                load = os.getloadavg()[0]
                print(
                    f"| {name} | {connections} | {result['rps']} | {result['p50']} | {result['p99']} "
                    f"| {result['non2xx']} | {result['timeouts']} | {ready:.1f} | {load:.1f} |",
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
