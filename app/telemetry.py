"""What every request leaves behind: a request id, one access-log line, and its metrics.

Runs in the web workers as Flask ``before_request`` / ``after_request`` hooks,
which Flask also runs for answers made by the error handlers.  A request's id
is the client's ``X-Request-ID`` when it is a sane token, else a new one; it is
returned in ``X-Request-ID`` and is on the request's log line, so a client's
report can be found in the logs.  Views add ``rows`` and ``model_version`` to
:data:`flask.g`, the error handlers ``error`` (the error code) and ``job`` (a
failed job's id, also on the mule's log line).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from app import metrics
from app.errors import Unavailable

logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_start() -> float:
    """When nginx received this request (``X-Request-Start: t=<epoch seconds>``), else now."""
    header = request.headers.get("X-Request-Start", "")
    try:
        return float(header.removeprefix("t="))
    except ValueError:
        return time.time()


def init_app(app: Flask, metrics_enabled: bool) -> None:
    """Register the hooks; ``metrics_enabled`` False records no metrics (to measure their cost)."""
    if metrics_enabled:
        for reason in Unavailable.REASONS:  # every series exists from the start, at 0: rates and alerts work
            metrics.REJECTED.labels(reason)

    @app.before_request
    def _begin() -> None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = supplied if _SANE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        g.started = request_start()

    @app.after_request
    def _end(response: Response) -> Response:
        seconds = time.time() - g.started
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        response.headers[REQUEST_ID_HEADER] = g.request_id
        if metrics_enabled:
            _record(endpoint, response.status_code, seconds)
        logger.info(
            "request",
            extra={
                "request_id": g.request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "model_version": g.get("model_version"),
                "rows": g.get("rows"),
                "error": g.get("error"),
                "job": g.get("job"),
            },
        )
        return response


def _record(endpoint: str, status: int, seconds: float) -> None:
    metrics.HTTP_REQUESTS.labels(endpoint, request.method, str(status)).inc()
    metrics.HTTP_LATENCY.labels(endpoint).observe(seconds)
    if status == 503 and g.get("error"):
        metrics.REJECTED.labels(g.error).inc()
    elif status == 504:
        metrics.TIMED_OUT.inc()
    if g.get("rows"):
        metrics.REQUEST_ROWS.observe(g.rows)
