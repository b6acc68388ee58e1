import numpy as np
import pytest

from forecast.data import SalesData
from forecast.features import Rows
from forecast.registry import Registry
from forecast.train import TrainResult, holdout_split, seasonal_naive, smape


def test_smape_matches_kaggles_definition() -> None:
    assert smape(np.array([0.0, 0.0]), np.array([0.0, 0.0])) == 0.0
    assert smape(np.array([100.0]), np.array([100.0])) == 0.0
    assert smape(np.array([0.0]), np.array([5.0])) == pytest.approx(200.0)
    assert smape(np.array([100.0]), np.array([50.0])) == pytest.approx(100 * 50 / 75)


def test_holdout_is_the_last_three_months(small_data: SalesData) -> None:
    train_part, holdout = holdout_split(small_data)
    assert holdout.rows.dates.min() == np.datetime64("2014-10-01")
    assert holdout.rows.dates.max() == np.datetime64("2014-12-31")
    assert train_part.rows.dates.max() == np.datetime64("2014-09-30")
    assert len(train_part) + len(holdout) == len(small_data)


def test_seasonal_naive_looks_up_52_weeks_back(small_data: SalesData) -> None:
    target = Rows.from_columns(["2014-06-30", "2013-01-05"], [2, 2], [3, 3])
    lagged = seasonal_naive(small_data, SalesData(target, np.zeros(2, dtype=np.int64), ""))
    mask = (small_data.rows.dates == np.datetime64("2013-07-01")) & (small_data.rows.stores == 2)
    mask &= small_data.rows.items == 3
    assert lagged[0] == small_data.sales[mask][0]
    assert np.isnan(lagged[1])  # before the history starts


def test_small_training_run_beats_the_baseline(small_model: TrainResult) -> None:
    holdout = small_model.metadata["metrics"]["holdout"]
    assert holdout["rows"] == 3 * 4 * 92
    assert holdout["model"]["smape"] < holdout["baseline"]["smape"]
    assert small_model.metadata["domain"] == {"stores": [1, 2, 3], "items": [1, 2, 3, 4]}


def test_registered_version_predicts_like_the_in_memory_model(
    small_model: TrainResult, registry: Registry, small_data: SalesData
) -> None:
    loaded = registry.load("production")
    assert loaded.version == "v1"
    rows = Rows.from_columns(np.arange("2015-01-01", "2015-04-01", dtype="datetime64[D]"), [2] * 90, [3] * 90)
    assert np.array_equal(loaded.predict(rows), small_model.predictor.predict(rows))
    assert np.array_equal(loaded.predict(small_data.rows), small_model.predictor.predict(small_data.rows))


def test_forecast_follows_the_trend_beyond_the_training_range(small_model: TrainResult) -> None:
    """Trees alone would forecast next year at this year's level; ours grows."""
    predictor = small_model.predictor
    this_year = Rows.from_columns(np.arange("2014-01-01", "2015-01-01", dtype="datetime64[D]"), [1] * 365, [1] * 365)
    next_year = Rows(this_year.dates + 365, this_year.stores, this_year.items)
    assert predictor.predict(next_year).mean() > 1.02 * predictor.predict(this_year).mean()
