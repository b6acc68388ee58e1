"""The web app's errors and the one JSON shape every error answer has.

``{"status": 422, "code": "invalid_field", "message": "...", "field": "store"}``

``field`` names the offending input when there is one (``instances[3].date``
in a batch); ``details`` lists every problem when there are several.  The
nginx configuration answers its own errors (uWSGI unreachable, body too large)
in the same shape.  No handler ever puts a stack trace in a response.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from forecast.errors import ForecastError

logger = logging.getLogger(__name__)


class ApiError(ForecastError):
    """An error answered to a client; subclasses fix ``status`` and ``code``."""

    def __init__(self, message: str, field: str | None = None, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.details = details

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


class ReloadRefused(ApiError):
    status, code = 422, "reload_refused"


class Unavailable(ApiError):
    """503: not ready, or at capacity; the client should retry after ``retry_after_s``.

    ``job`` names the job whose failure this reports (logged with the request, never sent).
    """

    status, code = 503, "unavailable"
    # Every code a 503 of the app can carry (each one a label of forecast_rejected_requests_total).
    REASONS = ("overloaded", "not_ready", "prediction_failed", "result_lost", "mule_died", "unavailable")

    def __init__(self, message: str, retry_after_s: int, code: str = "unavailable", job: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.code = code
        self.job = job

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class DeadlineExceeded(ApiError):
    status, code = 504, "deadline_exceeded"


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    body = {"status": status, "code": code, "message": message}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def answer_for(error: ForecastError) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and the extra headers of the answer to ``error`` (Flask's handler and the fast lane)."""
    extra = {"field": error.field, "details": error.details} if isinstance(error, ApiError) else {}
    headers = error.headers() if isinstance(error, ApiError) else {}
    return error_body(error.status, error.code, error.message, **extra), headers


INTERNAL_ERROR = "internal_error"


def internal_error_body() -> dict[str, Any]:
    """The answer to an unexpected exception: no detail of it reaches the client (it is logged)."""
    return error_body(500, INTERNAL_ERROR, "internal server error")


def _respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def init_app(app: Flask) -> None:
    """Register the handlers that turn every error into the JSON shape."""

    @app.errorhandler(ForecastError)
    def _forecast_error(error: ForecastError) -> Response:
        g.error, g.job = error.code, getattr(error, "job", None)  # for the request's log line and metrics
        return _respond(error.status, *answer_for(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        g.error = code
        headers = (
            {"Allow": error.response.headers["Allow"]} if error.response and "Allow" in error.response.headers else {}
        )
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return _respond(status, error_body(status, code, error.description or error.name), headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        g.error = INTERNAL_ERROR
        return _respond(500, internal_error_body())
