"""The hot request, one row POSTed to ``/predict``, answered without Flask's request machinery.

Runs in the web workers, as WSGI middleware around the Flask app (``app.wsgi_app``,
Flask's documented way to wrap it).  For a single-row ``/predict`` Flask's own work
(request context, URL matching, hooks, signals, the ``Response`` object) costs far more
than the request itself: measured in-process on the 2-core VM, 163 µs per request through
Flask against 19 µs here, with the mules stood in for (README "Performance").  A
production load is nearly all such requests, so this answers exactly them (a JSON row
object, or the legacy body-less POST with the row in the query string), with the view's
own pieces: the same schemas, domain check, service, answer shapes, error shape,
access-line headers and request metrics.

Everything else goes to Flask unchanged: other paths and methods, batches, any body that
is not ``application/json`` or comes with a query string, and every request that
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
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from pydantic_core import from_json

from app.errors import INTERNAL_ERROR, ApiError, answer_for, internal_error_body
from app.json import json_line
from app.schemas import QUERY_ROW, ROW, Columns, PredictRow
from app.service import ForecastService
from app.telemetry import FAST_LANE_REQUEST_ID, RequestMetrics, reported_headers, request_start
from app.views import answer

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ENDPOINT = "/predict"  # the route's rule, as Flask's metrics label it
JSON_BODY, QUERY = "json body", "query string"  # the two hot forms (hot_form)
# A row object is under 100 bytes; a larger body is a batch (or nonsense): Flask parses it once.
MAX_ROW_BODY_BYTES = 1024


class FastLane:
    """WSGI middleware: answers single-row ``/predict`` requests itself, hands the rest to ``flask_app``.

    Thread-safe (no state of its own beyond what it is given); never raises to the server.
    """

    def __init__(self, flask_app: WsgiApp, service: ForecastService, recorder: RequestMetrics | None) -> None:
        self.flask_app = flask_app
        self.service = service
        self.recorder = recorder

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        form = hot_form(environ)
        if form is None:
            return self.flask_app(environ, start_response)
        started = request_start(environ)
        deadline = started + self.service.settings.deadline_s
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])) if form == JSON_BODY else b""
        try:
            row, columns = self._admit(form, body, environ["QUERY_STRING"], deadline)
        except Exception:
            # Nothing was submitted: Flask answers this request from the start, errors and all.
            environ["wsgi.input"] = io.BytesIO(body)
            return self.flask_app(environ, start_response)
        token = FAST_LANE_REQUEST_ID.set(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            return self._predict(row, columns, form == QUERY, deadline, started, start_response)
        finally:
            FAST_LANE_REQUEST_ID.reset(token)

    def _admit(self, form: str, body: bytes, query: str, deadline: float) -> tuple[PredictRow, Columns]:
        """The row and its columns; raises (anything) when Flask should answer instead."""
        if time.time() >= deadline:
            raise TimeoutError("too old: Flask answers 503")
        if form == QUERY:
            row: PredictRow = QUERY_ROW.validate_python(query_fields(query))  # type: ignore[assignment]
        else:
            payload = from_json(body)
            if type(payload) is not dict or "instances" in payload:
                raise TypeError("not a single row: Flask answers it")
            row = ROW.validate_python(payload)
        return row, self.service.validate([row], None)

    def _predict(
        self,
        row: PredictRow,
        columns: Columns,
        bare: bool,
        deadline: float,
        started: float,
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        """Score the row; ``bare``: answer a bare number (the legacy query form), else the forecast object."""
        found: dict[str, Any] = {"rows": 1}
        try:
            prediction = self.service.predict(columns, deadline)
        except ApiError as error:
            found["error"], found["job"] = error.code, getattr(error, "job", None)
            body, headers = answer_for(error)
            return self._respond(error.status, body, headers, found, started, start_response)
        except Exception:
            logger.exception("unhandled error")
            found["error"] = INTERNAL_ERROR
            return self._respond(500, internal_error_body(), {}, found, started, start_response)
        found["model_version"] = prediction.versions[0]
        result = prediction.sales[0] if bare else answer(row, prediction, 0)
        return self._respond(200, result, {}, found, started, start_response)

    def _respond(
        self,
        status: int,
        body: Any,
        headers: dict[str, str],
        found: dict[str, Any],
        started: float,
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        data = json_line(body)
        if self.recorder is not None:  # before the answer leaves, as Flask's hook does (app/telemetry.py)
            self.recorder.record(ENDPOINT, "POST", status, time.time() - started, found.get("error"))
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *headers.items(),
                *reported_headers(found),
            ],
        )
        return [data]


def hot_form(environ: dict[str, Any]) -> str | None:
    """Which hot form a request is: ``JSON_BODY``, ``QUERY`` or None (Flask answers it).

    JSON_BODY: a JSON POST to /predict with a row-sized body and no query string.
    QUERY: a body-less POST to /predict with a query string (the Ray Serve clients' form).
    """
    if environ.get("PATH_INFO") != ENDPOINT or environ.get("REQUEST_METHOD") != "POST":
        return None
    length = environ.get("CONTENT_LENGTH", "")
    query = environ.get("QUERY_STRING", "")
    if length in ("", "0"):
        return QUERY if query and "HTTP_TRANSFER_ENCODING" not in environ else None
    if (
        not query
        and length.isdigit()
        and int(length) <= MAX_ROW_BODY_BYTES
        and environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() == "application/json"
    ):
        return JSON_BODY
    return None


def query_fields(query: str) -> dict[str, str]:
    """The query string's fields, the first value of each: ``request.args.to_dict()`` without Werkzeug's objects.

    Decoded as Werkzeug decodes it (the WSGI string's bytes as UTF-8, invalid bytes left
    percent-encoded), so both paths see the same values.
    """
    fields: dict[str, str] = {}
    for key, value in parse_qsl(query.encode("latin-1").decode(), keep_blank_values=True, errors="werkzeug.url_quote"):
        fields.setdefault(key, value)
    return fields
