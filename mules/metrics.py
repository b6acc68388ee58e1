"""The mules' Prometheus metrics: starts, batches, predict time, rows and predicted sales.

Recorded in each mule process into the multiprocess directory the web
workers' ``GET /metrics`` reads (see :mod:`app.exposition`).  Counters of a
dead mule stay in its file, so ``forecast_mule_starts_total`` counts respawns
and the row counters never go backwards.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Histogram

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


SMALL_BATCH = 4


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

    def scored(self, sales: np.ndarray, seconds: float) -> None:
        if self.enabled:
            BATCH_ROWS.observe(len(sales))
            PREDICT_SECONDS.observe(seconds)
            self.rows.inc(len(sales))
            observe_many(SALES, sales)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v``, in one pass (a 45,000-row batch is one call).

    Uses the histogram's bucket and sum values as ``observe`` does (prometheus_client
    0.26, pinned; a unit test compares the two); NaN goes to the sum only, as there.
    A few values take ``observe`` itself: numpy's fixed cost (~14 us) is worth ~5 of them.
    """
    if len(values) <= SMALL_BATCH:
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds)  # non-cumulative buckets, the last is +Inf
    index = np.searchsorted(bounds, values, side="left")  # first bound >= value: observe()'s bucket
    counts = np.bincount(index[index < len(bounds)], minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(values)))
