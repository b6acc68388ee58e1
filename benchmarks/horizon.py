"""The "Forecast horizon" scenario: ``POST /forecast`` against the same forecast made the way a Ray Serve user must.

Run by ``benchmarks/run.py`` after the systems' own scenarios (full suite and smoke version), or alone with
``--only horizon`` (merged into the results file). It starts two systems of its own, side by side, each
with its own copy of the registry: this stack (``uwsgi-mules``, default settings) and one Ray Serve
configuration, the fastest of this run's 45,000-row batches (JSON and CSV together; ``ray-plain``, the
published report's, when the run has none). Their requests are interleaved (this stack, Ray; then Ray,
this stack; ...) so the machine's drift hits both.

**This stack.** One ``POST /forecast`` per answer: every series the model knows (10 stores x 50 items),
from 2018-01-01 (the day after its training data), 80 and 95% bands; 90 days by day and by ISO week, as
JSON and as CSV (``Accept: text/csv``), and 366 days by day, JSON and CSV. Timed: from sending the
request to the answer's last byte; the answer is the finished document. The client's reading of it
into columns (orjson; numpy for CSV) is timed apart.

**The Ray user.** Ray Serve has no horizon endpoint. Its user builds the grid of every series x day
client-side (numpy, then a JSON list of rows with orjson, or the Kaggle CSV ``id,date,store,item``:
what the batch scenario posts), posts it to ``/predict`` in one request (CSV as CSV where the
configuration reads it, ``plain``'s), and for weeks reads the answer and sums each series' days into
ISO weeks (numpy); no bands. Timed: all of it, and each step apart. A daily answer is a finished
document as it comes (date, store, item, sales; or the Kaggle submission ``id,sales``), so a daily
form's time leaves reading it out (timed apart, as this stack's).

**Checked**, every answer, outside the timer: the row count; dates, stores and items in grid order;
each value against one ``/predict`` of the same grid made by this stack before the runs (daily: equal;
weekly: the same sums within 1e-9); this stack's 80 and 95% bands present and nested around the value.

**Measured** per request: the system's whole process tree's CPU time (its threads' scheduler time,
as the batch scenario measures it) and its PSS and RSS sampled every 50 ms: CPU per request is the
median, peak memory the highest sample of the scenario.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.netns import NEEDS_NAMESPACE
from benchmarks.scenarios import SERIES, Settler, idle_cpu, post_raw
from benchmarks.systems import RaySystem, System, memory_mb, thread_cpu_seconds
from forecast.registry import Registry

HERE = Path(__file__).resolve().parent
OURS = "uwsgi-mules"
DEFAULT_RAY = "ray-plain"  # the published report's fastest 45,000-row batch (JSON)
JSON_ONLY_RAY = "ray-tutorial"  # the Ray configuration that runs outside the suite's network namespace
START = np.datetime64("2018-01-01", "D")  # the day after the benchmark model's training data
LEVELS = (80, 95)
GOAL_TIMES_FASTER = 3.0  # than the Ray user's way, every form
GOAL_SECONDS = 0.1  # this stack's answer, the 90-day forms
GOAL_DAYS = 90
TOLERANCE = 1e-9
SAMPLE_S = 0.05

Log = Callable[[str], None]
Listeners = Callable[[list[int]], list[str]]  # run.non_loopback_listeners
RegistryCopy = Callable[[str], Path]  # a name -> a fresh copy of the benchmark's registry


@dataclass(frozen=True)
class Form:
    """One kind of answer: how many days, by day or ISO week, JSON or CSV."""

    days: int
    granularity: str  # "day" | "week"
    fmt: str  # "json" | "csv"

    @property
    def key(self) -> str:
        return f"{self.days}-{self.granularity}-{self.fmt}"

    @property
    def weekly(self) -> bool:
        return self.granularity == "week"

    @property
    def goal_seconds(self) -> float | None:
        """This stack's bar in seconds, for the 90-day forms; None for the others."""
        return GOAL_SECONDS if self.days == GOAL_DAYS else None


FORMS = (Form(90, "day", "json"), Form(90, "day", "csv"), Form(90, "week", "json"), Form(90, "week", "csv"),
         Form(366, "day", "json"), Form(366, "day", "csv"))  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """How often, and how long to wait for quiet before the runs (the smoke version does not)."""

    repeats: int
    settle_for_quiet: bool = True
    settle_limit_s: float = 120.0


FULL = Profile(repeats=9)  # requests of 0.03-2 s: nine of each form and system cost under a minute
SMOKE = Profile(repeats=1, settle_for_quiet=False, settle_limit_s=30.0)


# -- the grid and its weeks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Every series x ``days`` days from ``start``: series by series (store, then item), each one's days in
    order. The rows ``/forecast`` answers in this order, and the rows a Ray user posts."""

    start: np.datetime64
    days: int
    stores: np.ndarray  # one per series
    items: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.stores) * self.days

    def dates(self) -> np.ndarray:
        """Every row's date (datetime64[D])."""
        return np.tile(self.start + np.arange(self.days), len(self.stores))

    def row_stores(self) -> np.ndarray:
        return np.repeat(self.stores, self.days)

    def row_items(self) -> np.ndarray:
        return np.repeat(self.items, self.days)


def grid(days: int, start: np.datetime64 = START, series: list[tuple[int, int]] = SERIES) -> Grid:
    pairs = np.array(series, dtype=np.int64)
    return Grid(start, days, pairs[:, 0], pairs[:, 1])


def grid_body(rows: Grid, fmt: str) -> tuple[bytes, dict[str, str]]:
    """The grid as the batch scenario posts it: a JSON list of row objects, or the Kaggle CSV with ids."""
    dates = np.datetime_as_string(rows.dates()).tolist()
    stores, items = rows.row_stores().tolist(), rows.row_items().tolist()
    if fmt == "json":
        body = orjson.dumps([{"date": d, "store": s, "item": i} for d, s, i in zip(dates, stores, items, strict=True)])
        return body, {"Content-Type": "application/json"}
    lines = "".join(f"{n},{d},{s},{i}\n" for n, (d, s, i) in enumerate(zip(dates, stores, items, strict=True)))
    return ("id,date,store,item\n" + lines).encode(), {"Content-Type": "text/csv", "Accept": "text/csv"}


def iso_weeks(start: np.datetime64, days: int) -> tuple[np.ndarray, np.ndarray]:
    """The ISO weeks (Monday to Sunday) of ``days`` days from ``start``, clipped to them: each week's offset
    from ``start`` in days, and its length."""
    day_numbers = start.astype("datetime64[D]").astype(np.int64) + np.arange(days)
    mondays = (day_numbers + 3) % 7 == 0  # 1970-01-01 (day 0) was a Thursday
    mondays[0] = True  # the first week starts on the first day, whichever it is
    offsets = np.flatnonzero(mondays)
    return offsets, np.diff(np.append(offsets, days))


def week_sums(daily: np.ndarray, start: np.datetime64) -> np.ndarray:
    """Each series' days summed into ISO weeks: ``daily`` (series, days) -> (series, weeks)."""
    offsets, _ = iso_weeks(start, daily.shape[1])
    sums: np.ndarray = np.add.reduceat(daily, offsets, axis=1)
    return sums


# -- reading answers -------------------------------------------------------------------------------------


def csv_columns(data: bytes) -> dict[str, np.ndarray]:
    """A CSV answer's columns by name, each an array of its cells (bytes); numpy only, no quoting."""
    header, _, rest = data.partition(b"\n")
    names = header.decode().strip().split(",")
    cells = rest.replace(b"\r", b"").replace(b"\n", b",").split(b",")[:-1]  # the last line's newline: one ""
    table = np.array(cells).reshape(-1, len(names))
    return {name: table[:, n] for n, name in enumerate(names)}


def ray_sales(data: bytes, fmt: str) -> np.ndarray:
    """The forecasts of a Ray ``/predict`` answer in row order: ``{"predictions": [{"sales"}]}``, or ``id,sales``."""
    if fmt == "json":
        return np.array([p["sales"] for p in orjson.loads(data)["predictions"]], dtype=np.float64)
    columns = csv_columns(data)
    sales = columns["sales"].astype(np.float64)
    return sales[np.argsort(columns["id"].astype(np.int64))]


@dataclass(frozen=True)
class Table:
    """A ``/forecast`` answer read into columns."""

    dates: np.ndarray  # datetime64[D]
    stores: np.ndarray
    items: np.ndarray
    sales: np.ndarray
    days: np.ndarray | None  # weeks only
    lower: dict[str, np.ndarray] = field(default_factory=dict)  # by level name ("80")
    upper: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sales)


def read_forecast(data: bytes, fmt: str) -> Table:
    """This stack's ``/forecast`` answer as columns, JSON or CSV (as a client reads it)."""
    if fmt == "csv":
        return _table_of_csv(csv_columns(data))
    rows = orjson.loads(data)["forecasts"]
    levels = list(rows[0].get("lower", {})) if rows else []
    return Table(
        np.array([r["date"] for r in rows], dtype="datetime64[D]"),
        np.array([r["store"] for r in rows], dtype=np.int64),
        np.array([r["item"] for r in rows], dtype=np.int64),
        np.array([r["sales"] for r in rows], dtype=np.float64),
        np.array([r["days"] for r in rows], dtype=np.int64) if rows and "days" in rows[0] else None,
        {level: np.array([r["lower"][level] for r in rows], dtype=np.float64) for level in levels},
        {level: np.array([r["upper"][level] for r in rows], dtype=np.float64) for level in levels},
    )


def _table_of_csv(columns: dict[str, np.ndarray]) -> Table:
    def bands(edge: str) -> dict[str, np.ndarray]:
        prefix = f"{edge}_"
        return {name[len(prefix) :]: cells.astype(np.float64) for name, cells in columns.items()
                if name.startswith(prefix)}  # fmt: skip

    return Table(columns["date"].astype("U10").astype("datetime64[D]"), columns["store"].astype(np.int64),
                 columns["item"].astype(np.int64), columns["sales"].astype(np.float64),
                 columns["days"].astype(np.int64) if "days" in columns else None, bands("lower"),
                 bands("upper"))  # fmt: skip


# -- checking answers ------------------------------------------------------------------------------------


def expected_values(reference: np.ndarray, form: Form, start: np.datetime64 = START) -> np.ndarray:
    """What a form answers, row by row, from the daily ``reference`` (series, days): the days, or their weeks."""
    return (week_sums(reference, start) if form.weekly else reference).ravel()


def table_problems(table: Table, form: Form, rows: Grid, reference: np.ndarray) -> list[str]:
    """What is wrong with this stack's answer (empty: nothing): rows, their order, values, bands."""
    if form.weekly:
        offsets, lengths = iso_weeks(rows.start, rows.days)
        dates = np.tile(rows.start + offsets, len(rows.stores))
        stores, items = np.repeat(rows.stores, len(offsets)), np.repeat(rows.items, len(offsets))
    else:
        dates, stores, items, lengths = rows.dates(), rows.row_stores(), rows.row_items(), np.empty(0)
    if len(table) != len(dates):
        return [f"{len(table)} rows, not {len(dates)}"]
    found = []
    if not (np.array_equal(table.dates, dates) and np.array_equal(table.stores, stores)
            and np.array_equal(table.items, items)):  # fmt: skip
        found.append("rows not in grid order (series by series, dates in order)")
    if form.weekly and (table.days is None or not np.array_equal(table.days, np.tile(lengths, len(rows.stores)))):
        found.append("weeks' days differ from the ISO weeks'")
    error = float(np.max(np.abs(table.sales - expected_values(reference, form, rows.start))))
    exact = form.granularity == "day" and form.fmt == "json"  # /predict's JSON numbers, the same doubles
    if error > (0.0 if exact else TOLERANCE):
        found.append(f"values differ from /predict's by up to {error:.3g}")
    return found + band_problems(table)


def band_problems(table: Table) -> list[str]:
    """Bands missing for a level asked, or not nested around the value (lower 95 <= lower 80 <= sales <= ...)."""
    names = [f"{level:g}" for level in LEVELS]
    if any(name not in table.lower or name not in table.upper for name in names):
        return [f"bands missing: lower {sorted(table.lower)}, upper {sorted(table.upper)}"]
    edges = [table.lower[name] for name in reversed(names)] + [table.sales] + [table.upper[name] for name in names]
    crossed = sum(int(np.sum(low > high)) for low, high in itertools.pairwise(edges))
    return [f"bands out of order in {crossed} places"] if crossed else []


# -- one request each ------------------------------------------------------------------------------------


@dataclass
class Meter:
    """While a request runs: the system tree's highest PSS and RSS (sampled every 50 ms) and its CPU time."""

    system: System
    peak_pss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0

    @contextmanager
    def measuring(self) -> Iterator[None]:
        pids = self.system.tree_pids()
        self._sample(pids)
        done = threading.Event()
        sampler = threading.Thread(target=lambda: self._sample_until(done), daemon=True)
        sampler.start()
        before = thread_cpu_seconds(pids)
        try:
            yield
        finally:
            self.cpu_s = thread_cpu_seconds(pids) - before
            done.set()
            sampler.join()

    def _sample_until(self, done: threading.Event) -> None:
        while not done.wait(SAMPLE_S):
            self._sample(self.system.tree_pids())

    def _sample(self, pids: list[int]) -> None:
        memory = memory_mb(pids)
        self.peak_pss_mb = max(self.peak_pss_mb, memory["pss_mb"])
        self.peak_rss_mb = max(self.peak_rss_mb, memory["rss_mb"])


def forecast_body(form: Form) -> tuple[bytes, dict[str, str]]:
    """This stack's request: every series (none named), from :data:`START`, both levels."""
    body = {"start": str(START), "days": form.days, "granularity": form.granularity, "level": list(LEVELS)}
    accept = "text/csv" if form.fmt == "csv" else "application/json"
    return orjson.dumps(body), {"Content-Type": "application/json", "Accept": accept}


def ours_run(system: System, form: Form, reference: np.ndarray) -> dict[str, Any]:
    """One ``POST /forecast``, timed to its last byte; then read (timed apart) and checked."""
    body, headers = forecast_body(form)
    meter = Meter(system)
    with meter.measuring():
        started = time.perf_counter()
        status, data = post_raw(system.url, body, headers, path="/forecast")
        seconds = time.perf_counter() - started
    record = _record(status, seconds, meter)
    if status != 200:
        return {**record, "rows": 0, "problems": [f"status {status}: {data[:200]!r}"]}
    started = time.perf_counter()
    table = read_forecast(data, form.fmt)
    record["read_s"] = round(time.perf_counter() - started, 4)
    record["with_read_s"] = round(seconds + record["read_s"], 4)
    problems = table_problems(table, form, grid(form.days), reference)
    return {**record, "rows": len(table), "answer_mb": round(len(data) / 2**20, 2), "problems": problems}


def ray_run(system: System, form: Form, reference: np.ndarray, fmt: str) -> dict[str, Any]:
    """The Ray user's way, every step timed: the grid, the ``/predict`` request (``fmt``), reading the answer,
    and for weeks the sums; ``seconds`` is what the form needs (a daily answer is used unread)."""
    meter = Meter(system)
    started = time.perf_counter()
    rows = grid(form.days)
    body, headers = grid_body(rows, fmt)
    built = time.perf_counter()
    with meter.measuring():
        status, data = post_raw(system.url, body, headers)
    posted = time.perf_counter()
    record = _record(status, posted - started, meter)
    if status != 200:
        return {**record, "rows": 0, "problems": [f"status {status}: {data[:200]!r}"]}
    sales = ray_sales(data, fmt)
    read = time.perf_counter()
    values = week_sums(sales.reshape(len(rows.stores), rows.days), rows.start) if form.weekly else sales
    summed = time.perf_counter()
    steps = {"grid_s": built - started, "post_s": posted - built, "read_s": read - posted, "weeks_s": summed - read}
    record.update({name: round(value, 4) for name, value in steps.items()})
    record["seconds"] = round(summed - started if form.weekly else posted - started, 4)
    record["with_read_s"] = round(summed - started, 4)
    return {**record, **_value_check(values.ravel(), expected_values(reference, form, rows.start)),
            "posted": fmt, "answer_mb": round(len(data) / 2**20, 2)}  # fmt: skip


def _record(status: int, seconds: float, meter: Meter) -> dict[str, Any]:
    return {"status": status, "seconds": round(seconds, 4), "server_cpu_s": round(meter.cpu_s, 4),
            "peak_pss_mb": meter.peak_pss_mb, "peak_rss_mb": meter.peak_rss_mb}  # fmt: skip


def _value_check(values: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    if len(values) != len(expected):
        return {"rows": len(values), "problems": [f"{len(values)} values, not {len(expected)}"]}
    error = float(np.max(np.abs(values - expected)))
    problems = [] if error <= TOLERANCE else [f"values differ from /predict's by up to {error:.3g}"]
    return {"rows": len(values), "max_abs_error": error, "problems": problems}


def reference(system: System, days: int) -> np.ndarray:
    """This stack's ``/predict`` of the grid of ``days`` days, (series, days): what every answer is checked on."""
    rows = grid(days)
    body, headers = grid_body(rows, "json")
    status, data = post_raw(system.url, body, headers)
    if status != 200:
        raise RuntimeError(f"{system.name}: /predict of the {days}-day grid answered {status}: {data[:300]!r}")
    return ray_sales(data, "json").reshape(len(rows.stores), days)  # the same {"predictions": [...]} shape


# -- the scenario ----------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Medians of ``keys`` over the runs (None for a key when a run failed), the memory peaks, the runs."""
    answered = all(r["status"] == 200 and not r["problems"] for r in runs)
    medians = {f"median_{key}": (statistics.median(r[key] for r in runs) if answered else None) for key in keys}
    return {**medians, "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
            "peak_pss_mb": max(r["peak_pss_mb"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "ok": answered, "runs": runs}  # fmt: skip


OURS_KEYS = ("seconds", "read_s", "with_read_s")
RAY_KEYS = ("seconds", "grid_s", "post_s", "read_s", "weeks_s", "with_read_s")


def ray_format(system: System, fmt: str) -> str:
    """What the Ray user posts for a form: CSV where the configuration reads it (``plain``'s), else JSON."""
    return fmt if isinstance(system, RaySystem) and system.config == "plain" else "json"


def choose_ray(systems: dict[str, Any], inside_namespace: bool) -> str:
    """The Ray configuration to run against: the fastest at the 45,000-row batch, JSON and CSV together, of the
    results' Ray model systems; :data:`DEFAULT_RAY` when none has both. Outside the suite's network namespace
    (no HAProxy systems), :data:`JSON_ONLY_RAY`."""
    timed = {}
    for name, record in systems.items():
        sizes = record.get("batch", {}).get("sizes", {}).get("45000", {})
        seconds = [sizes.get(fmt, {}).get("median_seconds") for fmt in ("json", "csv")]
        if name.startswith("ray-") and record.get("kind") == "model" and not record.get("only") and None not in seconds:
            timed[name] = sum(seconds)
    chosen = min(timed, key=lambda name: timed[name]) if timed else DEFAULT_RAY
    return chosen if inside_namespace or chosen not in NEEDS_NAMESPACE else JSON_ONLY_RAY


def measure(ours: System, ray: System, profile: Profile, log: Log) -> dict[str, Any]:
    """Every form, ``profile.repeats`` times, the two systems interleaved (reversed every other round)."""
    references = {days: reference(ours, days) for days in sorted({form.days for form in FORMS})}
    log(f"[horizon] reference /predict of {', '.join(f'{d} days' for d in references)}; warm-up")
    for form in FORMS:  # not reported: each system's first answer of a kind
        ours_run(ours, form, references[form.days])
        ray_run(ray, form, references[form.days], ray_format(ray, form.fmt))
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {form.key: {"ours": [], "ray": []} for form in FORMS}
    for repeat in range(profile.repeats):
        for form in FORMS:
            turns = [("ours", ours), ("ray", ray)]
            for side, system in turns if repeat % 2 == 0 else turns[::-1]:
                if side == "ours":
                    run = ours_run(system, form, references[form.days])
                else:
                    run = ray_run(system, form, references[form.days], ray_format(system, form.fmt))
                runs[form.key][side].append(run)
        log(f"[horizon] round {repeat + 1} of {profile.repeats}")
    forms = {}
    for form in FORMS:
        forms[form.key] = {"days": form.days, "granularity": form.granularity, "format": form.fmt,
                           "series": len(SERIES), "goal_seconds": form.goal_seconds,
                           "ours": summary(runs[form.key]["ours"], OURS_KEYS),
                           "ray": summary(runs[form.key]["ray"], RAY_KEYS)}  # fmt: skip
    return forms


def run(registry_copy: RegistryCopy, systems: list[System], profile: Profile, listeners: Listeners,
        log: Log) -> dict[str, Any]:  # fmt: skip
    """Start both systems (this stack, the Ray configuration), measure every form, stop them: the record."""
    ours, ray = systems
    for system in systems:
        system.registry = registry_copy(f"horizon-{system.name}")
    require_calibration(ours.registry)
    out: dict[str, Any] = {"ray_system": ray.name, "goal_times_faster": GOAL_TIMES_FASTER,
                           "goal_seconds": GOAL_SECONDS, "goal_days": GOAL_DAYS, "levels": list(LEVELS),
                           "start": str(START), "profile": profile.__dict__,
                           "systems": {s.name: {"description": s.description} for s in systems}}  # fmt: skip
    try:
        for system in (ray, ours):  # Ray first: it takes longest to start
            log(f"[horizon] start {system.name}")
            system.start()
        for system in systems:
            system.wait_ready()
        for system in systems:
            record = out["systems"][system.name]
            record["memory_idle"] = memory_mb(system.tree_pids())
            record["idle_cpu_cores"] = idle_cpu(system)
            record["settled_s"] = {}
            Settler(system, record["idle_cpu_cores"], record["settled_s"], log, profile.settle_limit_s,
                    profile.settle_for_quiet)("horizon")  # fmt: skip
        out["forms"] = measure(ours, ray, profile, log)
        for system in systems:
            out["systems"][system.name]["non_loopback_listeners"] = listeners(system.tree_pids())
    finally:
        for system in systems:
            system.stop()
    return out


def require_calibration(registry: Path) -> None:
    """Raise unless the registry's production version has an interval calibration (the forms ask for bands)."""
    reg = Registry(registry)
    version = reg.resolve("production")
    if not reg.metadata(version).get("intervals"):
        raise RuntimeError(f"{registry}: production ({version}) has no interval calibration; train it again "
                           "without --backtest-origins 0 (`python -m forecast train`)")  # fmt: skip
