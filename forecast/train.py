"""Train a model, evaluate it on a time-based holdout, and describe it.

The holdout is the last three calendar months of the data, after the training
range, as Kaggle's test period follows its training data.  The model is
compared with a seasonal-naive baseline (same store and item, same weekday,
52 weeks earlier).  The version that is registered is then refitted on all the
data with the same settings, so it forecasts from the most recent level.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np

from forecast.accuracy import SEASON_DAYS, smape_terms
from forecast.backtest import DEFAULT_ORIGINS, calibrate
from forecast.data import SalesData
from forecast.features import CATEGORICAL_FEATURES, FEATURE_NAMES, Rows, build_features
from forecast.model import LightGBMScorer, Predictor
from forecast.sources import Candidate
from forecast.trend import fit_trend

HOLDOUT_MONTHS = 3
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "regression",  # L2 on log1p(sales): relative error, as SMAPE
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "cat_smooth": 1.0,
    "verbosity": -1,
    "seed": 0,
    "deterministic": True,
}
DEFAULT_ROUNDS = 200


@dataclass
class TrainResult:
    """What training produced: the model to register and its description."""

    predictor: Predictor
    model_text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def candidate(self) -> Candidate:
        """This model as a new version of our feature set (:mod:`forecast.sources`): every training run is one."""
        return Candidate(self.model_text, self.metadata)


def fit(data: SalesData, rounds: int = DEFAULT_ROUNDS, threads: int = 0) -> Predictor:
    """Fit trend and trees on ``data``; ``threads=0`` lets LightGBM use every core."""
    log_sales = np.log1p(data.sales.astype(np.float64))
    trend = fit_trend(data.rows.days, log_sales)
    target = log_sales - trend.offset(data.rows.days)
    dataset = lgb.Dataset(
        build_features(data.rows),
        label=target,
        feature_name=list(FEATURE_NAMES),
        categorical_feature=list(CATEGORICAL_FEATURES),
        free_raw_data=True,
    )
    booster = lgb.train({**DEFAULT_PARAMS, "num_threads": threads}, dataset, num_boost_round=rounds)
    return Predictor(LightGBMScorer(booster), trend, version="unregistered")


def holdout_split(data: SalesData, months: int = HOLDOUT_MONTHS) -> tuple[SalesData, SalesData]:
    """Split into (train, holdout); the holdout is the last ``months`` calendar months."""
    last_month = data.rows.dates.max().astype("datetime64[M]")
    start = (last_month - (months - 1)).astype("datetime64[D]")
    in_holdout = data.rows.dates >= start
    return data.select(~in_holdout), data.select(in_holdout)


def seasonal_naive(history: SalesData, target: SalesData) -> np.ndarray:
    """Sales of the same store and item 52 weeks before each target row (NaN if unknown)."""

    def keys(rows: Rows, shift: int) -> np.ndarray:
        key: np.ndarray = (rows.stores * 1000 + rows.items) * 1_000_000 + rows.days - shift
        return key

    history_keys = keys(history.rows, 0)
    order = np.argsort(history_keys)
    sorted_keys = history_keys[order]
    wanted = keys(target.rows, SEASON_DAYS)
    position = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
    found = sorted_keys[position] == wanted
    lagged: np.ndarray = np.where(found, history.sales[order][position], np.nan)
    return lagged


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent, 0 where both are 0 (Kaggle's definition: :func:`forecast.accuracy.smape_terms`)."""
    return float(smape_terms(forecast, actual).mean())


def scores(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    return {"smape": round(smape(actual, forecast), 4), "mae": round(float(np.abs(actual - forecast).mean()), 4)}


RECENT_DAYS = 56  # the training data's last days a version keeps: what the planner page draws before any actuals


def recent_sales(data: SalesData, through: str) -> dict[str, Any]:
    """The last :data:`RECENT_DAYS` days of ``data`` through ``through`` (a date), per series: ``{"first_date",
    "last_date", "series": [[store, item, [units sold each day, null where the data has no row]], ...]}``."""
    last = np.datetime64(through, "D")
    first = last - (RECENT_DAYS - 1)
    rows = data.rows
    inside = (rows.dates >= first) & (rows.dates <= last)
    stores, items = rows.stores[inside], rows.items[inside]
    offsets, sales = (rows.dates[inside] - first).astype(np.int64), data.sales[inside]
    found: dict[tuple[int, int], list[int | None]] = {}
    for store, item, offset, sold in zip(
        stores.tolist(), items.tolist(), offsets.tolist(), sales.tolist(), strict=True
    ):
        found.setdefault((store, item), [None] * RECENT_DAYS)[offset] = sold
    series = [[store, item, found[store, item]] for store, item in sorted(found)]
    return {"first_date": str(first), "last_date": str(last), "series": series}


def train(
    data: SalesData,
    rounds: int = DEFAULT_ROUNDS,
    refit: bool = True,
    log: Any = print,
    threads: int = 0,
    backtest_origins: int = DEFAULT_ORIGINS,
) -> TrainResult:
    """Evaluate on the holdout, calibrate the intervals on a backtest of ``backtest_origins`` cutoffs
    (:mod:`forecast.backtest`; 0: none, the version answers without bands), then (if ``refit``) refit on
    everything (``threads``: as :func:`fit`).

    Returns the model to register with its metadata (minus the fields the
    registry adds: version, checksum, feature names and version).
    """
    started = time.perf_counter()
    train_part, holdout = holdout_split(data)
    log(f"training on {len(train_part):,} rows, holdout {len(holdout):,} rows")
    evaluated = fit(train_part, rounds, threads)
    actual = holdout.sales.astype(np.float64)
    baseline = seasonal_naive(train_part, holdout)
    known = ~np.isnan(baseline)
    metrics = {
        "holdout": {
            "first_date": str(holdout.rows.dates.min()),
            "last_date": str(holdout.rows.dates.max()),
            "rows": len(holdout),
            "model": scores(actual, evaluated.predict(holdout.rows)),
            "baseline": scores(actual[known], baseline[known]),
            "baseline_name": f"seasonal naive (same store, item and weekday {SEASON_DAYS} days earlier)",
            "baseline_rows": int(known.sum()),
        }
    }
    calibration = calibrate(data, lambda history: fit(history, rounds, threads), backtest_origins, log)
    final = fit(data, rounds, threads) if refit else evaluated
    assert final.booster is not None  # fit() trains LightGBM's trees
    model_text = final.booster.model_to_string()
    metadata: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lightgbm_version": importlib.metadata.version("lightgbm"),
        "data": {
            "fingerprint": data.fingerprint,
            "rows": len(data),
            "first_date": str(data.rows.dates.min()),
            "last_date": str(data.rows.dates.max()),
            "trained_through": str((data if refit else train_part).rows.dates.max()),
        },
        "domain": {
            "stores": sorted(int(s) for s in np.unique(data.rows.stores)),
            "items": sorted(int(i) for i in np.unique(data.rows.items)),
        },
        "trend": final.trend.to_dict() if final.trend is not None else None,  # fit() always sets one
        "training": {"params": DEFAULT_PARAMS, "rounds": rounds, "refit_on_all_data": refit},
        "metrics": metrics,
        "intervals": calibration.to_dict() if calibration is not None else None,
    }
    metadata["recent"] = recent_sales(data, metadata["data"]["trained_through"])
    metadata["training"]["seconds"] = round(time.perf_counter() - started, 1)
    return TrainResult(final, model_text, metadata)
