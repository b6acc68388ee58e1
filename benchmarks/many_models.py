"""The "Many models" scenario: 100 small models under Zipf traffic, this stack against Ray Serve's multiplexing.

Run by ``benchmarks/run.py``: in the full suite and the smoke version, or alone with
``--only many-models`` (merged into an existing results file). ``python -m benchmarks.many_models
tune`` is the sweep behind the Ray side's settings (benchmarks/README.md, "Many models").

**Models.** One per store x product family (family f = items 5f-4..5f): 10 stores x 10 families,
each trained with ``ROUNDS`` boosting rounds on its 9,130 rows of the generated data
(``forecast.data.generate``, as ``python -m forecast train --stores S --items I`` trains one) and
registered as ``s<store>-f<family>`` beside the default model, in the run's copy of the registry
(in its scratch directory). Both systems load the same model text files from it.

**Same budget.** Each mule may hold ``BUDGET_MB`` of models (``FORECAST_MULE_MODEL_BUDGET_MB``,
each counted as its text plus ``PER_MODEL_OVERHEAD_BYTES``), the pinned default model included;
:meth:`Fleet.per_process` is how many named models that holds, whichever they are (a fifth of
them). Ray gets ``max_num_models_per_replica`` = that number, and as many replicas as mules.

**Traffic.** A request list drawn once from ``SEED``: the model by Zipf (s = ``ZIPF_S``) over the
models in a shuffled order, then one row of that model's store and family with a date in
2017-2018. Each request names its model in the path (``POST /models/<name>/predict``) and in Ray's
``serve-multiplexed-model-id`` header, so both systems get the same bytes in the same order
(``load/cannon.js`` in its request-list mode, ``CONNECTIONS`` connections, closed loop).

**Measured.** First a verification pass: a few rows per model, one request each, every answer equal to
the offline model's prediction (a system that fails it is not timed). Then a warm-up, and per run:
2xx throughput, latency, non-2xx answers and errors, the model loads the run caused (ours from
``forecast_mule_model_loads_total``, Ray's from the lines its loader writes), and RSS/PSS of the
whole process tree halfway through.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from benchmarks.ray_serve.stack import ROOT, RayStack
from benchmarks.scenarios import CANNON, answered_2xx, answered_non_2xx
from benchmarks.systems import DEFAULT_MULES, DEFAULT_POOL, children, free_port, memory_mb
from forecast.data import generate
from forecast.features import Rows
from forecast.registry import DEFAULT_MODEL, Registry
from forecast.train import train
from launcher.stack import Stack
from mules.models import PER_MODEL_OVERHEAD_BYTES

HERE = Path(__file__).resolve().parent
MULTIPLEXED = HERE / "ray_serve" / "multiplexed.py"

STORES, FAMILIES, FAMILY_ITEMS = 10, 10, 5
ROUNDS = 45  # ~135 KB of model text each: BUDGET_MB then holds 20 of them (with the overhead), whichever they are
BUDGET_MB = 4
ZIPF_S = 1.1
CONNECTIONS = 64
SEED = 2026
REQUESTS = 200_000  # the list cannon.js walks through (wrapping around)
FIRST_DAY, DAYS = np.datetime64("2017-01-01"), 730  # request dates: inside every model's domain
MODEL_HEADER = "serve-multiplexed-model-id"  # Ray's; this stack ignores it

Log = Callable[[str], None]
Listeners = Callable[[list[int]], list[str]]  # run.non_loopback_listeners


@dataclass(frozen=True)
class Profile:
    """How long and how often: the full suite or the smoke version."""

    seconds: int  # one measured run
    repeats: int
    warmup_s: int
    rows_per_model: int  # verification rows per model
    stores: int = STORES  # the fleet: a model per store and item family


FULL = Profile(seconds=20, repeats=3, warmup_s=5, rows_per_model=3)
# The smoke run checks that the scenario runs and answers right: half the fleet is still more models than
# the mules' budgets hold together (each holds ~20), and training and compiling it is the scenario's cost.
SMOKE = Profile(seconds=4, repeats=1, warmup_s=1, rows_per_model=1, stores=STORES // 2)


@dataclass(frozen=True)
class RayTuning:
    """The Ray side's knobs (``ray_serve/multiplexed.py`` reads the first three from its environment)."""

    max_ongoing: int = 64
    batch_size: int = 16
    batch_wait_s: float = 0.002
    throughput_optimized: bool = False

    def environment(self, models_per_replica: int, replicas: int, loads_dir: Path) -> dict[str, str]:
        return {
            "RAY_BENCH_MODELS_PER_REPLICA": str(models_per_replica),
            "RAY_BENCH_REPLICAS": str(replicas),
            "RAY_BENCH_MAX_ONGOING": str(self.max_ongoing),
            "RAY_BENCH_BATCH_SIZE": str(self.batch_size),
            "RAY_BENCH_BATCH_WAIT_S": str(self.batch_wait_s),
            "RAY_BENCH_LOADS_DIR": str(loads_dir),
        }


RAY_TUNING = RayTuning()  # chosen with `python -m benchmarks.many_models tune` (benchmarks/README.md)
TUNING_VARIANTS = {
    "chosen": RAY_TUNING,
    "ongoing-16": RayTuning(max_ongoing=16),
    "ongoing-256": RayTuning(max_ongoing=256),
    "no-batching": RayTuning(batch_size=1, batch_wait_s=0.0),
    "batch-128-3ms": RayTuning(batch_size=128, batch_wait_s=0.003),
    "throughput-optimized": RayTuning(throughput_optimized=True),
    "throughput-optimized-ongoing-256": RayTuning(max_ongoing=256, throughput_optimized=True),
}


# -- the models --------------------------------------------------------------------------------------


def model_name(store: int, family: int) -> str:
    return f"s{store:02d}-f{family:02d}"


def family_items(family: int) -> list[int]:
    return list(range(FAMILY_ITEMS * (family - 1) + 1, FAMILY_ITEMS * family + 1))


@dataclass(frozen=True)
class Fleet:
    """The named models as registered: name -> (store, family), and each one's model text size."""

    registry: Path
    models: dict[str, tuple[int, int]]
    text_bytes: dict[str, int]
    default_bytes: int  # the default model's production, pinned in every mule

    def per_process(self, budget_bytes: int) -> int:
        """How many named models one mule's budget holds beside the default model, whichever they are.

        Raises ``ValueError`` when that depends on which models (their sizes straddle a boundary).
        """
        room = budget_bytes - self.default_bytes - PER_MODEL_OVERHEAD_BYTES  # counted as mules/models.py counts
        largest, smallest = (size(self.text_bytes.values()) + PER_MODEL_OVERHEAD_BYTES for size in (max, min))
        fewest, most = room // largest, room // smallest
        if fewest != most:
            raise ValueError(f"a {budget_bytes} B budget holds {fewest} to {most} models: choose another")
        return fewest

    def summary(self) -> dict[str, Any]:
        sizes = list(self.text_bytes.values())
        return {"models": len(sizes), "rounds": ROUNDS, "text_bytes_min": min(sizes), "text_bytes_max": max(sizes),
                "text_bytes_total": sum(sizes), "default_model_bytes": self.default_bytes}  # fmt: skip


def compile_all(registry: Path, names: list[str]) -> None:
    """Each model's production trees compiled, a process per core: the pod's first rollout would compile them one
    after another in its check child (every version an alias names has compiled trees), which is not what the
    scenario measures."""
    context = multiprocessing.get_context("spawn")  # LLVM in a fresh process, not a fork of this one
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool:
        list(pool.map(_compile, [(registry, name) for name in names]))


def _compile(job: tuple[Path, str]) -> None:
    registry, name = job
    Registry(registry, name).compile("production")


def build_fleet(registry: Path, log: Log, stores: int = STORES) -> Fleet:
    """Train, register, verify and promote a model per store (the first ``stores``) and item family into
    ``registry`` (which holds the default model): 100 of them in the full suite.

    Each trains on one thread: a model's data is small, and OpenMP's threads spin while they wait, so on
    a busy machine (or two trainings at once) two threads made a fleet take minutes instead of seconds.
    """
    data = generate()
    rows = data.rows
    models, sizes = {}, {}
    started = time.perf_counter()
    for store in range(1, stores + 1):
        for family in range(1, FAMILIES + 1):
            mine = data.select((rows.stores == store) & np.isin(rows.items, family_items(family)))
            result = train(mine, rounds=ROUNDS, log=lambda _: None, threads=1, backtest_origins=0)
            name = model_name(store, family)
            named = Registry(registry, name)
            version = named.register(result.model_text, result.metadata)
            named.set_alias("production", named.verify(version).version)
            models[name], sizes[name] = (store, family), len(result.model_text.encode())
    compile_all(registry, list(models))
    log(f"[many-models] {len(models)} models trained, registered and compiled in {time.perf_counter() - started:.0f} s")
    default = Registry(registry)
    return Fleet(registry, models, sizes, default.footprint_bytes(default.resolve("production"), compiled=False))


# -- the requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One single-row request to one model."""

    model: str
    date: str
    store: int
    item: int

    @property
    def path(self) -> str:
        return f"/models/{self.model}/predict"

    @property
    def body(self) -> str:
        return json.dumps({"date": self.date, "store": self.store, "item": self.item})


def zipf_weights(count: int, s: float) -> np.ndarray:
    """P(rank k) proportional to k^-s, k = 1..count."""
    weights: np.ndarray = np.arange(1, count + 1, dtype=np.float64) ** -s
    shares: np.ndarray = weights / weights.sum()
    return shares


def rows_of(fleet: Fleet, models: list[str], rng: np.random.Generator) -> list[Row]:
    """One row per entry of ``models``: that model's store, an item of its family, a date in 2017-2018."""
    days = FIRST_DAY + rng.integers(0, DAYS, len(models))
    picks = rng.integers(0, FAMILY_ITEMS, len(models))
    found = []
    for model, day, pick in zip(models, days, picks, strict=True):
        store, family = fleet.models[model]
        found.append(Row(model, str(day), store, family_items(family)[pick]))
    return found


def traffic(fleet: Fleet, count: int, seed: int) -> list[Row]:
    """``count`` requests, the model drawn by Zipf over the models in an order shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    names = list(fleet.models)
    by_popularity = [names[i] for i in rng.permutation(len(names))]
    ranks = rng.choice(len(names), size=count, p=zipf_weights(len(names), ZIPF_S))
    return rows_of(fleet, [by_popularity[rank] for rank in ranks], rng)


def traffic_summary(rows: list[Row], per_process: int, processes: int) -> dict[str, Any]:
    """How concentrated the list is, and the loads per 1,000 requests two ideal caches would have on it.

    ``top_held_share``: the share of requests to the ``per_process x processes`` most popular models.
    ``lru_split_loads_per_1000``: each process an LRU of ``per_process`` models, the models split
    between the processes (each model's requests go to its process: perfect affinity).
    ``lru_any_loads_per_1000``: the same LRUs, each request to a random process (no affinity).
    """
    counts = sorted((len(group) for group in _groups(rows)), reverse=True)
    models = [row.model for row in rows]
    rng = np.random.default_rng(SEED + 2)
    owner = dict(zip(sorted(set(models)), rng.permutation(len(counts)) % processes, strict=True))
    anywhere = rng.integers(0, processes, len(models))
    split = sum(lru_misses([m for m in models if owner[m] == p], per_process) for p in range(processes))
    scattered = sum(lru_misses([m for m, at in zip(models, anywhere, strict=True) if at == p], per_process)
                    for p in range(processes))  # fmt: skip
    return {"requests": len(rows), "models": len(counts), "zipf_s": ZIPF_S, "seed": SEED,
            "top_model_share": round(counts[0] / len(rows), 4), "held": per_process * processes,
            "top_held_share": round(sum(counts[: per_process * processes]) / len(rows), 4),
            "lru_split_loads_per_1000": round(1000 * split / len(rows), 1),
            "lru_any_loads_per_1000": round(1000 * scattered / len(rows), 1)}  # fmt: skip


def lru_misses(models: list[str], capacity: int) -> int:
    """How many of these requests, in order, miss an LRU cache of ``capacity`` models (a load each)."""
    cache: dict[str, None] = {}
    misses = 0
    for model in models:
        if model in cache:
            del cache[model]
        else:
            misses += 1
            if len(cache) >= capacity:
                del cache[next(iter(cache))]
        cache[model] = None
    return misses


def _groups(rows: list[Row]) -> list[list[Row]]:
    found: dict[str, list[Row]] = {}
    for row in rows:
        found.setdefault(row.model, []).append(row)
    return list(found.values())


def write_requests(rows: list[Row], path: Path) -> Path:
    """The list as cannon.js's ``requestsFile`` wants it: path, headers and body of each request."""
    entries = [{"path": row.path, "headers": {"content-type": "application/json", MODEL_HEADER: row.model},
                "body": row.body} for row in rows]  # fmt: skip
    path.write_text(json.dumps(entries))
    return path


# -- verification ------------------------------------------------------------------------------------


def offline(registry: Path, rows: list[Row]) -> list[float]:
    """Each row's prediction by its model's production version, loaded here and scored by LightGBM itself."""
    truth: dict[Row, float] = {}
    for group in _groups(rows):
        predictor = Registry(registry, group[0].model).load("production", compiled=False)
        columns = Rows.from_columns([r.date for r in group], [r.store for r in group], [r.item for r in group])
        truth.update(zip(group, (float(v) for v in predictor.predict(columns)), strict=True))
    return [truth[row] for row in rows]


def post(url: str, row: Row, timeout: float = 60) -> tuple[int, Any]:
    """(status, decoded answer) of one request; (0, None) if it failed without an answer."""
    request = urllib.request.Request(url + row.path, data=row.body.encode(),
                                     headers={"Content-Type": "application/json", MODEL_HEADER: row.model})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def verify(url: str, rows: list[Row], truth: list[float]) -> dict[str, Any]:
    """Every row once, in order: how many answered 200, the largest error against the offline model, failures.

    Compiled trees may differ from LightGBM in the last bits of a sum: within :data:`TOLERANCE` is right.
    """
    errors, failures = [], []
    for row, want in zip(rows, truth, strict=True):
        status, body = post(url, row)
        if status == 200 and isinstance(body, dict):
            errors.append(abs(float(body["sales"]) - want))
        else:
            failures.append({"model": row.model, "status": status})
    worst = max(errors, default=float("nan"))
    return {"rows": len(rows), "answered": len(errors), "max_abs_error": worst, "exact": errors.count(0.0),
            "ok": not failures and worst <= TOLERANCE, "failures": failures[:10]}  # fmt: skip


TOLERANCE = 1e-9  # the largest difference from LightGBM's own forecast that counts as the same forecast


# -- the two systems ---------------------------------------------------------------------------------


class Contender(Protocol):
    """A system under test: start (ready to serve every model), stop, its processes, its model loads so far."""

    name: str
    description: str

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def tree_pids(self) -> list[int]: ...

    def loads(self) -> int: ...


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


class Mules:
    """This stack, default settings but the model budget, on the fleet's registry."""

    name = "uwsgi-mules"

    def __init__(self, fleet: Fleet, run_dir: Path, budget_mb: int) -> None:
        self.budget_mb = budget_mb
        env = {"FORECAST_REGISTRY_DIR": str(fleet.registry), "FORECAST_MULE_MODEL_BUDGET_MB": str(budget_mb)}
        self.stack = Stack(run_dir, free_port(), env)
        self.description = (f"this project: nginx + uWSGI {DEFAULT_POOL} + {DEFAULT_MULES} mules, "
                            f"FORECAST_MULE_MODEL_BUDGET_MB={budget_mb}")  # fmt: skip

    @property
    def url(self) -> str:
        return self.stack.url

    def start(self) -> None:
        """Start, and wait until the pod's first rollout published every model's route (a child verifies each)."""
        self.stack.start()
        self.stack.wait_ready(180)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rollout = json.loads(get(f"{self.url}/status"))["rollout"]
            if rollout and rollout["generation"] >= 1 and not rollout["in_progress"]:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.name}: no routes published within 600 s; see {self.stack.uwsgi_log}")

    def stop(self) -> None:
        self.stack.stop()

    def tree_pids(self) -> list[int]:
        assert self.stack.uwsgi is not None
        assert self.stack.nginx is not None
        return children(self.stack.uwsgi.pid) + children(self.stack.nginx.pid)

    def loads(self) -> int:
        """Named-model loads of every mule so far (``forecast_mule_model_loads_total``)."""
        text = get(f"{self.url}/metrics").decode()
        found = re.findall(r"^forecast_mule_model_loads_total\{([^}]*)\} (\S+)$", text, re.M)
        return round(sum(float(value) for labels, value in found if f'model="{DEFAULT_MODEL}"' not in labels))

    def held(self) -> dict[str, int]:
        """Mule id -> how many named models it holds now (``GET /models``)."""
        listing = json.loads(get(f"{self.url}/models"))["models"]
        counts: dict[str, int] = {}
        for name, model in listing.items():
            for mules in model["mules"].values() if name != DEFAULT_MODEL else ():
                for mule in mules:
                    counts[str(mule)] = counts.get(str(mule), 0) + 1
        return dict(sorted(counts.items()))


class MultiplexedStack(RayStack):
    """``ray_serve/multiplexed.py`` in place of ``server.py``; stopped and measured as :class:`RayStack` does."""

    def __init__(self, port: int, registry: Path, log_path: Path, environment: dict[str, str], *args: str) -> None:
        super().__init__("tuned", port, registry, log_path, extra_args=args)
        self.environment = environment

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("already started")
        command = [str(self.python), str(MULTIPLEXED), "--port", str(self.port), "--registry", str(self.registry_dir)]
        hidden = ("VIRTUAL_ENV", "PYTHONPATH")  # the project venv's; the server sets its own
        env = {**{k: v for k, v in os.environ.items() if k not in hidden}, **self.environment, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, *self.extra_args], cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        self.started_at = time.monotonic()


class RayMultiplexed:
    """Ray Serve with ``@serve.multiplexed``, ``models_per_replica`` models per replica, on the fleet's registry."""

    name = "ray-multiplexed"

    def __init__(self, fleet: Fleet, scratch: Path, models_per_replica: int, replicas: int, tuning: RayTuning) -> None:
        self.loads_dir = scratch / "ray-multiplexed-loads"
        self.loads_dir.mkdir(parents=True, exist_ok=True)
        self.tuning = tuning
        environment = tuning.environment(models_per_replica, replicas, self.loads_dir)
        flag = "--throughput-optimized" if tuning.throughput_optimized else "--no-throughput-optimized"
        log = scratch / "ray-multiplexed.log"
        self.stack = MultiplexedStack(free_port(), fleet.registry, log, environment, flag)
        self.description = (
            f"Ray Serve 2.60, {replicas} replicas (1 CPU each), @serve.multiplexed(max_num_models_per_replica="
            f"{models_per_replica}), @serve.batch({tuning.batch_size}, {tuning.batch_wait_s * 1000:g} ms), "
            f"max_ongoing_requests={tuning.max_ongoing}, throughput-optimized "
            f"{'on' if tuning.throughput_optimized else 'off'}"
        )

    @property
    def url(self) -> str:
        return self.stack.url

    def start(self) -> None:
        self.stack.start()
        self.stack.wait_ready(300)

    def stop(self) -> None:
        self.stack.stop()

    def tree_pids(self) -> list[int]:
        return self.stack.process_tree_pids()

    def loads(self) -> int:
        """Models loaded by every replica so far: the lines the loader wrote."""
        return sum(len(path.read_text().splitlines()) for path in self.loads_dir.glob("*.loads"))


# -- measuring ---------------------------------------------------------------------------------------


def cannon(url: str, requests_file: Path, seconds: float) -> dict[str, Any]:
    """One closed-loop autocannon run over the request list."""
    options = {"url": url, "connections": CONNECTIONS, "duration": seconds, "requestsFile": str(requests_file)}
    out = subprocess.run(["node", str(CANNON), json.dumps(options)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def one_run(contender: Contender, requests_file: Path, seconds: float) -> dict[str, Any]:
    """A measured run: throughput, latency, failures, the loads it caused, memory halfway through."""
    before = contender.loads()
    result: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: result.update(cannon(contender.url, requests_file, seconds)))
    loader.start()
    time.sleep(seconds / 2)
    memory = memory_mb(contender.tree_pids())
    loader.join()
    loads = contender.loads() - before
    ok = answered_2xx(result["statuses"])
    return {
        "rps": round(ok / max(float(result["seconds"]), 1e-9), 1),
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "requests": result["requests"],
        "non2xx": answered_non_2xx(result["statuses"]),
        "errors": result["errors"],
        "timeouts": result["timeouts"],
        "statuses": result["statuses"],
        "loads": loads,
        "loads_per_1000": round(1000 * loads / max(1, result["requests"]), 2),
        "memory": memory,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the runs, and the throughput's and p99's range (run-to-run spread)."""
    keys = ("rps", "p50_ms", "p99_ms", "non2xx", "errors", "loads", "loads_per_1000")
    found: dict[str, float] = {key: statistics.median(run[key] for run in runs) for key in keys}
    found["rss_mb"] = statistics.median(run["memory"]["rss_mb"] for run in runs)
    found["pss_mb"] = statistics.median(run["memory"]["pss_mb"] for run in runs)
    for key in ("rps", "p99_ms"):
        found[f"{key}_min"], found[f"{key}_max"] = min(run[key] for run in runs), max(run[key] for run in runs)
    return found


@dataclass(frozen=True)
class Workload:
    """What every contender gets: the checked rows with their offline predictions, and the request list."""

    checks: list[Row]
    truth: list[float]
    requests_file: Path


def measure(
    contender: Contender, workload: Workload, profile: Profile, listeners: Listeners, log: Log
) -> dict[str, Any]:
    """Start, verify, then (only if every answer was right) warm up and time ``profile.repeats`` runs; stop."""
    out: dict[str, Any] = {"description": contender.description}
    log(f"[many-models] {contender.name}: start")
    started = time.perf_counter()
    contender.start()
    try:
        out["ready_s"] = round(time.perf_counter() - started, 1)
        out["non_loopback_listeners"] = listeners(contender.tree_pids())
        log(f"[many-models] {contender.name}: verification ({len(workload.checks)} rows)")
        out["verification"] = verify(contender.url, workload.checks, workload.truth)
        if not out["verification"]["ok"]:
            log(f"[many-models] {contender.name}: wrong or missing answers, not timed: {out['verification']}")
            return out
        cannon(contender.url, workload.requests_file, profile.warmup_s)
        out["runs"] = []
        for n in range(profile.repeats):
            out["runs"].append(one_run(contender, workload.requests_file, profile.seconds))
            log(f"[many-models] {contender.name}: run {n + 1}: {json.dumps(out['runs'][-1])}")
        out["median"] = medians(out["runs"])
        if isinstance(contender, Mules):
            out["held_per_mule"] = contender.held()
        out["non_loopback_listeners"] += listeners(contender.tree_pids())
    finally:
        contender.stop()
    return out


def prepare(registry: Path, log: Log, stores: int = STORES) -> tuple[Fleet, int]:
    """The fleet's models (:func:`build_fleet`) added to ``registry`` (a copy with the default model); the fleet,
    and how many one mule holds."""
    fleet = build_fleet(registry, log, stores)
    return fleet, fleet.per_process(BUDGET_MB * 2**20)


def workload(fleet: Fleet, requests: list[Row], scratch: Path, profile: Profile) -> Workload:
    """``profile.rows_per_model`` checked rows per model (their own seed), and ``requests`` written for cannon.js."""
    rng = np.random.default_rng(SEED + 1)
    checks = rows_of(fleet, [name for name in fleet.models for _ in range(profile.rows_per_model)], rng)
    requests_file = write_requests(requests, scratch / "many-models-requests.json")
    return Workload(checks, offline(fleet.registry, checks), requests_file)


def run(scratch: Path, registry: Path, profile: Profile, listeners: Listeners, log: Log) -> dict[str, Any]:
    """The whole scenario (a JSON-able record): the models, the traffic, and both systems measured in turn.

    ``registry`` is the scenario's own copy of the registry, with the default model: the models are added to it.
    """
    fleet, per_process = prepare(registry, log, profile.stores)
    requests = traffic(fleet, REQUESTS, SEED)
    load = workload(fleet, requests, scratch, profile)
    mules = Mules(fleet, scratch / "run-many-models", BUDGET_MB)
    replicas = mules.stack.settings().mules  # as many replicas as mules
    contenders: list[Contender] = [mules, RayMultiplexed(fleet, scratch, per_process, replicas, RAY_TUNING)]
    return {
        "profile": asdict(profile),
        "connections": CONNECTIONS,
        "fleet": fleet.summary(),
        "budget": {"mule_budget_mb": BUDGET_MB, "models_per_process": per_process, "processes": replicas},
        "traffic": traffic_summary(requests, per_process, replicas),
        "ray_tuning": asdict(RAY_TUNING),
        "systems": {c.name: measure(c, load, profile, listeners, log) for c in contenders},
    }


# -- the Ray side's tuning sweep ---------------------------------------------------------------------


def tune(names: list[str], seconds: int, log: Log) -> None:
    """Each named variant of :data:`TUNING_VARIANTS` on a fresh Ray stack: one verified, warmed-up run; a table row."""
    scratch = HERE / "scratch" / time.strftime("%Y%m%dT%H%M%S-tune")
    scratch.mkdir(parents=True)
    shutil.copytree(ROOT / "registry", scratch / "registry")  # `make train` (or a suite run) made it
    fleet, per_process = prepare(scratch / "registry", log)
    profile = Profile(seconds=seconds, repeats=1, warmup_s=5, rows_per_model=1)
    load = workload(fleet, traffic(fleet, REQUESTS, SEED), scratch, profile)
    print("| variant | 2xx req/s | p50 ms | p99 ms | non-2xx | errors | loads | loads per 1,000 |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        contender = RayMultiplexed(fleet, scratch / name, per_process, 2, TUNING_VARIANTS[name])
        result = measure(contender, load, profile, lambda _: [], log)
        run = result.get("median", {})
        print(f"| {name} | {run.get('rps')} | {run.get('p50_ms')} | {run.get('p99_ms')} | {run.get('non2xx')} "
              f"| {run.get('errors')} | {run.get('loads')} | {run.get('loads_per_1000')} |", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description="the Ray side's tuning sweep of the many-models scenario")
    parser.add_argument("command", choices=["tune"])
    parser.add_argument("variants", nargs="*", default=list(TUNING_VARIANTS), help=", ".join(TUNING_VARIANTS))
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    unknown = set(args.variants) - set(TUNING_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    tune(args.variants, args.seconds, lambda message: print(f"{time.strftime('%H:%M:%S')} {message}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
