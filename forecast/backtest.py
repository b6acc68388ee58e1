"""The rolling-origin backtest a version's intervals are calibrated on (:mod:`forecast.intervals`).

At each of several cutoffs (``origins``: the last day of the data, then every
:data:`SPACING_DAYS` days back) a model is fitted, with the version's own settings, on the
data up to the cutoff only, and forecasts every series for up to :data:`MAX_HORIZON_DAYS`
days after it (to the end of the data).  Its errors on those days, on their weekly sums
and on the store, item and chain totals, summed exactly as ``/forecast`` sums
(:mod:`forecast.buckets`), are the calibration's.  A cutoff with less than
:data:`MIN_HISTORY_DAYS` days before it is skipped: a model needs a year to see a season.

Coverage is measured honestly: the cells fitted on every cutoff but the newest are applied
to the newest cutoff's errors (horizons up to :data:`SPACING_DAYS` days), and the share
inside each band is reported with the version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecast.buckets import Granularity, Totals, aggregate, date_buckets, series_groups
from forecast.config import ModelSettings
from forecast.data import SalesData
from forecast.features import Rows
from forecast.intervals import Calibration, Cell, coverage, errors, kind_key
from forecast.model import Predictor

SPACING_DAYS = 91
MAX_HORIZON_DAYS = 366
MIN_HISTORY_DAYS = 365
DEFAULT_ORIGINS: int = ModelSettings.model_fields["backtest_origins"].default  # one default: the setting's
COVERAGE_LEVELS = (50.0, 80.0, 90.0, 95.0, 99.0)

Fit = Callable[[SalesData], Predictor]


@dataclass
class Errors:
    """One kind's errors, pooled: how far ahead, the forecast, the error (three equal-length arrays per origin)."""

    horizons: list[np.ndarray]
    forecasts: list[np.ndarray]
    errors: list[np.ndarray]

    def add(self, horizons: np.ndarray, forecasts: np.ndarray, actual: np.ndarray) -> None:
        known = ~np.isnan(actual)  # a sum over a day with no actual is not an error
        self.horizons.append(horizons[known])
        self.forecasts.append(forecasts[known])
        self.errors.append(errors(actual[known], forecasts[known]))

    def cell(self) -> Cell:
        return Cell.fit(np.concatenate(self.horizons), np.concatenate(self.forecasts), np.concatenate(self.errors))


def calibrate(data: SalesData, fit: Fit, origins: int = DEFAULT_ORIGINS, log: Callable[[str], None] = print) -> (
        Calibration | None):  # fmt: skip
    """The calibration of ``data``'s backtest (``fit``: the version's own training), or None without a cutoff."""
    per_origin: list[dict[str, Errors]] = []
    cutoffs: list[str] = []
    last = int(data.rows.days.max())
    for k in range(1, origins + 1):
        origin = last - k * SPACING_DAYS
        if origin - int(data.rows.days.min()) < MIN_HISTORY_DAYS:
            break
        log(f"backtest: fitting through {np.datetime64(origin, 'D')}, forecasting up to {MAX_HORIZON_DAYS} days")
        per_origin.append(origin_errors(data, fit(data.select(data.rows.days <= origin)), origin))
        cutoffs.append(str(np.datetime64(origin, "D")))
    if not per_origin:
        return None
    cells = {key: _pooled(per_origin, key).cell() for key in per_origin[0]}
    return Calibration(cells, tuple(cutoffs), held_out_coverage(per_origin))


def origin_errors(data: SalesData, model: Predictor, origin: int) -> dict[str, Errors]:
    """The errors, by kind (:func:`forecast.intervals.kind_key`), of ``model`` trained through day ``origin``."""
    stores, items = _series(data)
    days = min(MAX_HORIZON_DAYS, int(data.rows.days.max()) - origin)
    grid_days = np.tile(origin + 1 + np.arange(days), len(stores))
    rows = Rows(grid_days.astype("datetime64[D]"), np.repeat(stores, days), np.repeat(items, days))
    forecast = model.predict(rows).reshape(len(stores), days)
    actual = _actual_matrix(data, stores, items, origin + 1, days)
    found: dict[str, Errors] = defaultdict(lambda: Errors([], [], []))
    for totals in (None, *Totals):
        groups = series_groups(stores, items, totals)
        daily = date_buckets(origin + 1, days, Granularity.DAY)
        f, a = aggregate(forecast, groups, daily), aggregate(actual, groups, daily)
        horizons = np.broadcast_to(np.arange(1, days + 1), f.shape)
        found[kind_key(Granularity.DAY, totals, 1)].add(horizons.ravel(), f.ravel(), a.ravel())
        _add_weeks(found, totals, f, a, origin)
    return dict(found)


def _add_weeks(found: dict[str, Errors], totals: Totals | None, daily_f: np.ndarray, daily_a: np.ndarray,
               origin: int) -> None:  # fmt: skip
    """The errors of sums of the first ``d`` days of every whole ISO week (d = 1..7): a week of the answer
    clipped to ``d`` days at either end of the range sums ``d`` days too."""
    first_monday = (-(origin + 1 + 3)) % 7  # offset of the first Monday after the origin (day 0 was a Thursday)
    weeks = (daily_f.shape[1] - first_monday) // 7
    if weeks <= 0:
        return
    span = slice(first_monday, first_monday + 7 * weeks)
    f = np.cumsum(daily_f[:, span].reshape(len(daily_f), weeks, 7), axis=2)  # left to right, as aggregate()
    a = np.cumsum(daily_a[:, span].reshape(len(daily_a), weeks, 7), axis=2)
    for d in range(1, 8):
        horizons = first_monday + 7 * np.arange(weeks) + d  # the day ahead of the window's last day
        shape = f[:, :, d - 1].shape
        found[kind_key(Granularity.WEEK, totals, d)].add(
            np.broadcast_to(horizons, shape).ravel(), f[:, :, d - 1].ravel(), a[:, :, d - 1].ravel()
        )


def held_out_coverage(per_origin: list[dict[str, Errors]]) -> dict[str, dict[str, float]]:
    """Per kind (days and whole weeks), the newest cutoff's errors inside bands calibrated on the other cutoffs."""
    if len(per_origin) < 2:
        return {}
    newest, older = per_origin[0], per_origin[1:]
    found = {}
    for key in newest:
        if key.endswith("/1") or key.endswith("/7"):
            held = _pooled([newest], key)
            cell = _pooled(older, key).cell()
            found[key] = coverage(cell, np.concatenate(held.horizons), np.concatenate(held.forecasts),
                                  np.concatenate(held.errors), COVERAGE_LEVELS)  # fmt: skip
    return found


def _pooled(per_origin: list[dict[str, Errors]], key: str) -> Errors:
    pooled = Errors([], [], [])
    for found in per_origin:
        pooled.horizons += found[key].horizons
        pooled.forecasts += found[key].forecasts
        pooled.errors += found[key].errors
    return pooled


def _series(data: SalesData) -> tuple[np.ndarray, np.ndarray]:
    """Every (store, item) of ``data``, sorted."""
    pairs = np.unique(np.stack([data.rows.stores, data.rows.items]), axis=1)
    return pairs[0].astype(np.int64), pairs[1].astype(np.int64)


def _actual_matrix(data: SalesData, stores: np.ndarray, items: np.ndarray, first_day: int, days: int) -> np.ndarray:
    """Sales (series x days) from ``first_day``; NaN where ``data`` has no row."""
    out = np.full((len(stores), days), np.nan)
    series_of = {(int(s), int(i)): n for n, (s, i) in enumerate(zip(stores.tolist(), items.tolist(), strict=True))}
    inside = (data.rows.days >= first_day) & (data.rows.days < first_day + days)
    chosen = data.select(inside)
    rows = np.array([series_of[(s, i)] for s, i in zip(chosen.rows.stores.tolist(), chosen.rows.items.tolist(),
                                                       strict=True)], dtype=np.int64)  # fmt: skip
    out[rows, chosen.rows.days - first_day] = chosen.sales
    return out
