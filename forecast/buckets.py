"""How daily forecasts of series become a horizon's answer: days into weeks, series into totals.

One place for both sides of a forecast: the calibration (:mod:`forecast.intervals`) measures
the errors of weekly and total sums made exactly this way, and ``/forecast``
(:mod:`app.forecasting`) answers with them.  Numpy only.

Sums are taken in a fixed order, each one left to right from 0.0: a total over series
adds the series in request order, day by day; a week adds its days in date order (of the
daily totals, when both are asked).  So a client that sums the daily answers in that order
in Python (``sum(values)``) gets the same doubles, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# 1970-01-01 (day 0) was a Thursday; ISO weeks start on Monday (weekday 0).
_EPOCH_WEEKDAY = 3


class Granularity(StrEnum):
    """What one answer row covers: a ``day``, or an ISO ``week`` (Monday to Sunday, clipped to the range)."""

    DAY = "day"
    WEEK = "week"


class Totals(StrEnum):
    """Which series a row sums: ``store`` (over its items), ``item`` (over its stores) or ``all``."""

    STORE = "store"
    ITEM = "item"
    ALL = "all"


@dataclass(frozen=True)
class Buckets:
    """The buckets of a range of consecutive days: each day's bucket, each bucket's first day and length."""

    of_day: np.ndarray  # bucket index of each day of the range (int64)
    first_days: np.ndarray  # first day of each bucket, days since 1970-01-01 (int64)
    lengths: np.ndarray  # days in each bucket (int64)

    def __len__(self) -> int:
        return len(self.first_days)

    @property
    def last_days(self) -> np.ndarray:
        """Last day of each bucket, days since 1970-01-01."""
        last: np.ndarray = self.first_days + self.lengths - 1
        return last


def date_buckets(first_day: int, days: int, granularity: Granularity) -> Buckets:
    """The buckets of ``days`` days from ``first_day`` (days since 1970-01-01): one per day, or ISO weeks."""
    offsets = np.arange(days, dtype=np.int64)
    if granularity is Granularity.DAY:
        return Buckets(offsets, first_day + offsets, np.ones(days, dtype=np.int64))
    of_day = (offsets + (first_day + _EPOCH_WEEKDAY) % 7) // 7
    lengths = np.bincount(of_day).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Buckets(of_day, first_day + starts, lengths)


@dataclass(frozen=True)
class Groups:
    """Rows of an answer by series: each group's store and item (-1 where it sums them), each series' group."""

    stores: np.ndarray  # int64; -1 in a total over stores
    items: np.ndarray  # int64; -1 in a total over items
    of_series: np.ndarray | None  # the group of each series; None: one group per series, in order

    def __len__(self) -> int:
        return len(self.stores)


def series_groups(stores: np.ndarray, items: np.ndarray, totals: Totals | None) -> Groups:
    """Groups of series (``stores[i]``, ``items[i]``) for ``totals``: per series (None), or totals sorted by key."""
    stores, items = np.asarray(stores, dtype=np.int64), np.asarray(items, dtype=np.int64)
    if totals is None:
        return Groups(stores, items, None)
    if totals is Totals.ALL:
        return Groups(np.array([-1]), np.array([-1]), np.zeros(len(stores), dtype=np.int64))
    keys = stores if totals is Totals.STORE else items
    unique, of_series = np.unique(keys, return_inverse=True)
    minus = np.full(len(unique), -1, dtype=np.int64)
    if totals is Totals.STORE:
        return Groups(unique.astype(np.int64), minus, of_series.astype(np.int64))
    return Groups(minus, unique.astype(np.int64), of_series.astype(np.int64))


def aggregate(daily: np.ndarray, groups: Groups, buckets: Buckets) -> np.ndarray:
    """``daily`` (series x days) summed into (groups x buckets), each sum in the order the module states."""
    per_group = daily
    if groups.of_series is not None:
        per_group = np.zeros((len(groups), daily.shape[1]), dtype=np.float64)
        np.add.at(per_group, groups.of_series, daily)  # unbuffered, in row order: left to right per group
    if len(buckets) == daily.shape[1]:
        return per_group
    out = np.zeros((per_group.shape[0], len(buckets)), dtype=np.float64)
    np.add.at(out.T, buckets.of_day, per_group.T)  # row by row of the transposes: in day order
    return out
