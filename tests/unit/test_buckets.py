"""Days into ISO weeks and series into totals, summed in the order a client would sum them."""

from __future__ import annotations

import datetime as dt

import numpy as np

from forecast.buckets import Granularity, Totals, aggregate, date_buckets, series_groups

EPOCH = dt.date(1970, 1, 1)


def day(text: str) -> int:
    return (dt.date.fromisoformat(text) - EPOCH).days


def test_weeks_are_iso_weeks_clipped_to_the_range() -> None:
    buckets = date_buckets(day("2018-01-03"), 14, Granularity.WEEK)  # a Wednesday, to Tuesday 2018-01-16
    assert [str(EPOCH + dt.timedelta(days=int(d))) for d in buckets.first_days] == ["2018-01-03", "2018-01-08",
                                                                                   "2018-01-15"]  # fmt: skip
    assert buckets.lengths.tolist() == [5, 7, 2]
    assert [str(EPOCH + dt.timedelta(days=int(d))) for d in buckets.last_days] == ["2018-01-07", "2018-01-14",
                                                                                  "2018-01-16"]  # fmt: skip


def test_days_are_their_own_buckets() -> None:
    buckets = date_buckets(day("2018-01-03"), 3, Granularity.DAY)
    assert buckets.lengths.tolist() == [1, 1, 1]
    assert buckets.first_days.tolist() == [day("2018-01-03"), day("2018-01-04"), day("2018-01-05")]


def test_sums_are_a_clients_left_to_right_sums_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    daily = rng.uniform(0, 100, (4, 10)) * np.array([1, 1e-9, 1e9, 3.3])[:, None]  # rounding-sensitive magnitudes
    stores, items = np.array([2, 1, 2, 1]), np.array([5, 5, 6, 6])
    buckets = date_buckets(day("2018-01-05"), 10, Granularity.WEEK)  # Friday: weeks of 3 and 7 days
    groups = series_groups(stores, items, Totals.STORE)
    assert groups.stores.tolist() == [1, 2]
    assert groups.items.tolist() == [-1, -1]
    got = aggregate(daily, groups, buckets)
    for g, store in enumerate([1, 2]):
        members = [n for n in range(4) if stores[n] == store]
        daily_total = [sum(float(daily[n, d]) for n in members) for d in range(10)]
        assert got[g].tolist() == [sum(daily_total[:3]), sum(daily_total[3:])]


def test_totals_group_series_by_item_or_all() -> None:
    daily = np.arange(8.0).reshape(4, 2)
    stores, items = np.array([1, 2, 1, 2]), np.array([7, 7, 8, 8])
    by_item = series_groups(stores, items, Totals.ITEM)
    assert by_item.items.tolist() == [7, 8]
    assert by_item.stores.tolist() == [-1, -1]
    assert aggregate(daily, by_item, date_buckets(0, 2, Granularity.DAY)).tolist() == [[2.0, 4.0], [10.0, 12.0]]
    everything = series_groups(stores, items, Totals.ALL)
    assert aggregate(daily, everything, date_buckets(0, 2, Granularity.DAY)).tolist() == [[12.0, 16.0]]


def test_per_series_daily_answers_are_the_forecasts_themselves() -> None:
    daily = np.array([[0.1, 0.2], [0.3, 0.4]])
    groups = series_groups(np.array([3, 3]), np.array([1, 2]), None)
    assert groups.of_series is None
    assert aggregate(daily, groups, date_buckets(0, 2, Granularity.DAY)) is daily
