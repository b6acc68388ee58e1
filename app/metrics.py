"""The web workers' Prometheus metrics (definitions only; :mod:`app.exposition` serves them).

Every worker and mule records into ``prometheus_client``'s multiprocess
directory (``PROMETHEUS_MULTIPROC_DIR``, from ``FORECAST_METRICS_DIR``), so a
scrape sees the whole uWSGI tree.  The mules' metrics (batch sizes, predict
time, rows, predicted sales, starts) are defined in :mod:`mules.metrics`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Time from nginx receiving the request to the answer: 0.5 ms .. 10 s.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# registry=None: in multiprocess mode the files are the registry; a scrape builds its own.
HTTP_REQUESTS = Counter(
    "forecast_http_requests",
    "HTTP requests answered by the app, by route, method and status.",
    ["endpoint", "method", "status"],
    registry=None,
)
HTTP_LATENCY = Histogram(
    "forecast_http_request_duration_seconds",
    "Time from nginx receiving a request to the app answering it, by route.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)
JOBS_IN_FLIGHT = Gauge(
    "forecast_jobs_in_flight",
    "Jobs submitted to the mules and not yet answered, summed over live web workers (sampled every 0.25 s).",
    multiprocess_mode="livesum",
    registry=None,
)
REJECTED = Counter(
    "forecast_rejected_requests",
    "Requests answered 503 by the app, by reason (overloaded, not_ready, prediction_failed, ...).",
    ["reason"],
    registry=None,
)
TIMED_OUT = Counter(
    "forecast_timed_out_requests", "Requests answered 504: no prediction within the deadline.", registry=None
)
MODEL_REQUESTS = Counter(
    "forecast_model_requests",
    "Prediction requests answered, by model, the version(s) that scored them ('v1,v2': canary split) and status.",
    ["model", "version", "status"],
    registry=None,
)
MODEL_LATENCY = Histogram(
    "forecast_model_request_duration_seconds",
    "Time from nginx receiving a prediction request to its answer, by model and version(s).",
    ["model", "version"],
    buckets=LATENCY_BUCKETS_S,
    registry=None,
)
HORIZON_REQUESTS = Counter(
    "forecast_horizon_requests",
    "/forecast requests answered 200, by model, the version(s) that scored them and granularity (day, week).",
    ["model", "version", "granularity"],
    registry=None,
)
JOBS_REQUEUED = Counter(
    "forecast_jobs_requeued",
    "Jobs pushed again because the mule holding them died.",
    registry=None,
)

# Realised accuracy (app/accuracy_gauges.py): written by one web worker every FORECAST_ACCURACY_REFRESH_S, NaN for
# a window without actuals or a version no longer served; "livemax": a dead worker's values go with it.
_ACCURACY_LABELS = ["model", "version", "alias", "window"]
REALISED_SMAPE = Gauge(
    "forecast_realised_smape",
    "SMAPE (percent, Kaggle's) of a served version's forecasts against the stored actuals of the last 7 or 28 days "
    "with actuals.",
    _ACCURACY_LABELS,
    multiprocess_mode="livemax",
    registry=None,
)
REALISED_MAE = Gauge("forecast_realised_mae", "Mean absolute error (units) over the window.", _ACCURACY_LABELS,
                     multiprocess_mode="livemax", registry=None)  # fmt: skip
REALISED_BIAS = Gauge("forecast_realised_bias", "Mean of forecast - actual (units) over the window.",
                      _ACCURACY_LABELS, multiprocess_mode="livemax", registry=None)  # fmt: skip
REALISED_ROWS = Gauge("forecast_realised_rows", "Actuals the window's scores are computed on.", _ACCURACY_LABELS,
                      multiprocess_mode="livemax", registry=None)  # fmt: skip
REALISED_COVERAGE = Gauge(
    "forecast_realised_coverage",
    "Share of the window's actuals inside the version's band at each level (NaN: the version has no bands).",
    [*_ACCURACY_LABELS, "level"],
    multiprocess_mode="livemax",
    registry=None,
)
BASELINE_SMAPE = Gauge(
    "forecast_realised_baseline_smape",
    "SMAPE of the seasonal-naive forecast (same store, item and weekday 364 days earlier) over the same window.",
    _ACCURACY_LABELS,
    multiprocess_mode="livemax",
    registry=None,
)
HOLDOUT_SMAPE = Gauge("forecast_holdout_smape", "A served version's SMAPE on its training holdout.",
                      ["model", "version"], multiprocess_mode="livemax", registry=None)  # fmt: skip
ACCURACY_ALERT_FACTOR = Gauge(
    "forecast_accuracy_alert_factor",
    "FORECAST_ACCURACY_ALERT_FACTOR: ForecastAccuracyDegraded fires above the holdout SMAPE times this.",
    multiprocess_mode="livemax",
    registry=None,
)
ACCURACY_REFRESHED = Gauge(
    "forecast_accuracy_refreshed_timestamp_seconds",
    "When the realised-accuracy gauges were last computed (Unix time).",
    multiprocess_mode="livemax",
    registry=None,
)

# Following MLflow (app/mlflow_follow.py): set by the one web worker that follows it.
MLFLOW_SYNC_FAILURES = Counter(
    "forecast_mlflow_sync_failures",
    "Passes of the pod's MLflow follower that could not reach MLflow (down, slow, 5xx); it kept what it had.",
    registry=None,
)
