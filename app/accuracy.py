"""``GET /accuracy``: how each served version's forecasts did against the stored actuals, and the baseline's.

One use case, no Flask.  For a model and a window of days (by default the last
:data:`DEFAULT_WINDOW_DAYS` days with actuals), each version that is ``production``,
``canary`` or ``shadow`` (and any asked for by ``version=``) scores the window's
(date, store, item) cells that have an actual, through the mules in their **spare time**
(:meth:`app.service.ForecastService.score`: after every live request's jobs).  Its forecast
for a cell is deterministic, so no prediction log is needed: what production, canary and
shadow would have said is recomputed.  The arithmetic is :mod:`forecast.accuracy`'s;
bands are the version's own calibration (:mod:`app.bands`), as ``/forecast`` answers them.

The window's actuals and the baseline's (the same days 364 days earlier) are read once per
request, if some version needs them.  A version's entry is kept in the actuals store, per (model,
version, window, granularity, breakdown), until new actuals arrive for those days
(:meth:`forecast.actuals.ActualsStore.stamp`): every worker (and every pod sharing a PostgreSQL
store) finds what one computed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from app.actuals import ActualsUseCase, Window, read_date, window_of
from app.bands import half_widths, horizons, level_names
from app.errors import ApiError, InvalidInput
from app.schemas import DEFAULT_LEVELS
from app.service import ForecastService, ServedModel
from forecast.accuracy import SEASON_DAYS, Compared, Grid, Scores, compare, score
from forecast.actuals import ActualsStore
from forecast.buckets import Granularity
from forecast.intervals import bands, kind_key
from forecast.registry import DEFAULT_MODEL
from serving.columns import Columns

ROUTE = "/accuracy"
DEFAULT_WINDOW_DAYS = 28
BREAKDOWNS = ("store", "item")
SERVED_ALIASES = ("production", "canary", "shadow")
QUERY_FIELDS = ("model", "start", "end", "granularity", "by", "version")


@dataclass(frozen=True)
class AccuracyQuery:
    """What ``/accuracy`` is asked: a model, a window (None: the last days with actuals), how rows are compared."""

    model: str = DEFAULT_MODEL
    start: dt.date | None = None
    end: dt.date | None = None
    granularity: Granularity = Granularity.DAY
    by: str | None = None  # "store" or "item": a breakdown beside the whole
    versions: tuple[str, ...] = ()  # asked for beside the served ones


class AccuracyUseCase:
    """Answers ``/accuracy``; one per web worker, thread-safe (each store call has its own connection)."""

    def __init__(self, service: ForecastService, actuals: ActualsUseCase) -> None:
        self.service = service
        self.actuals = actuals

    def answer(self, query_string: str) -> dict[str, Any]:
        """``GET /accuracy``'s body; raises an :class:`app.errors.ApiError` (4xx naming the field, 503, 504)."""
        return self.report(read_query(query_string))

    def report(self, query: AccuracyQuery) -> dict[str, Any]:
        """The body for ``query`` (:meth:`answer`'s, and what the gauges are set from)."""
        self.service.route(query.model)  # 404 for a model that does not exist, before the store is opened
        store = self.actuals.store()
        window = window_of(store, query.start, query.end, DEFAULT_WINDOW_DAYS)
        versions = self.versions(query.model, query.versions)
        deadline = time.time() + self.service.settings.deadline_s
        if window is None:  # nothing stored yet
            entries = [{"version": version, "aliases": aliases, **_scores(Scores(0, None, None, None)),
                        "baseline": _scores(Scores(0, None, None, None))} for version, aliases in versions]  # fmt: skip
        else:
            grid = functools.cache(lambda: window_grid(store, window))  # read once, if some version needs it
            entries = [self.entry(store, query, window, version, aliases, grid, deadline)
                       for version, aliases in versions]  # fmt: skip
        return {
            "model": query.model,
            "start": window.date(window.first_day) if window else None,
            "end": window.date(window.last_day) if window else None,
            "granularity": query.granularity.value,
            "by": query.by,
            "versions": entries,
        }

    def versions(self, model: str, asked: tuple[str, ...]) -> list[tuple[str, list[str]]]:
        """Each version to judge, with the aliases naming it: production, canary, shadow, then those asked for."""
        route = self.service.route(model)
        registry = self.service.registry.named(model)
        table = registry.alias_table()
        served = [route.production, route.canary, route.shadow]
        found: list[str] = []
        for version in [*served, *[table[name].version for name in SERVED_ALIASES if name in table], *asked]:
            if version and version not in found:
                found.append(version)
        known = set(registry.versions())
        for version in asked:
            if version not in known:
                raise InvalidInput(f"model {model!r} has no version {version!r}", field="version")
        return [(version, [name for name, alias in table.items() if alias.version == version]) for version in found]

    def entry(self, store: ActualsStore, query: AccuracyQuery, window: Window, version: str, aliases: list[str],
              grid: Callable[[], Grid], deadline: float) -> dict[str, Any]:  # fmt: skip
        """One version's entry, from the cache while no actuals arrived for its days (``grid``: the window's
        actuals, read on the first call)."""
        key = f"{query.model}/{version}/{window.first_day}-{window.last_day}/{query.granularity}/{query.by}"
        stamp = store.stamp(window.first_day, window.last_day, SEASON_DAYS)
        cached = store.cached(key, stamp)
        if cached is not None:
            return {**json.loads(cached), "aliases": aliases}
        found = self.judge(query, grid(), self.service.model(query.model, version), deadline)
        store.keep(key, stamp, json.dumps(found))
        return {**found, "aliases": aliases}

    def judge(self, query: AccuracyQuery, grid: Grid, served: ServedModel, deadline: float) -> dict[str, Any]:
        """``served``'s scores on the cells of ``grid`` it can forecast (its stores, items and dates)."""
        domain = served.domain
        days = grid.first_day + np.arange(grid.days)
        grid = grid.keep(np.isin(grid.stores, list(domain.stores)) & np.isin(grid.items, list(domain.items)),
                         (days >= domain.first_day) & (days <= domain.last_day))  # fmt: skip
        cells = grid.cells()
        scored = np.empty(0)
        if len(cells[0]):
            scored = self.service.score(query.model, served.version, Columns.of(*cells), deadline)
        compared = compare(grid, grid.forecasts(scored), query.granularity)
        inside = coverage_flags(served, query.granularity, compared)
        entry: dict[str, Any] = {"version": served.version, **_judged(compared, inside)}
        if query.by is not None:
            labels = (grid.stores if query.by == "store" else grid.items)[compared.series]
            entry["breakdown"] = [
                {query.by: value, **_judged(compared.select(labels == value), _select(inside, labels == value))}
                for value in np.unique(labels).tolist()
            ]
        return entry


def window_grid(store: ActualsStore, window: Window) -> Grid:
    """The window's actuals on a grid, beside the baseline's (the same days :data:`SEASON_DAYS` earlier)."""
    return Grid.of(store.read(window.first_day, window.last_day, SEASON_DAYS), window.first_day, window.days)


def coverage_flags(served: ServedModel, granularity: Granularity, compared: Compared) -> dict[str, np.ndarray] | None:
    """Per level name, whether each compared actual lies inside ``served``'s band at that level (its calibration
    for rows of that kind); None when the version has no bands for them."""
    if served.calibration is None:
        return None
    ahead = horizons(served, compared.last_days)
    inside = np.empty((len(compared.actual), len(DEFAULT_LEVELS)), dtype=bool)
    for length in np.unique(compared.lengths).tolist():
        rows = compared.lengths == length
        try:
            widths = half_widths(served, kind_key(granularity, None, length), ahead[rows], compared.forecast[rows],
                                 DEFAULT_LEVELS)  # fmt: skip
        except ApiError:  # a kind or level its backtest cannot support: no coverage rather than a wrong one
            return None
        lower, upper = bands(compared.forecast[rows], widths)
        actual = compared.actual[rows][:, None]
        inside[rows] = (lower <= actual) & (actual <= upper)
    return {name: inside[:, n] for n, name in enumerate(level_names(DEFAULT_LEVELS))}


def _judged(compared: Compared, inside: dict[str, np.ndarray] | None) -> dict[str, Any]:
    return {**_scores(score(compared.forecast, compared.actual, inside)),
            "baseline": _scores(compared.baseline_scores())}  # fmt: skip


def _select(inside: dict[str, np.ndarray] | None, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    return None if inside is None else {name: flags[rows] for name, flags in inside.items()}


def _scores(scores: Scores) -> dict[str, Any]:
    found: dict[str, Any] = {"rows": scores.rows, "smape": scores.smape, "mae": scores.mae, "bias": scores.bias}
    if scores.coverage is not None:
        found["coverage"] = scores.coverage
    return found


# -- reading the query ----------------------------------------------------------------------


def read_query(query_string: str) -> AccuracyQuery:
    """The query string's :class:`AccuracyQuery`; 422 naming the parameter for anything it cannot read."""
    fields: dict[str, Any] = {}
    versions: list[str] = []
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in QUERY_FIELDS:
            raise InvalidInput(f"unknown query parameter {name!r} (known: {', '.join(QUERY_FIELDS)})", field=name)
        if name == "version":
            versions.append(value)
        elif name in ("start", "end"):
            fields[name] = read_date(name, value)
        elif name == "granularity":
            if value not in {g.value for g in Granularity}:
                raise InvalidInput(f"granularity: day or week (got {value!r})", field=name)
            fields[name] = Granularity(value)
        elif name == "by":
            if value not in BREAKDOWNS:
                raise InvalidInput(f"by: store or item (got {value!r})", field=name)
            fields[name] = value
        else:
            fields[name] = value
    return AccuracyQuery(**fields, versions=tuple(versions))
