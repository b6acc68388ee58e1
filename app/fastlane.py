"""``POST /predict`` answered without Flask's request machinery: an adapter of the use case to WSGI.

Runs in the web workers, as WSGI middleware around the Flask app (``app.wsgi_app``,
Flask's documented way to wrap it).  For a single-row ``/predict`` Flask's own work
(request context, URL matching, hooks, signals, the ``Response`` object) costs far more
than the request itself: measured in-process on the 2-core VM, 163 µs per request through
Flask against 19 µs here, with the mules stood in for (README "Performance").  A
production load is nearly all such requests.

The lane takes every ``POST /predict`` whose body length is known (nginx always sends
it), whatever its body; :func:`lane_request` decides, by its return value, before
anything is parsed.  The answer is :meth:`app.predict.PredictUseCase.answer`'s, the
same the Flask view gives; everything else (other paths and methods, a chunked body
sent to uWSGI directly) goes to Flask unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from app.access import Report
from app.encoding import json_line
from app.errors import INTERNAL_ERROR, internal_error_answer
from app.predict import NAMED_ROUTE, ROUTE, PredictAnswer, PredictRequest, PredictUseCase, read_body
from app.telemetry import FAST_LANE_REQUEST_ID, RequestMetrics
from forecast.registry import DEFAULT_MODEL
from serving.processes import release_freed_memory

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MODELS_PREFIX, _, MODEL_SUFFIX = NAMED_ROUTE.partition("<name>")  # "/models/", "/predict"


class FastLane:
    """WSGI middleware: answers ``POST /predict`` itself, hands every other request to ``flask_app``.

    Thread-safe (no state of its own beyond what it is given); answers 500 (and logs) on a bug.
    """

    def __init__(self, flask_app: WsgiApp, use_case: PredictUseCase, recorder: RequestMetrics | None) -> None:
        self.flask_app = flask_app
        self.use_case = use_case
        self.recorder = recorder

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = lane_request(environ)
        if request is None:
            return self.flask_app(environ, start_response)
        token = FAST_LANE_REQUEST_ID.set(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            answer = self._answer(request)
        finally:
            FAST_LANE_REQUEST_ID.reset(token)
        data = answer.body
        if self.recorder is not None:  # before the answer leaves, as Flask's hook does (app/telemetry.py)
            seconds = time.time() - request.received_at
            self.recorder.record(request.route, "POST", answer.status, seconds, answer.report)
        length = [] if answer.stream is not None else [("Content-Length", str(len(data)))]
        start_response(
            f"{answer.status} {HTTPStatus(answer.status).phrase}",
            [("Content-Type", answer.content_type), *length, *answer.headers.items(), *answer.report.headers()],
        )
        body = answer.stream if answer.stream is not None else [data]
        return ThenRelease(body) if request.large else body

    def _answer(self, request: PredictRequest) -> PredictAnswer:
        try:
            return self.use_case.answer(request)
        except Exception:  # a bug: answered 500 in the error shape, logged here with its traceback
            logger.exception("unhandled error")
            status, body, headers = internal_error_answer()
            return PredictAnswer(status, json_line(body), headers, Report(error=INTERNAL_ERROR))


class ThenRelease:
    """An answer's body that, once the server has sent and closed it, hands the memory the request freed back to
    the system (:func:`serving.processes.release_freed_memory`): WSGI servers call ``close()`` last."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        self._body = ()  # the encoder and the rows it holds are freed before the trim
        release_freed_memory()


def lane_request(environ: dict[str, Any]) -> PredictRequest | None:
    """The request if the lane answers it (its route the rule Flask would match), else None (Flask does).

    The lane answers ``POST /predict`` and ``POST /models/<name>/predict`` with a
    ``Content-Length`` (or no body at all): nginx buffers every body and passes its length.
    A chunked body sent to uWSGI directly has no length; Flask reads it.
    """
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    route = predict_route(environ.get("PATH_INFO", ""))
    if route is None:
        return None
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or environ.get("HTTP_TRANSFER_ENCODING"):  # nginx passes it empty: see nginx.conf
        return None
    body = read_body(environ["wsgi.input"], int(length))
    model, rule = route
    return PredictRequest.from_environ(environ, model, rule, body)


def predict_route(path: str) -> tuple[str, str] | None:
    """The model a prediction path asks for and its route's rule: ``/predict`` the default model,
    ``/models/<name>/predict`` a named one; None for any other path."""
    if path == ROUTE:
        return DEFAULT_MODEL, ROUTE
    name = path.removeprefix(MODELS_PREFIX).removesuffix(MODEL_SUFFIX)
    if len(name) + len(MODELS_PREFIX) + len(MODEL_SUFFIX) == len(path) and name and "/" not in name:
        return name, NAMED_ROUTE
    return None
