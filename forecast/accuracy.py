"""How a version's forecasts did against what was sold: SMAPE, MAE, bias, band coverage, and a baseline's.

One place for the arithmetic of realised accuracy, shared by ``GET /accuracy`` (:mod:`app.accuracy`, the
forecasts scored by the mules) and ``registry promote --if-better`` (:mod:`forecast.promotion`, the
forecasts scored here).  Numpy only.

A window's actuals are laid on a (series x days) grid (:class:`Grid`, NaN where none is stored), beside
the **seasonal-naive** baseline: the same store, item and weekday 364 days earlier, from the stored
actuals too.  :func:`compare` turns the grid and a version's forecasts for its cells into the rows
compared: each day with an actual, or each **complete** ISO week (every one of its days in the window
has an actual; weeks are clipped to the window, as ``/forecast``'s are) as weekly sums.  A row has a
baseline when the year-earlier actuals of all its days are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.actuals import Actuals
from forecast.buckets import Granularity, date_buckets

SEASON_DAYS = 364  # the seasonal-naive forecast's lag: 52 weeks, so the same weekday


@dataclass(frozen=True)
class Scores:
    """Errors of ``rows`` forecasts: Kaggle's SMAPE (percent), MAE and bias (mean of forecast - actual), in sales.

    ``None`` for each when ``rows`` is 0.  ``coverage``: the share of actuals inside each band, by level
    name (``"80"``), when the forecasts have bands.
    """

    rows: int
    smape: float | None
    mae: float | None
    bias: float | None
    coverage: dict[str, float] | None = None


def smape_terms(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each row's ``200 * |F - A| / (|F| + |A|)``, 0 where both are 0 (Kaggle's definition)."""
    denominator = np.abs(forecast) + np.abs(actual)
    terms: np.ndarray = np.divide(200 * np.abs(forecast - actual), denominator,
                                  out=np.zeros_like(denominator, dtype=np.float64), where=denominator > 0)  # fmt: skip
    return terms


def score(forecast: np.ndarray, actual: np.ndarray, inside: dict[str, np.ndarray] | None = None) -> Scores:
    """The :class:`Scores` of ``forecast`` against ``actual``; ``inside``: per level name, whether each actual
    falls inside that band."""
    rows = len(actual)
    if rows == 0:
        return Scores(0, None, None, None, dict.fromkeys(inside, 0.0) if inside is not None else None)
    error = forecast - actual
    coverage = {name: float(flags.mean()) for name, flags in inside.items()} if inside is not None else None
    return Scores(rows, float(smape_terms(forecast, actual).mean()), float(np.abs(error).mean()), float(error.mean()),
                  coverage)  # fmt: skip


@dataclass(frozen=True)
class Grid:
    """A window's actuals as ``(series, days)`` matrices (float64, NaN where none is stored).

    ``stores``/``items``: each series (the pairs with an actual in the window, by store then item);
    ``baseline``: the actual :data:`SEASON_DAYS` earlier of each cell.
    """

    first_day: int  # days since 1970-01-01
    stores: np.ndarray
    items: np.ndarray
    actual: np.ndarray
    baseline: np.ndarray

    @classmethod
    def of(cls, stored: Actuals, first_day: int, days: int) -> Grid:
        """The grid of ``days`` days from ``first_day``, from ``stored``: the actuals of those days and of the
        :data:`SEASON_DAYS` before them."""
        inside = (stored.days >= first_day) & (stored.days < first_day + days)
        pairs, of_pair = np.unique(np.stack([stored.stores, stored.items]), axis=1, return_inverse=True)
        of_pair = of_pair.reshape(-1)
        present = np.unique(of_pair[inside])
        index = np.full(pairs.shape[1], -1, dtype=np.int64)
        index[present] = np.arange(len(present))
        actual = _matrix(len(present), days)
        baseline = _matrix(len(present), days)
        rows = index[of_pair]
        for target, offset in ((actual, 0), (baseline, SEASON_DAYS)):
            column = stored.days + offset - first_day
            take = (rows >= 0) & (column >= 0) & (column < days)
            target[rows[take], column[take]] = stored.sales[take]
        return cls(first_day, pairs[0, present], pairs[1, present], actual, baseline)

    @property
    def days(self) -> int:
        return int(self.actual.shape[1])

    def keep(self, series: np.ndarray, days: np.ndarray) -> Grid:
        """Only the series and days (boolean masks) a version can forecast: the others' actuals are dropped."""
        actual = np.where(days[None, :], self.actual, np.nan)[series]
        return Grid(self.first_day, self.stores[series], self.items[series], actual, self.baseline[series])

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(days, stores, items) of every cell with an actual, series by series, day by day: the rows to score."""
        series, column = np.nonzero(~np.isnan(self.actual))
        return self.first_day + column, self.stores[series], self.items[series]

    def forecasts(self, scored: np.ndarray) -> np.ndarray:
        """The ``(series, days)`` matrix of forecasts ``scored`` for :meth:`cells` (NaN elsewhere)."""
        found = _matrix(*self.actual.shape)
        found[~np.isnan(self.actual)] = scored
        return found


@dataclass(frozen=True)
class Compared:
    """The rows compared (days, or complete weeks as sums), in series order then date order.

    ``series`` indexes the grid's series; ``last_days`` and ``lengths`` say which days a row covers;
    ``baseline`` is NaN where a row has none.
    """

    series: np.ndarray
    last_days: np.ndarray
    lengths: np.ndarray
    actual: np.ndarray
    forecast: np.ndarray
    baseline: np.ndarray

    def select(self, rows: np.ndarray) -> Compared:
        return Compared(self.series[rows], self.last_days[rows], self.lengths[rows], self.actual[rows],
                        self.forecast[rows], self.baseline[rows])  # fmt: skip

    def baseline_scores(self) -> Scores:
        """The seasonal-naive baseline's :class:`Scores`, on the rows that have one."""
        has = ~np.isnan(self.baseline)
        return score(self.baseline[has], self.actual[has])


def compare(grid: Grid, forecasts: np.ndarray, granularity: Granularity) -> Compared:
    """The rows compared of ``grid`` and the version's ``(series, days)`` ``forecasts``: each day with an actual,
    or each complete week."""
    buckets = date_buckets(grid.first_day, grid.days, granularity)
    starts = buckets.first_days - grid.first_day
    present = ~np.isnan(grid.actual)
    complete = np.add.reduceat(present, starts, axis=1) == buckets.lengths[None, :]
    has_baseline = np.add.reduceat(~np.isnan(grid.baseline), starts, axis=1) == buckets.lengths[None, :]
    series, bucket = np.nonzero(complete)
    sums = [np.add.reduceat(np.nan_to_num(matrix), starts, axis=1)[series, bucket]
            for matrix in (grid.actual, forecasts, grid.baseline)]  # fmt: skip
    baseline = np.where(has_baseline[series, bucket], sums[2], np.nan)
    return Compared(series, buckets.last_days[bucket], buckets.lengths[bucket], sums[0], sums[1], baseline)


def _matrix(rows: int, columns: int) -> np.ndarray:
    return np.full((rows, columns), np.nan)
