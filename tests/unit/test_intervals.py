"""The conformal calibration's logic: quantiles, bins, nesting, bands, and refusing a broken one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecast import intervals
from forecast.intervals import LEVEL_GRID, Calibration, Cell, bands, conformal_quantiles, level_index


def test_the_conformal_quantile_is_the_ceil_n_plus_1_level_th_smallest_error() -> None:
    errors = np.arange(1.0, 20.0)  # 19 errors: 1..19
    quantiles = dict(zip(LEVEL_GRID, conformal_quantiles(errors), strict=True))
    assert quantiles[50.0] == 10.0  # ceil(20 * 0.5) = 10
    assert quantiles[80.0] == 16.0  # ceil(20 * 0.8) = 16
    assert quantiles[95.0] == 19.0  # ceil(20 * 0.95) = 19
    assert math.isinf(quantiles[99.0])  # ceil(20 * 0.99) = 20 > 19: too few errors for a band


def test_a_level_rounds_up_to_the_grid_never_down() -> None:
    assert LEVEL_GRID[level_index(80)] == 80.0
    assert LEVEL_GRID[level_index(80.2)] == 81.0
    assert LEVEL_GRID[level_index(99.6)] == 99.8
    with pytest.raises(ValueError, match="above"):
        level_index(99.95)


def test_bands_nest_hold_the_forecast_and_are_never_negative() -> None:
    forecasts = np.array([0.0, 0.5, 30.0, 300.0])
    widths = np.array([[0.2, 0.5], [0.2, 0.5], [0.1, 0.3], [0.05, 0.09]])
    lower, upper = bands(forecasts, widths)
    assert (lower >= 0).all()
    assert (lower[:, 1] <= lower[:, 0]).all()
    assert (lower[:, 0] <= forecasts).all()
    assert (upper[:, 1] >= upper[:, 0]).all()
    assert (upper[:, 0] >= forecasts).all()
    assert upper[2, 0] == pytest.approx(math.expm1(math.log1p(30) + 0.1))


def test_errors_grow_with_horizon_so_do_the_bands() -> None:
    rng = np.random.default_rng(0)
    horizons = rng.integers(1, 367, 20_000)
    forecasts = rng.uniform(5, 50, len(horizons))
    errors = np.abs(rng.normal(0, 0.05 + horizons / 1000))
    cell = Cell.fit(horizons, forecasts, errors)
    assert cell.horizon_edges == intervals.HORIZON_EDGES
    near, far = cell.halfwidths(np.array([3, 300]), np.array([20.0, 20.0]), [level_index(90)])
    assert far[0] > 2 * near[0]


def test_sparse_horizon_bins_merge_and_small_series_get_their_own_band() -> None:
    horizons = np.concatenate([np.full(150, 3), np.full(150, 20), np.full(9_000, 60)])
    rng = np.random.default_rng(1)
    forecasts = np.concatenate([rng.uniform(1, 10, 4_650), rng.uniform(100, 1000, 4_650)])
    errors = np.where(forecasts < 50, 0.5, 0.05) * rng.uniform(0, 1, len(forecasts))
    cell = Cell.fit(horizons, forecasts, errors)
    assert cell.horizon_edges == (28, 366)  # 150 + 150 errors in 1-28; 60 days ahead and beyond: the rest
    small, large = cell.halfwidths(np.array([60, 60]), np.array([5.0, 500.0]), [level_index(95)])
    assert small[0] > 5 * large[0]


def test_a_stored_calibration_reads_back_the_same() -> None:
    rng = np.random.default_rng(2)
    cell = Cell.fit(rng.integers(1, 100, 5_000), rng.uniform(1, 50, 5_000), rng.uniform(0, 1, 5_000))
    calibration = Calibration({"day/series/1": cell}, ("2017-10-01",), {"day/series/1": {"80": 79.5}})
    read = Calibration.from_dict(calibration.to_dict())
    probe = np.array([1, 50, 99]), np.array([2.0, 20.0, 40.0]), [level_index(80), level_index(99.9)]
    assert np.array_equal(read.cells["day/series/1"].halfwidths(*probe), cell.halfwidths(*probe))
    assert read.coverage == calibration.coverage
    assert read.origins == ("2017-10-01",)


def test_a_calibration_whose_bands_would_cross_is_refused() -> None:
    rng = np.random.default_rng(3)
    stored = Calibration({"day/series/1": Cell.fit(rng.integers(1, 9, 500), rng.uniform(1, 5, 500),
                                                    rng.uniform(0, 1, 500))}, (), {}).to_dict()  # fmt: skip
    row = stored["cells"]["day/series/1"]["quantiles"][0][0]
    row[30], row[31] = row[31], row[30] - 0.01  # the 81% half-width below the 80%'s
    with pytest.raises(ValueError, match="shrink as the level grows"):
        Calibration.from_dict(stored)
    row[30] = -1.0
    with pytest.raises(ValueError, match="negative"):
        Calibration.from_dict(stored)
    del stored["cells"]["day/series/1"]["counts"]
    with pytest.raises(ValueError, match="malformed"):
        Calibration.from_dict(stored)
