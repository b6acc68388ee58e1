"""The "Actuals and accuracy" scenario: a year of actuals in one ``POST /actuals``, 28-day ``GET /accuracy`` of three
served versions, and single-row ``/predict`` latency while they run.

Run by ``benchmarks/run.py`` after the other scenarios of the full suite (not in ``--smoke``), or alone with
``--only accuracy`` (merged into the results file). It starts this stack (``uwsgi-mules``, default settings but
for the accuracy gauges' refresh, off: it would score the same window in the background every minute and turn
a cold call into a cached one) on its own copy of the registry, in a directory of its own, so its SQLite
actuals store (``actuals.sqlite3``, beside the registry) starts empty. The registry serves three versions of
the default model: production, canary and shadow (:data:`WEIGHT` percent each), the canary and shadow the
production model registered again (same trees, as the reload scenario does): what is measured is the cost of
judging three versions, not a difference between them.

**Loads.** A year of every series (10 stores x 50 items x 365 days = 182,500 rows of
:func:`forecast.data.generate`), as ``date,store,item,sales`` CSV in one request: 2016 first (not timed; the
baseline's year of the window), then each year of the profile, new to the store (all ``added``), then the same
file again (all ``unchanged``). Timed: the request to its answer; measured: the whole process tree's peak PSS
and RSS (sampled every 50 ms) and its CPU time.

**Accuracy.** ``GET /accuracy`` of the last 28 days of 2017 (500 series x 28 days = 14,000 rows per version,
each with a baseline 364 days earlier): cold, after one day of the window's actuals was replaced (its 500 rows'
sales alternately +1 and as generated: the cached entries no longer hold), then the same call again, cached.
The first call after start (the mules' first scoring of each version) is kept apart.

**/predict meanwhile.** Single rows at a fixed rate with the harness's open-loop client
(``benchmarks/load/openloop.py``: requests on schedule over a few keep-alive connections, latency from the
scheduled time), in phases of the same length: alone; while a thread asks for cold accuracy back to back
(each call after one day's actuals changed); while a thread loads 182,500 rows back to back (the first year of
the profile, its sales alternately +1 and as generated: every row replaced). Rounds rotate the phases' order.
Per phase: the medians over its runs of p50 and p99, and the background calls' count and times.

**Checked**, every answer, outside the timer: a load's ``added``/``replaced``/``unchanged``; an accuracy answer's
three versions (production, canary, shadow), each with 14,000 rows and 14,000 baseline rows. Anything else is a
``problem`` in the record, which ``benchmarks.check`` fails on.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.horizon import Meter
from benchmarks.scenarios import Settler, idle_cpu, openloop, post_raw, register_same_model
from benchmarks.systems import System, memory_mb, thread_cpu_seconds
from forecast.data import SalesData, generate
from forecast.registry import Registry

OURS = "uwsgi-mules"
WEIGHT = 10  # canary's and shadow's share of rows, percent
WINDOW_YEAR = 2017
BASELINE_YEAR = 2016  # the year before the window: the seasonal-naive baseline's actuals
WINDOW_START, WINDOW_END = "2017-12-04", "2017-12-31"  # the last 28 days of the generated data
WINDOW_DAYS = 28
SERIES = 500  # 10 stores x 50 items
ALIASES = ("production", "canary", "shadow")
ENV = {"FORECAST_ACCURACY_REFRESH_S": "0"}  # the gauges' refresh would compute the measured window meanwhile
CSV = {"Content-Type": "text/csv"}
PHASES = ("alone", "during_accuracy", "during_load")

Log = Callable[[str], None]
Listeners = Callable[[list[int]], list[str]]  # run.non_loopback_listeners


@dataclass(frozen=True)
class Profile:
    """How much: the years loaded new (each 365 days), accuracy calls, latency rounds and their rate."""

    years: tuple[int, ...]
    accuracy_repeats: int
    rounds: int  # each runs every phase once, the order rotated
    phase_s: float
    rate: int  # single rows per second, every phase
    settle_for_quiet: bool = True
    settle_limit_s: float = 120.0

    def __post_init__(self) -> None:
        # The window's year must be loaded; the first year is the one the load phase replaces again and again,
        # never the window's (whose last day the cold accuracy calls replace in turn).
        if WINDOW_YEAR not in self.years or self.years[0] == WINDOW_YEAR or BASELINE_YEAR in self.years:
            raise ValueError(f"years: {WINDOW_YEAR} among them, not first, and not {BASELINE_YEAR}")


FULL = Profile(years=(2013, 2014, 2015, 2017), accuracy_repeats=5, rounds=3, phase_s=10, rate=200)  # ~4 min
SMOKE = Profile(years=(2015, 2017), accuracy_repeats=1, rounds=1, phase_s=3, rate=100, settle_for_quiet=False,
                settle_limit_s=30.0)  # fmt: skip


# -- the bodies ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Year:
    """One year of every series' actuals, as columns."""

    year: int
    dates: np.ndarray  # datetime64[D]
    stores: np.ndarray
    items: np.ndarray
    sales: np.ndarray

    @classmethod
    def of(cls, data: SalesData, year: int) -> Year:
        rows = data.rows
        chosen = rows.dates.astype("datetime64[Y]") == np.datetime64(str(year), "Y")
        return cls(year, rows.dates[chosen], rows.stores[chosen], rows.items[chosen], data.sales[chosen])

    @property
    def rows(self) -> int:
        return len(self.sales)

    def csv(self, extra: int = 0, day: str | None = None) -> bytes:
        """``date,store,item,sales`` of the year (``day``: of that day only), each sale plus ``extra``."""
        keep = np.ones(self.rows, dtype=bool) if day is None else self.dates == np.datetime64(day)
        dates = np.datetime_as_string(self.dates[keep], unit="D").tolist()
        rows = zip(dates, self.stores[keep].tolist(), self.items[keep].tolist(), (self.sales[keep] + extra).tolist(),
                   strict=True)  # fmt: skip
        return ("date,store,item,sales\n" + "".join(f"{d},{s},{i},{n}\n" for d, s, i, n in rows)).encode()


# -- checking answers ------------------------------------------------------------------------------------


def load_problems(answer: Any, expected: dict[str, int]) -> list[str]:
    """What is wrong with a ``POST /actuals`` answer (empty: nothing): its counts against ``expected``."""
    if not isinstance(answer, dict) or answer != expected:
        return [f"answered {answer!r}, not {expected}"]
    return []


def accuracy_problems(answer: Any) -> list[str]:
    """What is wrong with a ``GET /accuracy`` answer: not three versions named production, canary and shadow, a
    version without 14,000 rows, or without 14,000 baseline rows."""
    if not isinstance(answer, dict) or not isinstance(answer.get("versions"), list):
        return [f"not an accuracy answer: {str(answer)[:200]}"]
    versions = answer["versions"]
    found = []
    named = sorted(alias for entry in versions for alias in entry.get("aliases", []))
    if len(versions) != len(ALIASES) or named != sorted(ALIASES):
        found.append(f"{len(versions)} versions named {named}, not {len(ALIASES)}: {', '.join(ALIASES)}")
    wanted = SERIES * WINDOW_DAYS
    for entry in versions:
        rows, baseline = entry.get("rows"), entry.get("baseline", {}).get("rows")
        if rows != wanted or baseline != wanted:
            found.append(f"{entry.get('version')}: {rows} rows, {baseline} baseline rows, not {wanted}")
    return found


# -- one request each ------------------------------------------------------------------------------------


def measured(system: System, call: Callable[[], tuple[int, bytes]]) -> tuple[dict[str, Any], Any]:
    """``call`` timed, with the tree's PSS before it, its peak PSS and RSS meanwhile, its CPU time and the mules'
    share of it: (record, the answer's JSON or None)."""
    pids, mules = system.tree_pids(), set(system.serving_pids())
    before = memory_mb(pids)
    mules_before = thread_cpu_seconds([pid for pid in pids if pid in mules])
    meter = Meter(system)
    with meter.measuring():
        started = time.perf_counter()
        status, data = call()
        seconds = time.perf_counter() - started
    mules_cpu = thread_cpu_seconds([pid for pid in pids if pid in mules]) - mules_before
    record = {"status": status, "seconds": round(seconds, 4), "server_cpu_s": round(meter.cpu_s, 3),
              "mules_cpu_s": round(mules_cpu, 3), "pss_before_mb": before["pss_mb"],
              "peak_pss_mb": meter.peak_pss_mb, "peak_rss_mb": meter.peak_rss_mb}  # fmt: skip
    try:
        return record, orjson.loads(data)
    except orjson.JSONDecodeError:
        return {**record, "problems": [f"status {status}: {data[:200]!r}"]}, None


def load(system: System, body: bytes) -> tuple[int, bytes]:
    return post_raw(system.url, body, CSV, path="/actuals")


def accuracy_call(system: System) -> tuple[int, bytes]:
    """``GET /accuracy`` of the window: (status, body); 0 when the request failed."""
    query = f"model=default&start={WINDOW_START}&end={WINDOW_END}"
    try:
        with urllib.request.urlopen(f"{system.url}/accuracy?{query}", timeout=300) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def load_run(system: System, body: bytes, expected: dict[str, int], **labels: Any) -> dict[str, Any]:
    record, answer = measured(system, lambda: load(system, body))
    found = record.pop("problems", []) + load_problems(answer, expected)
    return {**labels, **record, "answer": answer, "problems": found}


def accuracy_run(system: System) -> dict[str, Any]:
    record, answer = measured(system, lambda: accuracy_call(system))
    entries = answer.get("versions", []) if isinstance(answer, dict) else []
    versions = [{key: entry.get(key) for key in ("version", "aliases", "rows", "smape")} for entry in entries]
    found = record.pop("problems", []) + accuracy_problems(answer)
    return {**record, "versions": versions, "problems": found}


class DayToggle:
    """Replaces one day of the window's actuals on each call (its sales alternately +1 and as generated), so the
    next accuracy call is cold."""

    def __init__(self, system: System, year: Year) -> None:
        self.system = system
        self.bodies = [year.csv(extra, day=WINDOW_END) for extra in (1, 0)]
        self.turn = 0

    def __call__(self) -> list[str]:
        body = self.bodies[self.turn % 2]
        self.turn += 1
        status, data = load(self.system, body)
        answer = orjson.loads(data) if status == 200 else data[:200]
        return load_problems(answer, {"added": 0, "replaced": SERIES, "unchanged": 0})


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max seconds and CPU over the runs (None when one failed), the memory peaks, the runs."""
    ok = bool(runs) and all(r["status"] == 200 and not r["problems"] for r in runs)
    seconds = [r["seconds"] for r in runs]
    return {"median_seconds": statistics.median(seconds) if ok else None,
            "min_seconds": min(seconds) if ok else None, "max_seconds": max(seconds) if ok else None,
            "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs) if runs else None,
            "median_mules_cpu_s": statistics.median(r["mules_cpu_s"] for r in runs) if runs else None,
            "median_pss_before_mb": statistics.median(r["pss_before_mb"] for r in runs) if runs else None,
            "peak_pss_mb": max((r["peak_pss_mb"] for r in runs), default=None),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=None), "ok": ok, "runs": runs}  # fmt: skip


# -- /predict meanwhile ----------------------------------------------------------------------------------


class Background:
    """A thread calling ``work`` back to back until stopped: each call's seconds and problems."""

    def __init__(self, work: Callable[[], list[str]]) -> None:
        self.work = work
        self.calls: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                problems = self.work()
            except Exception as exc:  # a malformed answer: a problem of the record, not a thread gone quiet
                problems = [f"{type(exc).__name__}: {exc}"]
            self.calls.append({"seconds": round(time.perf_counter() - started, 4), "problems": problems})

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def phase_run(system: System, phase: str, profile: Profile, work: dict[str, Callable[[], list[str]]]) -> dict[str, Any]:
    """One phase: single rows at ``profile.rate`` for ``profile.phase_s``, with ``work[phase]`` back to back
    meanwhile (none alone)."""
    if phase not in work:
        return {"load": openloop(system.url, profile.rate, profile.phase_s), "background": []}
    with Background(work[phase]) as background:
        time.sleep(0.2)  # the first background call under way before the first row is due
        result = openloop(system.url, profile.rate, profile.phase_s)
    return {"load": result, "background": background.calls}


def phase_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over a phase's runs of p50 and p99 (ms, every answer from its scheduled time), failures, and the
    background calls made meanwhile."""
    loads = [r["load"] for r in runs]
    calls = [call for r in runs for call in r["background"]]
    failed = sum(sum(n for s, n in load["statuses"].items() if not s.startswith("2")) + load["errors"]
                 for load in loads)  # fmt: skip
    return {"p50_ms": statistics.median(load["latency_ms"]["p50"] for load in loads),
            "p99_ms": statistics.median(load["latency_ms"]["p99"] for load in loads),
            "requests": sum(load["requests"] for load in loads), "failed": failed,
            "background_calls": len(calls),
            "background_median_s": statistics.median(c["seconds"] for c in calls) if calls else None,
            "background_problems": [p for c in calls for p in c["problems"]][:5], "runs": runs}  # fmt: skip


def ratios(phases: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each phase's p50 and p99 over the phase alone's."""
    alone = phases["alone"]
    return {name: {key: round(phase[key] / alone[key], 3) if alone[key] else None for key in ("p50_ms", "p99_ms")}
            for name, phase in phases.items() if name != "alone"}  # fmt: skip


def latency(system: System, profile: Profile, work: dict[str, Callable[[], list[str]]], log: Log) -> dict[str, Any]:
    """Every phase once per round, the order rotated round by round."""
    openloop(system.url, profile.rate, 2)  # warm-up, not reported
    runs: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
    for round_number in range(profile.rounds):
        shift = round_number % len(PHASES)
        for phase in PHASES[shift:] + PHASES[:shift]:
            runs[phase].append(phase_run(system, phase, profile, work))
        log(f"[accuracy] latency round {round_number + 1} of {profile.rounds}")
    phases = {phase: phase_summary(found) for phase, found in runs.items()}
    return {"rate": profile.rate, "phase_s": profile.phase_s, "phases": phases, "ratios": ratios(phases)}


# -- the scenario ----------------------------------------------------------------------------------------


def serve_three_versions(registry: Path) -> dict[str, str]:
    """Register the production model twice more and point canary and shadow at them: each alias's version."""
    reg = Registry(registry)
    for alias in ALIASES[1:]:
        _, new = register_same_model(reg)
        reg.promote(new, alias, WEIGHT)
    return {alias: reg.resolve(alias) for alias in ALIASES}


def measure(system: System, profile: Profile, log: Log) -> dict[str, Any]:
    """Loads, accuracy cold and cached, and /predict in its phases: the record's measured parts."""
    data = generate()
    years = {year: Year.of(data, year) for year in (BASELINE_YEAR, *profile.years)}
    out: dict[str, Any] = {"rows_per_year": {str(y): years[y].rows for y in years}}
    log(f"[accuracy] loading {BASELINE_YEAR} (the baseline's year)")
    base = years[BASELINE_YEAR]
    out["baseline_year"] = load_run(system, base.csv(), {"added": base.rows, "replaced": 0, "unchanged": 0},
                                    year=BASELINE_YEAR, rows=base.rows)  # fmt: skip
    new, again = [], []
    for year in profile.years:
        body, rows = years[year].csv(), years[year].rows
        new.append(load_run(system, body, {"added": rows, "replaced": 0, "unchanged": 0}, year=year, rows=rows,
                            body_mb=round(len(body) / 2**20, 2)))  # fmt: skip
        again.append(load_run(system, body, {"added": 0, "replaced": 0, "unchanged": rows}, year=year, rows=rows))
        log(f"[accuracy] loaded {year}: {new[-1]['seconds']} s, again {again[-1]['seconds']} s")
    out["load_new"], out["load_again"] = summary(new), summary(again)
    toggle = DayToggle(system, years[WINDOW_YEAR])
    out["accuracy_first"] = accuracy_run(system)
    cold, cached = [], []
    for _ in range(profile.accuracy_repeats):
        toggled = toggle()
        cold.append(accuracy_run(system))
        cold[-1]["problems"] += toggled
        cached.append(accuracy_run(system))
    out["accuracy_cold"], out["accuracy_cached"] = summary(cold), summary(cached)
    log(f"[accuracy] accuracy cold {out['accuracy_cold']['median_seconds']} s, "
        f"cached {out['accuracy_cached']['median_seconds']} s")  # fmt: skip
    replaced = years[profile.years[0]]
    bodies = [replaced.csv(extra) for extra in (1, 0)]
    turns = iter(range(1 << 30))

    def cold_accuracy() -> list[str]:
        found = toggle()
        status, data = accuracy_call(system)
        return found + (accuracy_problems(orjson.loads(data)) if status == 200 else [f"accuracy answered {status}"])

    def replacing_load() -> list[str]:
        status, data = load(system, bodies[next(turns) % 2])
        answer = orjson.loads(data) if status == 200 else data[:200]
        return load_problems(answer, {"added": 0, "replaced": replaced.rows, "unchanged": 0})

    out["predict"] = latency(system, profile, {"during_accuracy": cold_accuracy, "during_load": replacing_load}, log)
    return out


def problems(record: dict[str, Any]) -> list[str]:
    """Every problem of the record's requests: loads, accuracy calls, the background calls of the phases."""
    runs = [record["baseline_year"], record["accuracy_first"]]
    for key in ("load_new", "load_again", "accuracy_cold", "accuracy_cached"):
        runs += record[key]["runs"]
    found = [f"{r.get('year', 'accuracy')}: {p}" for r in runs for p in r["problems"]]
    for name, phase in record["predict"]["phases"].items():
        found += [f"{name}: {p}" for p in phase["background_problems"]]
    return found


def run(registry: Path, system: System, profile: Profile, listeners: Listeners, log: Log) -> dict[str, Any]:
    """Serve three versions, start the system, measure, stop it: the record."""
    system.registry = registry
    system.env = {**system.env, **ENV}
    served = serve_three_versions(registry)
    log(f"[accuracy] versions {served}; start {system.name}")
    out: dict[str, Any] = {"system": system.name, "description": system.description, "env": ENV,
                           "versions": served, "weight": WEIGHT, "window": [WINDOW_START, WINDOW_END],
                           "series": SERIES, "profile": profile.__dict__}  # fmt: skip
    try:
        system.start()
        system.wait_ready()
        out["memory_idle"] = memory_mb(system.tree_pids())
        out["idle_cpu_cores"] = idle_cpu(system)
        out["settled_s"] = {}
        Settler(system, out["idle_cpu_cores"], out["settled_s"], log, profile.settle_limit_s,
                profile.settle_for_quiet)("accuracy")  # fmt: skip
        out.update(measure(system, profile, log))
        out["non_loopback_listeners"] = listeners(system.tree_pids())
    finally:
        system.stop()
    out["problems"] = problems(out)
    return out
