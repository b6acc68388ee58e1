"""The loaded model: LightGBM trees plus the trend they were trained around.

This is the only module that imports LightGBM.  Import it only in a process
that will predict (a mule, the training CLI, a test), and only after any fork:
LightGBM's OpenMP runtime hangs in a child forked from a parent that ran an
OpenMP region, and merely loading a model runs one.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from forecast.features import Rows, build_features
from forecast.trend import Trend


class Predictor:
    """Predict daily unit sales for rows of (date, store, item).

    Not thread-safe (one per process, as in a mule).  ``predict`` runs
    LightGBM on one thread: with several processes per machine, OpenMP threads
    only add contention, and one thread keeps a forked process safe.
    """

    def __init__(self, booster: lgb.Booster, trend: Trend, version: str) -> None:
        self.booster = booster
        self.trend = trend
        self.version = version

    @classmethod
    def from_model_text(cls, model_text: str, trend: Trend, version: str) -> Predictor:
        """Build a predictor from the text of a LightGBM model file."""
        return cls(lgb.Booster(model_str=model_text), trend, version)

    def predict(self, rows: Rows) -> np.ndarray:
        """Return forecast unit sales (float64, >= 0), one per row, in order."""
        if len(rows) == 0:
            return np.empty(0, dtype=np.float64)
        log_residual = self.booster.predict(build_features(rows), num_threads=1)
        sales: np.ndarray = np.maximum(np.expm1(log_residual + self.trend.offset(rows.days)), 0.0)
        return sales
