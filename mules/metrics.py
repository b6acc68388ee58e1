"""The mules' Prometheus metrics: starts, batches, predict time, rows and predicted sales.

Recorded in each mule process into the multiprocess directory the web
workers' ``GET /metrics`` reads (see :mod:`app.exposition`).  Counters of a
dead mule stay in its file, so ``forecast_mule_starts_total`` counts respawns
and the row counters never go backwards.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Histogram

from serving.histograms import observe_many
from serving.metrics import SHADOW_DROPPED

# Rows per LightGBM call: powers of two up to the largest batch.
BATCH_ROW_BUCKETS = tuple(float(2**n) for n in range(17))
PREDICT_BUCKETS_S = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
# Daily unit sales of one item in one store (the Kaggle data: 0 to about 250).
SALES_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 125.0, 150.0, 200.0, 300.0)

STARTS = Counter("forecast_mule_starts", "Mule processes started; more than one per mule means respawns.", ["mule"],
                 registry=None)  # fmt: skip
BATCH_ROWS = Histogram(
    "forecast_mule_batch_rows", "Rows scored in one LightGBM call.", buckets=BATCH_ROW_BUCKETS, registry=None
)
PREDICT_SECONDS = Histogram(
    "forecast_mule_predict_seconds", "Time of one batched predict call.", buckets=PREDICT_BUCKETS_S, registry=None
)
ROWS = Counter("forecast_rows_predicted", "Rows scored by the mules.", ["mule"], registry=None)
EXPIRED = Counter(
    "forecast_mule_jobs_expired", "Jobs dropped unscored: their deadline passed in the queue.", ["mule"], registry=None
)
FAILED = Counter("forecast_mule_predict_failures", "Batched predict calls that raised.", ["mule"], registry=None)
SALES = Histogram(
    "forecast_predicted_sales",
    "Predicted daily unit sales per row (watch it for drift).",
    buckets=SALES_BUCKETS,
    registry=None,
)


MODEL_LOADS = Counter(
    "forecast_mule_model_loads",
    "Model versions a mule loaded (on first use, or in a rollout).",
    ["mule", "model"],
    registry=None,
)
SHADOW_ROWS = Counter(
    "forecast_shadow_rows",
    "Rows a shadow version scored after their answer was sent.",
    ["model", "version"],
    registry=None,
)
# |shadow - production| / max(production, 1): 0 means the same forecast; 0.1 a tenth apart.
RELATIVE_DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SHADOW_DIFFERENCE = Histogram(
    "forecast_shadow_relative_difference",
    "Per row, how far the shadow version's forecast is from production's: |shadow - production| / max(production, 1).",
    ["model", "production", "shadow"],
    buckets=RELATIVE_DIFFERENCE_BUCKETS,
    registry=None,
)


class MuleMetrics:
    """One mule's recorder; with ``enabled`` False it records nothing (to measure the cost)."""

    def __init__(self, mule_id: int, enabled: bool) -> None:
        self.mule = str(mule_id)
        self.enabled = enabled
        # this mule's children, looked up once; every series exists from the start, at 0
        self.rows, self.expired_jobs, self.failures = (c.labels(self.mule) for c in (ROWS, EXPIRED, FAILED))

    def started(self) -> None:
        if self.enabled:
            STARTS.labels(self.mule).inc()

    def expired(self) -> None:
        if self.enabled:
            self.expired_jobs.inc()

    def failed(self) -> None:
        if self.enabled:
            self.failures.inc()

    def loaded(self, model: str) -> None:
        if self.enabled:
            MODEL_LOADS.labels(self.mule, model).inc()

    def shadow_dropped(self, model: str, reason: str) -> None:
        if self.enabled:
            SHADOW_DROPPED.labels(model, reason).inc()

    def shadow_scored(self, model: str, production: str, shadow: str, expected: np.ndarray, got: np.ndarray) -> None:
        if self.enabled:
            SHADOW_ROWS.labels(model, shadow).inc(len(got))
            difference = np.abs(got - expected) / np.maximum(expected, 1.0)
            observe_many(SHADOW_DIFFERENCE.labels(model, production, shadow), difference)

    def scored(self, sales: np.ndarray, seconds: float) -> None:
        if self.enabled:
            BATCH_ROWS.observe(len(sales))
            PREDICT_SECONDS.observe(seconds)
            self.rows.inc(len(sales))
            observe_many(SALES, sales)
