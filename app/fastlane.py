"""The hot request, one JSON row POSTed to ``/predict``, answered without Flask's request machinery.

Runs in the web workers, as WSGI middleware around the Flask app (``app.wsgi_app``,
Flask's documented way to wrap it).  For a single-row ``/predict`` Flask's own work
(request context, URL matching, hooks, signals, the ``Response`` object) costs far more
than the request itself: measured in-process on the 2-core VM, 163 µs per request through
Flask against 19 µs here, with the mules stood in for (README "Performance").  A
production load is nearly all such requests, so this answers exactly them, with the
view's own pieces: the same schema, domain check, service, answer shape, error shape,
access-line headers and request metrics.

Everything else goes to Flask unchanged: other paths and methods, batches, the legacy
query-string form, any body that is not ``application/json``, and every request that
fails before its rows reach the mules (malformed JSON, an invalid field, an unknown
store, not ready, too old), whose answer Flask makes as it always did.  Errors raised
once the rows were handed to the mules (503 at capacity or after a mule failure, 504)
are answered here, in the same shape: handing those over would submit the rows twice.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic_core import from_json

from app.errors import ApiError, answer_for, internal_error_body
from app.json import json_line
from app.schemas import ROW, PredictRow
from app.service import ForecastService
from app.telemetry import FAST_LANE_REQUEST_ID, RequestMetrics, reported_headers, request_start
from app.views import answer

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ENDPOINT = "/predict"  # the route's rule, as Flask's metrics label it
# A row object is under 100 bytes; a larger body is a batch (or nonsense): Flask parses it once.
MAX_ROW_BODY_BYTES = 1024
_REASONS = {200: "OK", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE", 504: "GATEWAY TIMEOUT"}


class FastLane:
    """WSGI middleware: answers single-row JSON ``/predict`` requests itself, hands the rest to ``flask_app``.

    Thread-safe (no state of its own beyond what it is given); never raises to the server.
    """

    def __init__(self, flask_app: WsgiApp, service: ForecastService, recorder: RequestMetrics | None) -> None:
        self.flask_app = flask_app
        self.service = service
        self.recorder = recorder

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not _is_single_json_predict(environ):
            return self.flask_app(environ, start_response)
        started = request_start(environ)
        deadline = started + self.service.settings.deadline_s
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        try:
            row, columns = self._admit(body, deadline)
        except Exception:
            # Nothing was submitted: Flask answers this request from the start, errors and all.
            environ["wsgi.input"] = io.BytesIO(body)
            return self.flask_app(environ, start_response)
        token = FAST_LANE_REQUEST_ID.set(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            return self._predict(row, columns, deadline, started, start_response)
        finally:
            FAST_LANE_REQUEST_ID.reset(token)

    def _admit(self, body: bytes, deadline: float) -> tuple[PredictRow, Any]:
        """The row and its columns; raises (anything) when Flask should answer instead."""
        if time.time() >= deadline:
            raise TimeoutError("too old: Flask answers 503")
        payload = from_json(body)
        if type(payload) is not dict or "instances" in payload:
            raise TypeError("not a single row: Flask answers it")
        row: PredictRow = ROW.validate_python(payload)
        return row, self.service.validate([row], None)

    def _predict(
        self, row: PredictRow, columns: Any, deadline: float, started: float, start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        found: dict[str, Any] = {"rows": 1}
        try:
            prediction = self.service.predict(columns, deadline)
        except ApiError as error:
            found["error"], found["job"] = error.code, getattr(error, "job", None)
            body, headers = answer_for(error)
            return self._respond(error.status, body, headers, found, started, start_response)
        except Exception:
            logger.exception("unhandled error")
            found["error"] = "internal_error"
            return self._respond(500, internal_error_body(), {}, found, started, start_response)
        found["model_version"] = prediction.versions[0]
        return self._respond(200, answer(row, prediction, 0), {}, found, started, start_response)

    def _respond(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str],
        found: dict[str, Any],
        started: float,
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        data = json_line(body)
        if self.recorder is not None:  # before the answer leaves, as Flask's hook does (app/telemetry.py)
            self.recorder.record(ENDPOINT, "POST", status, time.time() - started, found.get("error"))
        start_response(
            f"{status} {_REASONS[status]}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *headers.items(),
                *reported_headers(found),
            ],
        )
        return [data]


def _is_single_json_predict(environ: dict[str, Any]) -> bool:
    """A JSON POST to /predict with a row-sized body and no query string (the legacy form has one)."""
    length = environ.get("CONTENT_LENGTH", "")
    return (
        environ.get("PATH_INFO") == ENDPOINT
        and environ.get("REQUEST_METHOD") == "POST"
        and not environ.get("QUERY_STRING")
        and length.isdigit()
        and 0 < int(length) <= MAX_ROW_BODY_BYTES
        and environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() == "application/json"
    )
