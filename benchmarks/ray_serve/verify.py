"""End-to-end check of the Ray Serve target, run with the project venv (it has the model deps):

    .venv/bin/python benchmarks/ray_serve/verify.py --config tutorial|tuned [--port 18610]

Starts the target with RayStack, then checks: single rows equal
``Registry(dir).load("production").predict`` exactly; the legacy query form answers a bare number;
the 45,000-row batch (stores 1-10 x items 1-50 x 2018-01-01..2018-03-31) comes back complete, in
order and exact; GET /reload answers 200 with every replica reloaded, and again after another version
is promoted (with one version in the registry, production's trees registered again as a new one, said
in a ``note`` line), then back; SIGKILL of one replica under
light load is recovered by Ray (reports how long). Prints start-up time and tree RSS, stops the
target and checks that none of its processes are left.
"""

from __future__ import annotations

import argparse
import http.client
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.ray_serve.stack import RayStack, alive  # noqa: E402
from benchmarks.scenarios import register_same_model  # noqa: E402
from forecast.features import Rows  # noqa: E402
from forecast.registry import Registry  # noqa: E402

if TYPE_CHECKING:
    from forecast.model import Predictor

Row = tuple[str, int, int]  # (date, store, item)


def call(url: str, body: object = None, method: str = "POST", timeout: float = 60.0) -> tuple[int, Any]:
    """(status, decoded JSON answer); for an HTTP error status, the answer's text instead."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def predict_row(url: str, row: Row) -> Any:
    """The JSON answer to a single-row ``POST /predict``."""
    return call(url + "/predict", {"date": row[0], "store": row[1], "item": row[2]})[1]


class Checks:
    """Prints each check as it is made (ok / FAIL) and keeps the failed ones."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)


@dataclass
class Target:
    """The running stack, the registry it serves from, and what its answers must equal."""

    stack: RayStack
    registry: Registry
    predictor: Predictor  # production when the checks start
    checks: Checks

    @property
    def url(self) -> str:
        return self.stack.url


def random_rows(count: int) -> list[Row]:
    """``count`` rows of 2017-2018 dates, stores 1-10 and items 1-50 (fixed seed)."""
    rng = random.Random(7)
    days = np.arange(np.datetime64("2017-01-01"), np.datetime64("2019-01-01"))
    return [(str(days[rng.randrange(len(days))]), rng.randint(1, 10), rng.randint(1, 50)) for _ in range(count)]


def check_root_and_status(target: Target) -> None:
    status, root = call(target.url + "/", method="GET")
    target.checks.check(
        status == 200 and root.get("model_version") == target.predictor.version, f"GET / -> {status} {root}"
    )
    status, st = call(target.url + "/status", method="GET")
    target.checks.check(status == 200 and st.get("status") == "Alive", f"GET /status -> {status} {st}")


def check_single_rows(target: Target, rows: list[Row], expected: np.ndarray) -> None:
    """Each row on its own equals the offline prediction bit for bit, with its date and the version."""
    mismatches = 0
    for (d, s, i), want in zip(rows, expected, strict=False):
        status, got = call(target.url + "/predict", {"date": d, "store": s, "item": i})
        if (
            status != 200
            or got["sales"] != float(want)
            or got["date"] != d
            or got["model_version"] != target.predictor.version
        ):
            mismatches += 1
    target.checks.check(
        mismatches == 0,
        f"200 single rows equal Registry.load('production').predict bit for bit ({mismatches} differ)",
    )


def check_concurrent_rows(target: Target, rows: list[Row], expected: np.ndarray) -> None:
    """The same rows from 32 concurrent clients (the tuned config batches them across requests)."""
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(lambda row: predict_row(target.url, row)["sales"], rows * 5))
    differ = sum(got != float(want) for got, want in zip(concurrent, list(expected) * 5, strict=False))
    target.checks.check(differ == 0, f"1,000 single rows from 32 concurrent clients exact ({differ} differ)")


def check_legacy_and_invalid(target: Target, row: Row, want: float) -> None:
    """The body-less query form answers a bare number; an impossible date is a 422."""
    d, s, i = row
    status, got = call(f"{target.url}/predict?date={d}&store={s}&item={i}")
    target.checks.check(
        status == 200 and isinstance(got, float) and got == float(want),
        f"legacy query form -> bare number {got!r}",
    )
    status, got = call(target.url + "/predict", {"date": "2018-02-30", "store": 1, "item": 1})
    target.checks.check(status == 422, f"impossible date -> {status}")


def kaggle_batch() -> list[dict[str, Any]]:
    """The 45,000-row test set: stores 1-10 x items 1-50 x 2018-01-01..2018-03-31."""
    dates = np.arange(np.datetime64("2018-01-01"), np.datetime64("2018-04-01"))
    return [{"date": str(dd), "store": ss, "item": ii} for ss in range(1, 11) for ii in range(1, 51) for dd in dates]


def check_batch(target: Target) -> None:
    """The 45,000-row batch, as a list and as ``{"instances": ...}``: complete, in order and exact."""
    batch = kaggle_batch()
    want = target.predictor.predict(
        Rows.from_columns([r["date"] for r in batch], [r["store"] for r in batch], [r["item"] for r in batch])
    )
    for shape, body in (("list", batch), ("instances", {"instances": batch})):
        t0 = time.monotonic()
        status, got = call(target.url + "/predict", body, timeout=300)
        took = time.monotonic() - t0
        preds = got.get("predictions", []) if isinstance(got, dict) else []
        same = len(preds) == len(batch) and all(
            p["date"] == r["date"] and p["store"] == r["store"] and p["item"] == r["item"] and p["sales"] == float(w)
            for p, r, w in zip(preds, batch, want, strict=False)
        )
        target.checks.check(
            status == 200 and same,
            f"45,000-row batch ({shape}) -> {status}, {len(preds)} predictions, in order and exact, {took:.2f}s",
        )


def check_reload(target: Target) -> None:
    """GET /reload answers with the version, acknowledged by every replica."""
    t0 = time.monotonic()
    status, got = call(target.url + "/reload", method="GET")
    took = time.monotonic() - t0
    replicas = got.get("replicas", []) if isinstance(got, dict) else []
    target.checks.check(
        status == 200 and got.get("model_version") == target.predictor.version and len(replicas) >= 2,
        f"GET /reload -> {status} in {took:.2f}s, {len(replicas)} replicas acknowledged: {got}",
    )


def version_to_reload_to(registry: Registry, serving: str) -> tuple[str, str]:
    """A version other than ``serving`` for the reload check, and where it came from.

    The registry's newest other version; with none (a fresh ``forecast bootstrap`` registers one), the
    production model registered again as a new version, in the check's private copy of the registry.
    The check then shows that every replica switches version, not that predictions change, and says so:
    it used to be skipped without a word, and "ALL OK" then covered a reload never tried. Failing instead
    would make the script useless on the registry most users have.
    """
    others = [v for v in registry.versions() if v != serving]
    if others:
        return others[-1], "another version of the registry"
    _, new = register_same_model(registry)
    return new, f"registered now for this check: {serving}'s trees again (the registry held one version)"


def check_reload_to_other_version(target: Target, rows: list[Row]) -> None:
    """Promote another version (:func:`version_to_reload_to`) and reload: every replica serves it; then back."""
    other, source = version_to_reload_to(target.registry, target.predictor.version)
    print(f"note reload check: to {other}, {source}", flush=True)
    target.registry.promote(other)
    new = target.registry.load("production")
    status, got = call(target.url + "/reload", method="GET")
    replicas = got.get("replicas", []) if isinstance(got, dict) else []
    target.checks.check(
        status == 200
        and got.get("model_version") == new.version
        and len(replicas) >= 2
        and all(r["model_version"] == new.version for r in replicas),
        f"promote {new.version} + GET /reload -> {status} {got}",
    )
    check_answers_from(target, new, rows[:20])
    target.registry.promote(target.predictor.version)
    status, got = call(target.url + "/reload", method="GET")
    target.checks.check(
        status == 200 and got.get("model_version") == target.predictor.version,
        f"back to {target.predictor.version}: {status}",
    )


def check_answers_from(target: Target, predictor: Predictor, rows: list[Row]) -> None:
    """Every answer to ``rows`` x 4 from 8 clients (so from both replicas) is ``predictor``'s, exact."""
    want = predictor.predict(Rows.from_columns(*zip(*rows, strict=False)))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda row: predict_row(target.url, row), rows * 4))
    target.checks.check(
        all(
            g["model_version"] == predictor.version and g["sales"] == float(w)
            for g, w in zip(got, list(want) * 4, strict=False)
        ),
        f"after reload every answer (80, both replicas) is {predictor.version} and exact",
    )


class LightLoad:
    """A thread posting one row about every 50 ms (~20 req/s) until stopped; notes (time, status)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, int]] = []  # (time.monotonic(), status; -1 if the call raised)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self.results

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                status, _ = call(self.url + "/predict", {"date": "2018-01-21", "store": 10, "item": 23}, timeout=10)
            except (OSError, http.client.HTTPException, ValueError):  # no connection or timeout; a cut or bad answer
                status = -1
            self.results.append((t, status))
            time.sleep(0.05)


def wait_replaced(stack: RayStack, victim: int, killed_at: float) -> float | None:
    """Seconds until two live replicas run again, ``victim`` not among them; None after 120 s."""
    while time.monotonic() - killed_at < 120:
        now = [p for p in stack.replica_pids() if alive(p)]
        if len(now) == 2 and victim not in now:
            return time.monotonic() - killed_at
        time.sleep(0.1)
    return None


def check_replica_kill(target: Target) -> None:
    """SIGKILL one replica under light load: Ray replaces it, and what the load saw meanwhile."""
    before = target.stack.replica_pids()
    target.checks.check(len(before) == 2, f"2 replica pids found: {before}")
    load = LightLoad(target.url)
    load.start()
    time.sleep(1.0)
    victim = before[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    back_after = wait_replaced(target.stack, victim, killed_at)
    # the new replica is up when the controller sees it; give it a moment to take traffic
    time.sleep(2.0)
    results = load.stop()
    after = target.stack.replica_pids()
    errors = [(round(t - killed_at, 2), s) for t, s in results if s != 200]
    target.checks.check(
        back_after is not None,
        f"replica {victim} SIGKILLed; replacement process up after "
        f"{back_after if back_after is None else round(back_after, 1)}s; replicas now {after}; "
        f"{len(results)} requests under load, {len(errors)} not 200: {errors[:10]}",
    )
    # wait until the new replica answers (status 200 from both: just hit /status a few times)
    ok_after = all(call(target.url + "/status", method="GET")[0] == 200 for _ in range(10))
    target.checks.check(ok_after, "/status 200 x10 after the restart")


def run_checks(target: Target) -> set[int]:
    """Every check against the ready target, in order; the pids of its process tree seen at the end."""
    rows = random_rows(200)
    expected = target.predictor.predict(Rows.from_columns(*zip(*rows, strict=False)))
    check_root_and_status(target)
    check_single_rows(target, rows, expected)
    check_concurrent_rows(target, rows, expected)
    check_legacy_and_invalid(target, rows[0], float(expected[0]))
    check_batch(target)
    check_reload(target)
    check_reload_to_other_version(target, rows)
    check_replica_kill(target)
    tree = target.stack.process_tree_pids()
    print(f"after checks: {len(tree)} processes; tree RSS {target.stack.rss_kb() / 1024:.0f} MiB", flush=True)
    return set(tree)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=("tutorial", "tuned"), required=True)
    parser.add_argument("--port", type=int, default=18610)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry")
    parser.add_argument("--log", type=Path, default=Path("/tmp/ray-verify.log"))
    return parser.parse_args()


def main() -> int:
    """Run every check; exit 1 if any failed."""
    args = parse_args()
    # A private copy of the registry, so the /reload check can promote another version.
    tmp = Path(tempfile.mkdtemp(prefix="ray-verify-"))
    registry_dir = tmp / "registry"
    shutil.copytree(args.registry, registry_dir)
    registry = Registry(registry_dir)
    predictor = registry.load("production")
    checks = Checks()
    stack = RayStack(args.config, args.port, registry_dir, args.log)
    stack.start()
    try:
        ready = stack.wait_ready(180)
        tree = stack.process_tree_pids()
        print(f"ready after {ready:.1f}s; {len(tree)} processes; tree RSS {stack.rss_kb() / 1024:.0f} MiB", flush=True)
        seen = run_checks(Target(stack, registry, predictor, checks))
    finally:
        t0 = time.monotonic()
        stack.stop()
        print(f"stopped in {time.monotonic() - t0:.1f}s", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(1.0)
    left = [p for p in seen if alive(p)]
    checks.check(not left, f"no process of the stack left ({left})")
    print("ALL OK" if not checks.failures else f"{len(checks.failures)} FAILED", flush=True)
    return 0 if not checks.failures else 1


if __name__ == "__main__":
    sys.exit(main())
