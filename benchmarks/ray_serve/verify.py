"""End-to-end check of the Ray Serve target, run with the project venv (it has the model deps):

    .venv/bin/python benchmarks/ray_serve/verify.py --config tutorial|tuned [--port 18610]

Starts the target with RayStack, then checks: single rows equal
``Registry(dir).load("production").predict`` exactly; the legacy query form answers a bare number;
the 45,000-row batch (stores 1-10 x items 1-50 x 2018-01-01..2018-03-31) comes back complete, in
order and exact; GET /reload answers 200 with every replica reloaded; SIGKILL of one replica under
light load is recovered by Ray (reports how long). Prints start-up time and tree RSS, stops the
target and checks that none of its processes are left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.ray_serve.stack import RayStack, alive  # noqa: E402
from forecast.features import Rows  # noqa: E402
from forecast.registry import Registry  # noqa: E402


def call(url: str, body: object = None, method: str = "POST", timeout: float = 60.0) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=("tutorial", "tuned"), required=True)
    parser.add_argument("--port", type=int, default=18610)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry")
    parser.add_argument("--log", type=Path, default=Path("/tmp/ray-verify.log"))
    args = parser.parse_args()

    # A private copy of the registry, so the /reload check can promote another version.
    tmp = Path(tempfile.mkdtemp(prefix="ray-verify-"))
    registry_dir = tmp / "registry"
    shutil.copytree(args.registry, registry_dir)
    registry = Registry(registry_dir)
    predictor = registry.load("production")
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    stack = RayStack(args.config, args.port, registry_dir, args.log)
    stack.start()
    try:
        ready = stack.wait_ready(180)
        tree = stack.process_tree_pids()
        print(f"ready after {ready:.1f}s; {len(tree)} processes; tree RSS {stack.rss_kb() / 1024:.0f} MiB", flush=True)
        url = stack.url
        status, root = call(url + "/", method="GET")
        check(status == 200 and root.get("model_version") == predictor.version, f"GET / -> {status} {root}")
        status, st = call(url + "/status", method="GET")
        check(status == 200 and st.get("status") == "Alive", f"GET /status -> {status} {st}")

        # single rows, exact
        rng = random.Random(7)
        days = np.arange(np.datetime64("2017-01-01"), np.datetime64("2019-01-01"))
        rows = [(str(days[rng.randrange(len(days))]), rng.randint(1, 10), rng.randint(1, 50)) for _ in range(200)]
        expected = predictor.predict(Rows.from_columns(*zip(*rows, strict=False)))
        mismatches = 0
        for (d, s, i), want in zip(rows, expected, strict=False):
            status, got = call(url + "/predict", {"date": d, "store": s, "item": i})
            if (
                status != 200
                or got["sales"] != float(want)
                or got["date"] != d
                or got["model_version"] != predictor.version
            ):
                mismatches += 1
        check(
            mismatches == 0,
            f"200 single rows equal Registry.load('production').predict bit for bit ({mismatches} differ)",
        )
        # the same rows from 32 concurrent clients (the tuned config batches them across requests)
        from concurrent.futures import ThreadPoolExecutor

        def one(row: tuple[str, int, int]) -> float:
            return call(url + "/predict", {"date": row[0], "store": row[1], "item": row[2]})[1]["sales"]

        with ThreadPoolExecutor(32) as pool:
            concurrent = list(pool.map(one, rows * 5))
        differ = sum(got != float(want) for got, want in zip(concurrent, list(expected) * 5, strict=False))
        check(differ == 0, f"1,000 single rows from 32 concurrent clients exact ({differ} differ)")
        d, s, i = rows[0]
        status, got = call(f"{url}/predict?date={d}&store={s}&item={i}")
        check(
            status == 200 and isinstance(got, float) and got == float(expected[0]),
            f"legacy query form -> bare number {got!r}",
        )
        status, got = call(url + "/predict", {"date": "2018-02-30", "store": 1, "item": 1})
        check(status == 422, f"impossible date -> {status}")

        # 45,000-row batch, in order
        dates = np.arange(np.datetime64("2018-01-01"), np.datetime64("2018-04-01"))
        batch = [
            {"date": str(dd), "store": ss, "item": ii} for ss in range(1, 11) for ii in range(1, 51) for dd in dates
        ]
        want = predictor.predict(
            Rows.from_columns([r["date"] for r in batch], [r["store"] for r in batch], [r["item"] for r in batch])
        )
        for shape, body in (("list", batch), ("instances", {"instances": batch})):
            t0 = time.monotonic()
            status, got = call(url + "/predict", body, timeout=300)
            took = time.monotonic() - t0
            preds = got.get("predictions", []) if isinstance(got, dict) else []
            same = len(preds) == len(batch) and all(
                p["date"] == r["date"]
                and p["store"] == r["store"]
                and p["item"] == r["item"]
                and p["sales"] == float(w)
                for p, r, w in zip(preds, batch, want, strict=False)
            )
            check(
                status == 200 and same,
                f"45,000-row batch ({shape}) -> {status}, {len(preds)} predictions, in order and exact, {took:.2f}s",
            )

        # reload: every replica
        t0 = time.monotonic()
        status, got = call(url + "/reload", method="GET")
        took = time.monotonic() - t0
        replicas = got.get("replicas", []) if isinstance(got, dict) else []
        check(
            status == 200 and got.get("model_version") == predictor.version and len(replicas) >= 2,
            f"GET /reload -> {status} in {took:.2f}s, {len(replicas)} replicas acknowledged: {got}",
        )

        # reload to another version: every replica must serve it
        others = [v for v in registry.versions() if v != predictor.version]
        if others:
            registry.promote(others[0])
            new = registry.load("production")
            status, got = call(url + "/reload", method="GET")
            replicas = got.get("replicas", []) if isinstance(got, dict) else []
            check(
                status == 200
                and got.get("model_version") == new.version
                and len(replicas) >= 2
                and all(r["model_version"] == new.version for r in replicas),
                f"promote {new.version} + GET /reload -> {status} {got}",
            )
            want_new = new.predict(Rows.from_columns(*zip(*rows[:20], strict=False)))
            with ThreadPoolExecutor(8) as pool:
                got_new = list(
                    pool.map(
                        lambda r: call(url + "/predict", {"date": r[0], "store": r[1], "item": r[2]})[1], rows[:20] * 4
                    )
                )
            check(
                all(
                    g["model_version"] == new.version and g["sales"] == float(w)
                    for g, w in zip(got_new, list(want_new) * 4, strict=False)
                ),
                f"after reload every answer (80, both replicas) is {new.version} and exact",
            )
            registry.promote(predictor.version)
            status, got = call(url + "/reload", method="GET")
            check(
                status == 200 and got.get("model_version") == predictor.version,
                f"back to {predictor.version}: {status}",
            )

        # SIGKILL one replica under light load (~20 req/s)
        before = stack.replica_pids()
        check(len(before) == 2, f"2 replica pids found: {before}")
        stop_load = threading.Event()
        results: list[tuple[float, int]] = []

        def load() -> None:
            while not stop_load.is_set():
                t = time.monotonic()
                try:
                    status, _ = call(url + "/predict", {"date": "2018-01-21", "store": 10, "item": 23}, timeout=10)
                except Exception:
                    status = -1
                results.append((t, status))
                time.sleep(0.05)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(1.0)
        victim = before[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        back_after = None
        while time.monotonic() - killed_at < 120:
            now = [p for p in stack.replica_pids() if alive(p)]
            if len(now) == 2 and victim not in now:
                back_after = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        # the new replica is up when the controller sees it; give it a moment to take traffic
        time.sleep(2.0)
        stop_load.set()
        loader.join()
        after = stack.replica_pids()
        errors = [(round(t - killed_at, 2), s) for t, s in results if s != 200]
        check(
            back_after is not None,
            f"replica {victim} SIGKILLed; replacement process up after "
            f"{back_after if back_after is None else round(back_after, 1)}s; replicas now {after}; "
            f"{len(results)} requests under load, {len(errors)} not 200: {errors[:10]}",
        )
        # wait until the new replica answers (status 200 from both: just hit /status a few times)
        ok_after = all(call(url + "/status", method="GET")[0] == 200 for _ in range(10))
        check(ok_after, "/status 200 x10 after the restart")
        tree = stack.process_tree_pids()
        print(f"after checks: {len(tree)} processes; tree RSS {stack.rss_kb() / 1024:.0f} MiB", flush=True)
        seen = set(tree)
    finally:
        t0 = time.monotonic()
        stack.stop()
        print(f"stopped in {time.monotonic() - t0:.1f}s", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(1.0)
    left = [p for p in seen if alive(p)]
    check(not left, f"no process of the stack left ({left})")
    print("ALL OK" if not failures else f"{len(failures)} FAILED", flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
