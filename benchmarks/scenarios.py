"""The benchmark scenarios; each takes a started system and returns a JSON-able dict."""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.systems import System, cpu_by_pid, cpu_used_since, get_json, kill, memory_mb, thread_cpu_seconds
from forecast.features import Rows
from forecast.registry import Registry

HERE = Path(__file__).resolve().parent
CANNON = HERE / "load" / "cannon.js"
OPENLOOP = HERE / "load" / "openloop.py"


@dataclass(frozen=True)
class Profile:
    """How long and how often: the full suite or the smoke version."""

    seconds: int
    repeats: int
    connections: tuple[int, ...] = (1, 8, 64, 256)
    rates: tuple[int, ...] = (100, 200, 400, 800, 1600)
    overload_seconds: int = 30
    fault_seconds: int = 30
    reload_seconds: int = 20
    settle_limit_s: float = 120.0  # longest wait for a system to settle before a scenario (then it goes on, noted)
    settle_for_quiet: bool = True  # settled: healthy and back to its idle CPU (False: healthy is enough)
    idle_seconds: float = 3  # how long the idle CPU is measured after start (before any traffic)
    memory_seconds: float = 10  # the 64-connection run whose midpoint the memory under load is sampled at


FULL = Profile(seconds=10, repeats=3)
# The smoke run checks that the report is complete and correct, never a speed: waiting for quiet buys it
# nothing, but a scenario still starts on a whole, answering system (after the fault scenario's kills too).
# Closed loop at 1 and 64 connections only: the levels the report's goals read (8 and 256 cost CI 100 s).
# Every phase as short as still gives its record: a fault run has one kill and its recovery room, a reload
# run's load covers the promote; a shorter overload also leaves Ray less of a queue to drain after it.
SMOKE = Profile(seconds=2, repeats=1, connections=(1, 64), rates=(100, 400), overload_seconds=3, fault_seconds=16,
                reload_seconds=5, settle_limit_s=30.0, settle_for_quiet=False, idle_seconds=1,
                memory_seconds=2)  # fmt: skip
RECOVERY_ROOM_S = 12  # the fault scenario's last kill is at least this long before its load ends


def cannon(url: str, connections: int, seconds: float, samples: bool = False) -> dict[str, Any]:
    options = {"url": url, "connections": connections, "duration": seconds, "samples": samples}
    out = subprocess.run(["node", str(CANNON), json.dumps(options)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def cannon_in_background(
    url: str, connections: int, seconds: float, daemon: bool = False
) -> tuple[threading.Thread, dict[str, Any]]:
    """Start :func:`cannon` (with per-response samples) in a thread; the dict holds its result once it ends."""
    result: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: result.update(cannon(url, connections, seconds, True)), daemon=daemon)
    loader.start()
    return loader, result


def openloop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    options = {"url": url, "rate": rate, "duration": seconds}
    command = [sys.executable, str(OPENLOOP), json.dumps(options)]
    result: dict[str, Any] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return result


def answered_2xx(statuses: dict[str, int]) -> int:
    """How many answers had a 2xx status (``statuses``: count per status code, as the load tools give it)."""
    return sum(count for status, count in statuses.items() if status.startswith("2"))


def answered_non_2xx(statuses: dict[str, int]) -> int:
    """How many answers had another status than 2xx."""
    return sum(count for status, count in statuses.items() if not status.startswith("2"))


def failed_requests(run: dict[str, Any]) -> int:
    """Requests of a load run that did not get a 2xx answer: other statuses plus transport errors."""
    return answered_non_2xx(run["statuses"]) + int(run["errors"])


def ok_rps(run: dict[str, Any]) -> float:
    """Answers with a 2xx status per second (fast 503s are not throughput)."""
    return answered_2xx(run["statuses"]) / max(float(run["seconds"]), 1e-9)


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repeated load runs: 2xx req/s, latency percentiles, non-2xx answers."""
    return {
        "rps": statistics.median(ok_rps(r) for r in runs),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p90_ms": statistics.median(r["latency_ms"]["p90"] for r in runs),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "non2xx": statistics.median(answered_non_2xx(r["statuses"]) for r in runs),
        "rps_min": min(ok_rps(r) for r in runs),
        "rps_max": max(ok_rps(r) for r in runs),
        **(
            {"cpu_ms_per_request": statistics.median(r["cpu"]["cpu_ms_per_request"] for r in runs)}
            if all("cpu" in r for r in runs)
            else {}
        ),
    }


def post(url: str, payload: Any, timeout: float = 120) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/predict", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None


# -- 0. correctness: the same prediction for the same request, everywhere ---------------------


def correctness(system: System, registry: Path) -> dict[str, Any]:
    """100 single rows one after the other, then 800 from 32 threads at once: each against the offline model.

    The concurrent pass is what exercises batching (Ray's ``@serve.batch``, this stack's mules
    taking several jobs): a row scored with another row's features would show here.
    """
    rng = np.random.default_rng(7)
    count = 100 + CONCURRENT_ROWS
    days = np.datetime64("2017-01-01") + rng.integers(0, 540, count)
    stores, items = rng.integers(1, 11, count), rng.integers(1, 51, count)
    truth = lightgbm(registry, Rows(days.astype("datetime64[D]"), stores, items))
    bodies = [{"date": str(d), "store": int(s), "item": int(i)} for d, s, i in zip(days, stores, items, strict=True)]
    answers = [_sales(system, body) for body in bodies[:100]]
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(lambda body: _sales(system, body), bodies[100:]))
    worst = float(np.nanmax(np.abs(np.array(answers) - truth[:100])))
    worst_concurrent = float(np.nanmax(np.abs(np.array(concurrent) - truth[100:])))
    return {"rows": len(answers), "max_abs_error": max(worst, worst_concurrent),
            "all_answered": not np.isnan(answers + concurrent).any(), "concurrent_rows": len(concurrent),
            "concurrent_max_abs_error": worst_concurrent, "predictions": answers}  # fmt: skip


CONCURRENT_ROWS = 800


def _sales(system: System, body: dict[str, Any]) -> float:
    status, answer = post(system.url, body)
    return float(answer["sales"]) if status == 200 and isinstance(answer, dict) else float("nan")


# -- before each scenario: a whole system, its CPU idle --------------------------------------------


QUIET_ABOVE_IDLE = 0.05  # of one core: a tree within this of its own idle CPU is quiet


def idle_cpu(system: System, seconds: float = 3) -> float:
    """The system's process tree's CPU (cores) over ``seconds`` of no traffic: its own background work."""
    before = cpu_by_pid(system.tree_pids())
    time.sleep(seconds)
    return round(cpu_used_since(before) / seconds, 4)


class Settler:
    """Waits before a scenario until the system is whole and its tree back to its idle CPU; notes how long.

    ``idle_cores`` is the tree's CPU measured idle after start (:func:`idle_cpu`): Ray's
    background processes use some CPU all the time, so "quiet" is relative to each system's own.
    With ``quiet`` False (the smoke run) a whole, answering system is enough.
    """

    def __init__(
        self, system: System, idle_cores: float, waited: dict[str, float], log: Any, limit_s: float, quiet: bool = True
    ) -> None:
        self.system, self.idle_cores, self.waited, self.log = system, idle_cores, waited, log
        self.limit_s, self.quiet = limit_s, quiet

    def __call__(self, scenario: str) -> None:
        started = time.perf_counter()
        deadline = started + self.limit_s
        while time.perf_counter() < deadline and not self._ready():
            time.sleep(0.2)
        self.waited[scenario] = round(time.perf_counter() - started, 2)
        if time.perf_counter() >= deadline:
            self.log(f"[{self.system.name}] not settled within {self.limit_s:.0f} s before {scenario}; going on")

    def _ready(self) -> bool:
        if self.system.kind == "model" and not healthy(self.system):
            return False
        return not self.quiet or idle_cpu(self.system, 1) <= self.idle_cores + QUIET_ABOVE_IDLE


# -- 1. latency and throughput ----------------------------------------------------------------------


def closed_loop(system: System, profile: Profile) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    cannon(system.url, 64, 2)  # warm-up, not reported
    for connections in profile.connections:
        runs = [measured_cannon(system, connections, profile.seconds) for _ in range(profile.repeats)]
        levels[str(connections)] = {"median": median_of(runs), "runs": runs}
    return levels


def measured_cannon(system: System, connections: int, seconds: float) -> dict[str, Any]:
    """:func:`cannon`, with the CPU the system's process tree and the load generator used, and the load average.

    ``cpu_ms_per_request``: the system's CPU per answered request (its whole tree, every process);
    ``generator_cpu_s``: autocannon's own CPU on the same cores.
    """
    before, generator_before = cpu_by_pid(system.tree_pids()), _children_cpu()
    result = cannon(system.url, connections, seconds)
    used, generator = cpu_used_since(before), _children_cpu() - generator_before
    answered = max(1, answered_2xx(result["statuses"]))
    result["cpu"] = {"system_cpu_s": round(used, 3), "cpu_ms_per_request": round(1000 * used / answered, 4),
                     "generator_cpu_s": round(generator, 3), "loadavg_1m": os.getloadavg()[0],
                     "steal_share": _steal_share()}  # fmt: skip
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _steal_share() -> float:
    """The share of CPU time stolen by the hypervisor since boot (/proc/stat's steal column)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return round(fields[7] / max(1, sum(fields)), 4)


def open_loop(system: System, profile: Profile) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    for rate in profile.rates:
        runs = [openloop(system.url, rate, profile.seconds) for _ in range(profile.repeats)]
        levels[str(rate)] = {"median": median_of(runs), "runs": runs}
    return levels


# -- 2. batch scoring -----------------------------------------------------------------------------------


def kaggle_test_set() -> list[dict[str, Any]]:
    days = np.arange("2018-01-01", "2018-04-01", dtype="datetime64[D]")
    return [{"date": str(d), "store": s, "item": i} for s in range(1, 11) for i in range(1, 51) for d in days]


def lightgbm(registry: Path, rows: Rows) -> np.ndarray:
    """LightGBM's own forecasts of ``rows`` by the registry's production (never compiled trees): the truth."""
    return Registry(registry).load("production", compiled=False).predict(rows)


BATCH_SIZES = (1_000, 45_000, 500_000)
BATCH_FORMATS = ("json", "csv")
SERIES = [(store, item) for store in range(1, 11) for item in range(1, 51)]


@functools.cache
def batch_rows(size: int) -> Rows:
    """``size`` rows: the first of the Kaggle test set (every series, 2018-Q1) up to its 45,000, beyond that
    every series for as many days as it takes, ending 2019-12-31, two years past the data (500,000: 1,000 days)."""
    days_per_series = max(90, -(-size // len(SERIES)))
    if size <= len(SERIES) * 90:
        days = np.datetime64("2018-01-01") + np.arange(90)
    else:
        days = np.datetime64("2019-12-31") - np.arange(days_per_series)[::-1]
    stores = np.repeat([s for s, _ in SERIES], days_per_series)[:size]
    items = np.repeat([i for _, i in SERIES], days_per_series)[:size]
    return Rows(np.tile(days, len(SERIES))[:size], stores.astype(np.int64), items.astype(np.int64))


@functools.cache
def batch_body(size: int, fmt: str) -> tuple[bytes, dict[str, str]]:
    """The request's body and headers: a JSON list of row objects, or the Kaggle test file's CSV (id first)."""
    rows = batch_rows(size)
    dates = np.datetime_as_string(rows.dates).tolist()
    columns = zip(dates, rows.stores.tolist(), rows.items.tolist(), strict=True)
    if fmt == "json":
        body = json.dumps([{"date": d, "store": s, "item": i} for d, s, i in columns]).encode()
        return body, {"Content-Type": "application/json"}
    lines = "".join(f"{n},{d},{s},{i}\n" for n, (d, s, i) in enumerate(columns))
    return ("id,date,store,item\n" + lines).encode(), {"Content-Type": "text/csv", "Accept": "text/csv"}


def batch_sales(data: bytes, fmt: str) -> np.ndarray:
    """The forecasts of an answer: ``{"predictions": [{"sales": ...}]}``, or CSV ``id,sales`` in id order."""
    if fmt == "json":
        return np.array([p["sales"] for p in json.loads(data)["predictions"]], dtype=np.float64)
    lines = data.decode().splitlines()[1:]
    ids = np.array([line.partition(",")[0] for line in lines], dtype=np.int64)
    sales = np.array([line.rpartition(",")[2] for line in lines], dtype=np.float64)
    return sales[np.argsort(ids)]  # in id order, whatever order the lines came in


def post_raw(
    url: str, body: bytes, headers: dict[str, str], timeout: float = 300, path: str = "/predict"
) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def batch(system: System, profile: Profile, registry: Path) -> dict[str, Any]:
    """Every size of :data:`BATCH_SIZES` in every format, ``profile.repeats`` times each: seconds, every value
    against LightGBM's own, the tree's peak memory (PSS) and the CPU time it spent while the request ran.

    The record keeps the 45,000-row JSON request's median as ``median_seconds`` (the headline's).
    """
    sizes: dict[str, Any] = {}
    checksum = Registry(registry).checksum("production")
    for size in BATCH_SIZES:
        truth = _batch_truth(registry, checksum, size)
        sizes[str(size)] = {}
        for fmt in BATCH_FORMATS:
            body, headers = batch_body(size, fmt)
            runs = [_batch_run(system, body, headers, fmt, truth) for _ in range(profile.repeats)]
            answered = [r["seconds"] for r in runs if r["status"] == 200 and r["rows"] == size]
            sizes[str(size)][fmt] = {
                "body_mb": round(len(body) / 2**20, 1),
                "median_seconds": statistics.median(answered) if len(answered) == len(runs) else None,
                "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
                "peak_pss_mb": max(r["peak_pss_mb"] for r in runs),
                "max_abs_error": max((r["max_abs_error"] for r in runs if r["max_abs_error"] is not None),
                                     default=None),
                "runs": runs,
            }  # fmt: skip
    headline = sizes["45000"]["json"]
    return {"rows": 45_000, "median_seconds": headline["median_seconds"], "runs": headline["runs"], "sizes": sizes}


def scoring_alone(registry: Path, repeats: int, parallel: int) -> dict[str, Any]:
    """The production version scoring each batch size alone, in this process on one core: features and trees
    (compiled when the registry has them, as every system serves), no parsing, encoding or IPC; best of
    ``repeats`` (after one warm-up).

    What the batch goals are bounded by: a server scoring with the same trees cannot answer a batch faster
    than this time spread over the ``parallel`` cores its scorers can use, parsing and encoding free.
    """
    predictor = Registry(registry).load("production")
    seconds = {}
    for size in BATCH_SIZES:
        rows = batch_rows(size)
        predictor.predict(rows)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            predictor.predict(rows)
            times.append(time.perf_counter() - started)
        seconds[str(size)] = round(min(times), 4)
    return {"engine": predictor.engine, "parallel": parallel, "seconds": seconds}


_TRUTHS: dict[tuple[str, int], np.ndarray] = {}


def _batch_truth(registry: Path, checksum: str, size: int) -> np.ndarray:
    """LightGBM's forecasts of :func:`batch_rows` ``(size)``, once per model text (every system's registry is a
    copy of the same one)."""
    if (checksum, size) not in _TRUTHS:
        _TRUTHS[checksum, size] = lightgbm(registry, batch_rows(size))
    return _TRUTHS[checksum, size]


def _batch_run(system: System, body: bytes, headers: dict[str, str], fmt: str, truth: np.ndarray) -> dict[str, Any]:
    """One request, its PSS sampled every 50 ms meanwhile, and the CPU time the system's processes spent
    meanwhile (all their work, not the client's)."""
    pids = system.tree_pids()
    peak = {"pss_mb": memory_mb(pids)["pss_mb"]}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak["pss_mb"] = max(peak["pss_mb"], memory_mb(system.tree_pids())["pss_mb"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = thread_cpu_seconds(pids)
    started = time.perf_counter()
    status, data = post_raw(system.url, body, headers)
    seconds = time.perf_counter() - started
    server_cpu_s = thread_cpu_seconds(pids) - cpu_before
    done.set()
    sampler.join()
    sales = batch_sales(data, fmt) if status == 200 else np.empty(0)
    worst = float(np.max(np.abs(sales - truth))) if len(sales) == len(truth) else None
    return {"status": status, "seconds": round(seconds, 3), "rows": len(sales),
            "rows_per_s": round(len(sales) / seconds), "max_abs_error": worst,
            "peak_pss_mb": peak["pss_mb"], "server_cpu_s": round(server_cpu_s, 4)}  # fmt: skip


# -- 3. overload ---------------------------------------------------------------------------------------


COMMON_OVERLOAD_RPS = 1000  # one offered rate for every system (above Ray's capacity, below this stack's)


def overload(system: System, profile: Profile, offered_rps: float) -> dict[str, Any]:
    """Open-loop load at ``offered_rps`` for ``profile.overload_seconds``: what was answered, how, and recovery."""
    rate = max(50.0, offered_rps)
    result = openloop(system.url, rate, profile.overload_seconds)
    ended = time.perf_counter()
    recovered = time_to_recover(system)
    answered = answered_2xx(result["statuses"])
    return {
        "offered_rps": rate,
        "seconds": profile.overload_seconds,
        "share_answered": round(answered / max(1, result["requests"]), 4),
        "statuses": result["statuses"],
        "errors": result["errors"],
        "in_flight_at_close": result["in_flight_at_close"],
        "not_sent": result["not_sent"],
        "share_of_sent_answered": round(answered / max(1, result["requests"] - result["not_sent"]), 4),
        "p99_success_ms": result["ok_latency_ms"]["p99"],
        "p99_success_from_send_ms": result["ok_latency_from_send_ms"]["p99"],
        "send_lag_p99_ms": result["send_lag_ms"]["p99"],
        "recover_s": round(recovered - ended, 3) if recovered else None,
    }


def time_to_recover(system: System, limit_s: float = 60) -> float | None:
    """When a single request is answered 200 within 100 ms again."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        status, _ = post(system.url, {"date": "2018-01-21", "store": 10, "item": 23}, timeout=5)
        if status == 200 and time.perf_counter() - started < 0.1:
            return time.perf_counter()
        time.sleep(0.05)
    return None


# -- 4. fault: kill one model process every 5 s ----------------------------------------------------


def fault(system: System, profile: Profile) -> dict[str, Any]:
    """SIGKILL a model process under 16-connection load, each time the system is whole again.

    A kill comes at least 5 s after the one before and only once every model process serves
    again (:func:`healthy`), so no kill lands on a system still down from the previous one.
    A kill's ``recover_s`` is the time until the system is whole and a request is answered
    within 100 ms; a kill with no recovery before the load ends is reported as ``recovered: false``.
    """
    started = time.perf_counter()
    loader, result = cannon_in_background(system.url, 16, profile.fault_seconds, daemon=True)
    # the last kill leaves RECOVERY_ROOM_S before the load ends: Ray replaces a replica in 4-11 s
    kills = kill_while_loaded(system, loader, started, last_kill_at=started + profile.fault_seconds - RECOVERY_ROOM_S)
    loader.join()
    recoveries = [k["recover_s"] for k in kills if k["recovered"]]
    return {
        "kills": kills,
        "requests": result["requests"],
        "failed": failed_requests(result),
        "statuses": result["statuses"],
        "max_recover_s": max(recoveries) if recoveries else None,
        "never_recovered": sum(1 for k in kills if not k["recovered"]),
        "timeline": timeline(result.get("samples", [])),
    }


def kill_while_loaded(
    system: System, loader: threading.Thread, started: float, last_kill_at: float
) -> list[dict[str, Any]]:
    """While ``loader`` runs: from 2 s after ``started`` until ``last_kill_at``, kill one model process
    whenever the system is healthy and 5 s have passed since the last kill, and time its recovery."""
    kills: list[dict[str, Any]] = []
    next_kill = started + 2
    while loader.is_alive():
        now = time.perf_counter()
        if next_kill <= now < last_kill_at and healthy(system):
            pids = system.serving_pids()
            kill(pids[0])
            record = {"at_s": round(now - started, 2), "pid": pids[0], "count_before": len(pids)}
            record.update(watch_recovery(system, pids[0], now, loader))
            kills.append(record)
            next_kill = max(now + 5, time.perf_counter())
        time.sleep(0.2)
    return kills


def healthy(system: System) -> bool:
    """Every model process up (:meth:`System.whole`) and a prediction answered within 100 ms."""
    if not system.whole():
        return False
    asked = time.perf_counter()
    status, _ = post(system.url, {"date": "2018-01-21", "store": 10, "item": 23}, timeout=5)
    return status == 200 and time.perf_counter() - asked < 0.1


def watch_recovery(system: System, victim: int, killed_at: float, loader: threading.Thread) -> dict[str, Any]:
    """Wait (while the load runs) until ``victim`` is replaced and the system is healthy again."""
    while loader.is_alive():
        try:
            replaced = victim not in system.serving_pids()
        except (OSError, ValueError, KeyError):
            replaced = False
        if replaced and healthy(system):
            return {"recovered": True, "recover_s": round(time.perf_counter() - killed_at, 3)}
        time.sleep(0.2)
    return {"recovered": False, "recover_s": None, "unrecovered_for_s": round(time.perf_counter() - killed_at, 3)}


def timeline(samples: list[list[float]], width_ms: int = 250) -> list[list[float]]:
    """Per ``width_ms`` bucket: [start s, answers, failures, p50 ms, p99 ms] of the responses in it."""
    buckets: dict[int, list[list[float]]] = {}
    for at_ms, status, latency in samples:
        buckets.setdefault(int(at_ms // width_ms), []).append([status, latency])
    rows = []
    for index in sorted(buckets):
        entries = buckets[index]
        ok = sorted(latency for status, latency in entries if 200 <= status < 300)
        failures = len(entries) - len(ok)
        p50 = ok[len(ok) // 2] if ok else 0.0
        p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else 0.0
        rows.append([index * width_ms / 1000, len(entries), failures, p50, p99])
    return rows


# -- 5. rolling reload under load ----------------------------------------------------------------------


def reload_under_load(system: System, profile: Profile, registry: Path) -> dict[str, Any]:
    """Promote a new version and call ``/reload`` under 16-connection load: failures, and when it took over."""
    reg = Registry(registry)
    old, new = register_same_model(reg)
    reg.check(new)  # its compiled trees made before the load: the scenario times the reload, not a compile
    started = time.perf_counter()
    loader, load = cannon_in_background(system.url, 16, profile.reload_seconds)
    probe = VersionProbe(system.url)
    probe.start()
    time.sleep(2)
    reg.promote(new)
    reload_started = time.perf_counter()
    reload_seconds = system.reload()
    loader.join()
    probes = probe.stop()
    return ReloadRun(old, new, started, reload_started, reload_seconds, load, probes).summary()


def register_same_model(reg: Registry) -> tuple[str, str]:
    """Register the production model again (same trees) as a new version: (production's version, the new one)."""
    old = reg.resolve("production")
    metadata = reg.metadata(old)
    text = reg.model_path(old).read_text()
    new = reg.register(text, {k: v for k, v in metadata.items() if k not in ("version", "checksum")})
    return old, new


class VersionProbe:
    """A thread asking for one prediction every 20 ms until stopped; notes (when, status, model version)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.probes: list[tuple[float, int, str]] = []  # (time.perf_counter(), status, "" if none)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[float, int, str]]:
        """Stop the thread; every probe it made."""
        self._stop.set()
        self._thread.join()
        return self.probes

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = post(self.url, {"date": "2018-01-21", "store": 10, "item": 23}, timeout=10)
            self.probes.append((time.perf_counter(), status, body.get("model_version", "") if body else ""))
            time.sleep(0.02)


@dataclass(frozen=True)
class ReloadRun:
    """What the reload scenario saw; times are ``time.perf_counter()`` seconds."""

    old: str  # the version before
    new: str  # the version promoted
    started: float  # when the load started
    reload_started: float  # when /reload was called, after the promotion
    reload_seconds: float  # how long the /reload call took
    load: dict[str, Any]  # autocannon's result, with samples
    probes: list[tuple[float, int, str]]  # VersionProbe's

    def summary(self) -> dict[str, Any]:
        """The scenario's JSON record: the switch's timing, requests and failures (load and probes)."""
        last_old = max(
            (t for t, _, version in self.probes if version == self.old and t >= self.reload_started),
            default=self.reload_started,
        )
        return {
            "from_version": self.old,
            "to_version": self.new,
            "reload_call_s": round(self.reload_seconds, 3),
            "all_new_after_s": round(last_old - self.reload_started, 3),
            "reload_at_s": round(self.reload_started - self.started, 3),
            "requests": self.load["requests"],
            "failed": failed_requests(self.load) + sum(1 for _, status, _ in self.probes if status != 200),
            "probe_versions_after": sorted({v for t, _, v in self.probes if t > last_old}),
            "timeline": timeline(self.load.get("samples", [])),
        }


# -- 6. cold start and memory ------------------------------------------------------------------------------


def cold_start(system: System) -> float:
    """Start the system; seconds until the first correct prediction."""
    started = time.perf_counter()
    system.start()
    while time.perf_counter() - started < 300:
        status, body = post(system.url, {"date": "2018-01-21", "store": 10, "item": 23}, timeout=2)
        sales = body.get("sales", 0) if isinstance(body, dict) else body  # the floor answers a bare number
        if status == 200 and isinstance(sales, float) and sales > 0:
            return round(time.perf_counter() - started, 2)
        time.sleep(0.1)
    raise RuntimeError(f"{system.name}: no correct answer within 300 s")


def memory_under_load(system: System, seconds: float) -> dict[str, Any]:
    """RSS and PSS of the whole tree halfway through a 64-connection run, and without the harness's processes."""
    samples: list[dict[str, Any]] = []
    loader = threading.Thread(target=cannon, args=(system.url, 64, seconds))
    loader.start()
    time.sleep(seconds / 2)
    pids, harness = system.tree_pids(), set(system.harness_pids())
    samples.append(memory_mb(pids))
    samples[0]["without_harness"] = memory_mb([pid for pid in pids if pid not in harness])
    loader.join()
    return samples[0]


def status_of(system: System) -> Any:
    return get_json(f"{system.url}/status")
