"""The web app's errors and the one JSON shape every error answer has.

``{"status": 422, "code": "invalid_input", "message": "...", "field": "store"}``

``field`` names the offending input when there is one (``instances[3].date``
in a batch); ``details`` lists every problem when there are several.  The
nginx configuration answers its own errors (uWSGI unreachable, body too large)
in the same shape.  No answer ever carries a stack trace.

:func:`error_answer` turns an error into its answer (status, body, headers), and is
the one place ``Retry-After`` is filled in; the Flask handlers (:func:`init_app`) and
the ``/predict`` use case (:mod:`app.predict`) both use it.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, NamedTuple

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from app.access import Report

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"


class Reason(StrEnum):
    """Why the app answers 503: the ``code`` of the answer and the label of ``forecast_rejected_requests_total``."""

    OVERLOADED = "overloaded"  # the request's jobs do not fit its worker's share of the queue, or it waited too long
    NOT_READY = "not_ready"  # no mule holds a model
    PREDICTION_FAILED = "prediction_failed"  # a mule's predict call raised
    RESULT_LOST = "result_lost"  # a mule said "done" but its result is not in the cache
    MULE_DIED = "mule_died"  # two mules died holding the request's job
    MODEL_UNAVAILABLE = "model_unavailable"  # the request's model version does not load (the message names it)
    UNAVAILABLE = "unavailable"  # a mule cannot take messages (and nginx's own 503)


class ApiError(Exception):
    """An error answered to a client; subclasses fix ``status`` and ``code``."""

    status = 500
    code = INTERNAL_ERROR

    def __init__(self, message: str, field: str | None = None, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    @property
    def job(self) -> str | None:
        """The job whose failure this reports (for the logs and the access line, never sent)."""
        return None

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, field=self.field, details=self.details)

    def headers(self) -> dict[str, str]:
        return {}


class MalformedJson(ApiError):
    status, code = 400, "malformed_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="forecast"'}


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class PayloadTooLarge(ApiError):
    status, code = 413, "batch_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ApiError):
    status, code = 422, "invalid_input"


class ModelNotFound(ApiError):
    status, code = 404, "model_not_found"


class ReloadRefused(ApiError):
    status, code = 422, "reload_refused"


class Unavailable(ApiError):
    """503: not ready, at capacity, or a mule failed; the client should retry (``Retry-After``)."""

    status = 503

    def __init__(self, message: str, reason: Reason, job: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = reason.value
        self._job = job

    @property
    def job(self) -> str | None:
        return self._job


class NotReady(Unavailable):
    """``GET /status`` when not every mule serves: the error shape plus what ``/status`` reports."""

    def __init__(self, message: str, status: dict[str, Any]) -> None:
        super().__init__(message, Reason.NOT_READY)
        self.status_body = status

    def body(self) -> dict[str, Any]:
        return {**super().body(), **self.status_body}


class DeadlineExceeded(ApiError):
    status, code = 504, "deadline_exceeded"


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    body = {"status": status, "code": code, "message": message}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


class ErrorAnswer(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def error_answer(error: ApiError, retry_after_s: int) -> ErrorAnswer:
    """The answer to ``error``; every 503 tells the client when to retry."""
    headers = error.headers()
    if error.status == 503:
        headers["Retry-After"] = str(retry_after_s)
    return ErrorAnswer(error.status, error.body(), headers)


def internal_error_answer() -> ErrorAnswer:
    """The answer to an unexpected exception: no detail of it reaches the client (the caller logs it)."""
    return ErrorAnswer(500, error_body(500, INTERNAL_ERROR, "internal server error"), {})


def _respond(answer: ErrorAnswer) -> Response:
    response = jsonify(answer.body)
    response.status_code = answer.status
    response.headers.update(answer.headers)
    return response


def init_app(app: Flask, retry_after_s: int) -> None:
    """Register the handlers that turn every error into the JSON shape (and note it for the access line);
    ``retry_after_s``: the ``Retry-After`` of a 503 (``FORECAST_RETRY_AFTER_S``)."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        g.report = Report(error=error.code, job=error.job)
        return _respond(error_answer(error, retry_after_s))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        g.report = Report(error=code)
        headers = (
            {"Allow": error.response.headers["Allow"]} if error.response and "Allow" in error.response.headers else {}
        )
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return _respond(ErrorAnswer(status, error_body(status, code, error.description or error.name), headers))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        g.report = Report(error=INTERNAL_ERROR)
        return _respond(internal_error_answer())
