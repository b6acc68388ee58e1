"""What every request leaves behind: its metrics, and the fields of its access line.

Runs in the web workers as one Flask ``after_request`` hook, which Flask also
runs for answers made by the error handlers; the fast lane (``app/fastlane.py``),
which answers ``/predict`` without Flask, uses the same pieces
(:class:`app.access.Report`, :class:`RequestMetrics`).  The access line itself is
written by nginx (``nginx.conf``: buffered, and it also covers what nginx
answers itself); the views and the error handlers put the answer's
:class:`~app.access.Report` on :data:`flask.g` and this hook turns it into the
headers nginx logs.

The request id comes from nginx (``X-Request-ID``: the client's when sane,
else one nginx made up); :func:`log_context` puts it on the app's own log
lines.  This runs on every request: it reads ``g``, ``request`` and the WSGI
environ once each (every ``LocalProxy`` lookup costs about a microsecond).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import numpy as np
from flask import Flask, Response, g, has_request_context, request

from app import metrics
from app.access import Report
from app.errors import Reason
from serving.histograms import observe_many

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.25  # how far /metrics may lag the requests of other workers

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# The request id of the request the fast lane (app/fastlane.py) is answering in this thread:
# it has no Flask request context to read it from.
FAST_LANE_REQUEST_ID: ContextVar[str | None] = ContextVar("fast_lane_request_id", default=None)


def request_start(environ: dict[str, Any]) -> float:
    """When nginx received this request (``X-Request-Start: t=<epoch seconds>``), else now."""
    try:
        return float(environ.get("HTTP_X_REQUEST_START", "").removeprefix("t="))
    except ValueError:
        return time.time()


def log_context() -> dict[str, Any]:
    """Fields for the app's own log lines: the request id, when logged during a request."""
    if has_request_context():
        supplied = request.environ.get("HTTP_X_REQUEST_ID", "")
    else:
        supplied = FAST_LANE_REQUEST_ID.get()
        if supplied is None:
            return {}
    return {"request_id": supplied if _SANE_REQUEST_ID.match(supplied) else None}


def init_app(app: Flask, recorder: RequestMetrics | None) -> None:
    """Register the hook; with ``recorder`` None no metrics are recorded (to measure their cost)."""

    @app.after_request
    def _report(response: Response) -> Response:
        report: Report = g.get("report") or Report()
        headers = response.headers
        for header, value in report.headers():
            headers[header] = value
        if recorder is not None:
            req = request._get_current_object()  # type: ignore[attr-defined]
            endpoint = req.url_rule.rule if req.url_rule is not None else "unmatched"
            seconds = time.time() - request_start(req.environ)
            # Noted before the answer leaves (not in call_on_close): a scrape answered by this worker
            # flushes it first, and other workers' scrapes see it within FLUSH_INTERVAL_S.
            recorder.record(endpoint, req.method, response.status_code, seconds, report)
        return response


class RequestMetrics:
    """The request metrics of one worker process: kept in memory, written in batches.

    ``record`` runs on every request, in up to ``FORECAST_UWSGI_THREADS`` threads at
    once.  prometheus_client's multiprocess values take one process-wide lock and a
    syscall for every write, and a request made five; with 16 threads contending for
    that lock and the GIL, those writes cost 66 µs per request in a micro-benchmark
    (7 µs in one thread), about a fifth of the throughput at 64 connections.  So
    ``record`` only appends to a deque (atomic under the GIL: no lock), and a daemon
    thread of the worker writes the totals every ``FLUSH_INTERVAL_S``, with the worker's
    jobs in flight (sampled, as a scrape samples any gauge).  The thread is started in
    each worker after uWSGI forks it (``start``).  A scrape flushes the
    worker answering it first; other workers' requests reach ``/metrics`` within
    ``FLUSH_INTERVAL_S`` (Prometheus scrapes every 15 s).
    """

    def __init__(self, jobs_in_flight: Callable[[], int]) -> None:
        self._jobs_in_flight = jobs_in_flight
        self._pending: deque[tuple[str, str, int, float, Report]] = deque()
        self._flush_lock = threading.Lock()
        for reason in Reason:  # every series exists from the start, at 0: rates and alerts work
            metrics.REJECTED.labels(reason.value)

    def record(self, endpoint: str, method: str, status: int, seconds: float, report: Report) -> None:
        """Note one answered request (any worker thread); written by the next flush."""
        self._pending.append((endpoint, method, status, seconds, report))

    def flush(self) -> None:
        """Write the requests noted since the last flush, and the jobs in flight now."""
        with self._flush_lock:
            requests: Counter[tuple[str, str, int]] = Counter()
            latencies: defaultdict[str, list[float]] = defaultdict(list)
            by_model: Counter[tuple[str, str, int]] = Counter()
            model_latencies: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
            rejected: Counter[str] = Counter()
            horizons: Counter[tuple[str, str, str]] = Counter()
            timed_out = 0
            for _ in range(len(self._pending)):  # what was noted before now; later ones wait
                endpoint, method, status, seconds, report = self._pending.popleft()
                requests[endpoint, method, status] += 1
                latencies[endpoint].append(seconds)
                if report.model is not None:  # a prediction: counted by model and version too
                    by_model[report.model, report.model_version or "", status] += 1
                    model_latencies[report.model, report.model_version or ""].append(seconds)
                if report.granularity is not None and status == 200:
                    horizons[report.model or "", report.model_version or "", report.granularity] += 1
                if status == 503 and report.error:
                    rejected[report.error] += 1
                elif status == 504:
                    timed_out += 1
            for (endpoint, method, status), count in requests.items():
                metrics.HTTP_REQUESTS.labels(endpoint, method, str(status)).inc(count)
            for endpoint, values in latencies.items():
                observe_many(metrics.HTTP_LATENCY.labels(endpoint), np.asarray(values))
            for (model, version, status), count in by_model.items():
                metrics.MODEL_REQUESTS.labels(model, version, str(status)).inc(count)
            for (model, version), values in model_latencies.items():
                observe_many(metrics.MODEL_LATENCY.labels(model, version), np.asarray(values))
            for labels, count in horizons.items():
                metrics.HORIZON_REQUESTS.labels(*labels).inc(count)
            for reason, count in rejected.items():
                metrics.REJECTED.labels(reason).inc(count)
            if timed_out:
                metrics.TIMED_OUT.inc(timed_out)
            metrics.JOBS_IN_FLIGHT.set(self._jobs_in_flight())

    def start(self) -> None:
        """Start this process's flusher thread (app/main.py: in each web worker, after uWSGI forks it)."""
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # a metrics bug must not stop the metrics for good, nor the worker
                logger.exception("writing the request metrics failed")
