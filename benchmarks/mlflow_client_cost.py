"""What talking to MLflow would cost a web worker: the import time and memory of each way to do it.

    .venv/bin/python benchmarks/mlflow_client_cost.py [--repeats 7]

Makes (once) a scratch virtualenv of the service's requirements plus ``mlflow-skinny`` (MLflow's
client without its server) and ``requests`` (benchmarks/scratch/, with the project's uv), then
imports each way in a fresh Python process of it, after what a web worker has imported anyway
(numpy, Flask, pydantic, the registry), the ways interleaved round by round so that a noisy
machine weighs on all of them alike:

- ``mlflow client``: ``from mlflow import MlflowClient``;
- ``requests``: the HTTP library a hand-written REST client would use;
- ``ours (urllib)``: ``forecast.mlflow_api`` and ``forecast.mlflow_sync``, what the service imports.

Per way: the median import time (ms), the median growth of the process's peak resident memory
(MiB), and the modules it added.  Prints each run and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH_VENV = ROOT / "benchmarks" / "scratch" / "venv-mlflow-client"
PYTHON = SCRATCH_VENV / "bin" / "python"
UV = next((ROOT / ".tools").glob("uv-*/bin/uv"), None)
CLIENTS = ["mlflow-skinny==3.18.0", "requests==2.34.2"]
PRELOAD = "import numpy, flask, pydantic, forecast.registry, forecast.sources"
PROBE = """
import json, resource, sys, time
exec(sys.argv[2])
base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
modules = len(sys.modules)
started = time.perf_counter()
exec(sys.argv[1])
seconds = time.perf_counter() - started
print(json.dumps({"ms": seconds * 1000, "mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 1024,
                  "modules": len(sys.modules) - modules}))
"""
WAYS = {
    "mlflow client": "from mlflow import MlflowClient",
    "requests": "import requests",
    "ours (urllib)": "import forecast.mlflow_api, forecast.mlflow_sync",
}


def scratch_venv() -> None:
    """The service's requirements and the clients, in a virtualenv of its own (made once)."""
    if PYTHON.exists():
        return
    if UV is None:
        raise SystemExit("no uv in .tools/: run `make venv` first")
    subprocess.run([str(UV), "venv", "--quiet", "--python", "python3", str(SCRATCH_VENV)], check=True)
    subprocess.run([str(UV), "pip", "install", "--quiet", "--python", str(PYTHON), "-r",
                    str(ROOT / "requirements.txt"), *CLIENTS], check=True)  # fmt: skip


def measure(statement: str) -> dict[str, float]:
    done = subprocess.run([str(PYTHON), "-c", PROBE, statement, PRELOAD], capture_output=True, text=True, check=True,
                          cwd=ROOT)  # fmt: skip
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    scratch_venv()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit.stdout.strip()}")
    print(f"# .venv/bin/python benchmarks/mlflow_client_cost.py --repeats {args.repeats}")
    print(f"# after: {PRELOAD}")
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way, statement in WAYS.items():
            found = measure(statement)
            runs[way].append(found)
            ms, mib, modules = found["ms"], found["mib"], found["modules"]
            print(f"run {repeat + 1} {way:<14} {ms:8.1f} ms {mib:7.1f} MiB {modules:5.0f} modules")
    print("\n| way | import (ms, median) | peak memory added (MiB, median) | modules |")
    print("|---|---|---|---|")
    for way, measured in runs.items():
        median = {key: statistics.median(r[key] for r in measured) for key in ("ms", "mib", "modules")}
        print(f"| {way} | {median['ms']:.0f} | {median['mib']:.1f} | {median['modules']:.0f} |")


if __name__ == "__main__":
    main()
