"""What every request leaves behind: its metrics, and the fields of its access line.

Runs in the web workers as one Flask ``after_request`` hook, which Flask also
runs for answers made by the error handlers.  The access line itself is
written by nginx (``nginx.conf``: buffered, and it also covers what nginx
answers itself); the app hands nginx what only it knows in response headers
nginx logs and hides: ``X-Forecast-Rows``, ``X-Forecast-Error`` (the error
code) and ``X-Forecast-Job`` (a failed job's id, also on the mule's log line).
``X-Model-Version`` stays visible to clients.

The request id comes from nginx (``X-Request-ID``: the client's when sane,
else one nginx made up); :func:`log_context` puts it on the app's own log
lines.  Views add ``rows`` and ``model_version`` to :data:`flask.g`, the
error handlers ``error`` and ``job``.  This runs on every request: it reads
``g``, ``request`` and the WSGI environ once each (every ``LocalProxy``
lookup costs about a microsecond).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from flask import Flask, Response, g, has_request_context, request

from app import metrics
from app.errors import Unavailable

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# (response header, flask.g key): what the access line needs from the app.
_REPORTED = (
    ("X-Model-Version", "model_version"),
    ("X-Forecast-Rows", "rows"),
    ("X-Forecast-Error", "error"),
    ("X-Forecast-Job", "job"),
)


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


def reported_headers(found: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The response headers that carry ``found``'s fields (``flask.g`` keys) to the access line."""
    return [(header, str(found[key])) for header, key in _REPORTED if found.get(key) is not None]


def init_app(app: Flask, metrics_enabled: bool) -> RequestMetrics | None:
    """Register the hook and return its recorder (None: ``metrics_enabled`` False, to measure their cost)."""
    recorder = RequestMetrics() if metrics_enabled else None

    @app.after_request
    def _report(response: Response) -> Response:
        found = vars(g._get_current_object())
        headers = response.headers
        for header, value in reported_headers(found):
            headers[header] = value
        if recorder is not None:
            req = request._get_current_object()  # type: ignore[attr-defined]
            endpoint = req.url_rule.rule if req.url_rule is not None else "unmatched"
            seconds = time.time() - request_start(req.environ)
            # Before the answer leaves (not in call_on_close): a client that has its answer and then
            # scrapes must find its request counted; CI caught the race when this ran after sending.
            recorder.record(endpoint, req.method, response.status_code, seconds, found.get("error"))
        return response

    return recorder


class RequestMetrics:
    """The per-request metrics of one worker process, with their label children cached.

    ``labels()`` takes a lock and validates on each call; a request's route,
    method and status come from a small set, so each child is looked up once.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        for reason in Unavailable.REASONS:  # every series exists from the start, at 0: rates and alerts work
            metrics.REJECTED.labels(reason)

    def record(self, endpoint: str, method: str, status: int, seconds: float, error: str | None) -> None:
        children = self._children.get((endpoint, method, status))
        if children is None:
            children = (
                metrics.HTTP_REQUESTS.labels(endpoint, method, str(status)),
                metrics.HTTP_LATENCY.labels(endpoint),
            )
            self._children[(endpoint, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if status == 503 and error:
            metrics.REJECTED.labels(error).inc()
        elif status == 504:
            metrics.TIMED_OUT.inc()
