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
