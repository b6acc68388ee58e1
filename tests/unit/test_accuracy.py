"""The arithmetic of realised accuracy (forecast/accuracy.py): Kaggle's SMAPE, the seasonal-naive baseline,
complete weeks only."""

from __future__ import annotations

import numpy as np

from forecast.accuracy import SEASON_DAYS, Grid, compare, score, smape_terms
from forecast.actuals import Actuals
from forecast.buckets import Granularity

MONDAY = 17532  # 2018-01-01


def test_smape_is_kaggles_with_zero_where_both_are_zero() -> None:
    terms = smape_terms(np.array([0.0, 10.0, 0.0, 5.0]), np.array([0.0, 30.0, 4.0, 5.0]))
    assert terms.tolist() == [0.0, 100.0, 200.0, 0.0]
    scores = score(np.array([12.0, 8.0]), np.array([10.0, 10.0]))
    assert (scores.rows, scores.mae, scores.bias) == (2, 2.0, 0.0)


def actuals(rows: list[tuple[int, int, int, int]]) -> Actuals:
    table = np.array(rows, dtype=np.int64)
    return Actuals(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def test_the_baseline_is_the_same_series_364_days_earlier_where_stored() -> None:
    stored = actuals([(MONDAY, 1, 1, 10), (MONDAY + 1, 1, 1, 12), (MONDAY - SEASON_DAYS, 1, 1, 7),
                      (MONDAY - SEASON_DAYS, 2, 1, 99), (MONDAY, 2, 2, 5)])  # fmt: skip
    grid = Grid.of(stored, MONDAY, 2)
    assert (grid.stores.tolist(), grid.items.tolist()) == ([1, 2], [1, 2])  # series with an actual in the window
    compared = compare(grid, np.array([[11.0, 12.0], [4.0, np.nan]]), Granularity.DAY)
    assert compared.actual.tolist() == [10.0, 12.0, 5.0]
    assert compared.forecast.tolist() == [11.0, 12.0, 4.0]
    assert np.isnan(compared.baseline[1:]).all()
    assert compared.baseline[0] == 7.0
    assert compared.baseline_scores().rows == 1


def test_a_week_counts_only_when_every_day_has_an_actual() -> None:
    full = [(MONDAY + d, 1, 1, 10) for d in range(14)]
    stored = actuals([row for row in full if row[0] != MONDAY + 9])  # the second week misses a day
    grid = Grid.of(stored, MONDAY, 14)
    compared = compare(grid, np.full((1, 14), 11.0), Granularity.WEEK)
    assert (compared.actual.tolist(), compared.forecast.tolist(), compared.lengths.tolist()) == ([70.0], [77.0], [7])
    assert compared.last_days.tolist() == [MONDAY + 6]
