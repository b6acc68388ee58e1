"""The loaded model: LightGBM's C single-row path gives exactly ``Booster.predict``'s numbers."""

from __future__ import annotations

import numpy as np

from forecast.features import FEATURE_SETS, FEATURE_VERSION, Rows, build_features
from forecast.model import SINGLE_ROW_PATH_BELOW, LightGBMScorer, Predictor
from forecast.train import TrainResult
from forecast.trend import Trend


def predictor(model: TrainResult) -> Predictor:
    trend = Trend.from_dict(model.metadata["trend"])
    return Predictor.from_model_text(model.model_text, trend, "v1", FEATURE_SETS[FEATURE_VERSION])


def random_rows(n: int) -> Rows:
    rng = np.random.default_rng(7)
    days = rng.integers(np.datetime64("2013-01-01").astype(int), np.datetime64("2016-12-31").astype(int), n)
    return Rows(days.astype("datetime64[D]"), rng.integers(1, 4, n), rng.integers(1, 5, n))


def test_the_single_row_path_equals_booster_predict(small_model: TrainResult) -> None:
    """The reference is LightGBM's own batch call, not the path under test."""
    scorer = predictor(small_model).scorer
    assert isinstance(scorer, LightGBMScorer)
    assert scorer._single_row is not None, "this LightGBM exposes the single-row fast path"
    features = build_features(random_rows(2_000))
    fast = scorer._single_row.predict(features)
    assert np.array_equal(fast, scorer.booster.predict(features, num_threads=1))


def test_small_and_large_calls_give_the_same_sales(small_model: TrainResult) -> None:
    """Fewer than SINGLE_ROW_PATH_BELOW rows take the C path, more the batch path: the same numbers."""
    model = predictor(small_model)
    rows = random_rows(4 * SINGLE_ROW_PATH_BELOW)
    batch = model.predict(rows)
    one_by_one = [
        model.predict(Rows(rows.dates[i : i + 1], rows.stores[i : i + 1], rows.items[i : i + 1]))[0]
        for i in range(len(rows))
    ]
    assert np.array_equal(batch, one_by_one)
    assert np.all(batch >= 0)


def test_lightgbm_contributions_add_up_to_its_raw_output(small_model: TrainResult) -> None:
    """One column per feature and the expected value last (``pred_contrib``), summing to what the trees say."""
    scorer = predictor(small_model).scorer
    features = build_features(random_rows(50))
    contributions = scorer.output("contributions", features)
    assert contributions is not None
    assert contributions.shape == (50, features.shape[1] + 1)
    assert np.allclose(contributions.sum(axis=1), scorer.predict(features))
