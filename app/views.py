"""The HTTP endpoints: ``/``, ``/status``, ``/reload`` and ``/predict``.

``/predict`` takes, for the same answer shape:

* a JSON object ``{"date": "2018-01-21", "store": 10, "item": 23}``;
* a JSON list of such objects, or ``{"instances": [...]}``: a batch, answered
  in order as ``{"predictions": [...]}``;
* the legacy form of the Ray Serve service's clients: no body, the three
  fields in the query string, answered with a bare JSON number.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from pydantic_core import from_json

from app import exposition, openapi
from app.errors import (
    Forbidden,
    InvalidInput,
    MalformedJson,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    error_body,
)
from app.mule_client import Prediction
from app.schemas import QUERY_ROW, ROW, ROWS, PredictRow, raise_invalid
from app.service import ForecastService
from app.telemetry import RequestMetrics, request_start
from forecast.settings import Settings

bp = Blueprint("forecast", __name__)

SERVICE_NAME = "store-item sales forecast"
LEGACY_FIELDS = frozenset({"date", "store", "item"})  # the query-string form, for body-less requests only


def service() -> ForecastService:
    svc: ForecastService = current_app.extensions["forecast"]
    return svc


@bp.get("/")
def index() -> dict[str, Any]:
    return {
        "service": SERVICE_NAME,
        "message": "Sales Forecast Model is ready!",
        "model_version": service().served_version(),
        "endpoints": {
            "status": "GET /status",
            "reload": "GET or POST /reload",
            "predict": 'POST /predict {"date": "2018-01-21", "store": 10, "item": 23}',
        },
    }


@bp.get("/status")
def status() -> tuple[Response, int, dict[str, str]] | Response:
    ready, body = service().status()
    if ready:
        return jsonify({"status": "Alive", **body})
    retry = str(service().settings.retry_after_s)
    g.error = "not_ready"  # for the access line and the request metrics
    return (
        jsonify(error_body(503, "not_ready", "not every mule has a model loaded", **body)),
        503,
        {"Retry-After": retry},
    )


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    """Swagger UI lives at /docs/ (app/__init__.py); a relative redirect keeps the client's host and port."""
    return redirect("/docs/", 308)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(_document(service().settings))


@functools.cache
def _document(settings: Settings) -> dict[str, Any]:
    return openapi.build(settings)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    svc = service()
    recorder: RequestMetrics | None = current_app.extensions["forecast_metrics"]
    if recorder is not None:
        recorder.flush()  # this worker's latest requests; the other workers' are at most a flush interval old
    return Response(exposition.render(svc.client, svc.settings), content_type=exposition.CONTENT_TYPE)


@bp.route("/reload", methods=["GET", "POST"])
def reload() -> dict[str, Any]:
    _authorize_admin()
    return service().reload()


@bp.post("/predict")
def predict() -> Response:
    svc = service()
    deadline = _deadline(svc)
    body = _body()
    if not body:
        if request.args:
            return _predict_legacy(svc, deadline)
        raise InvalidInput(
            'send a JSON body like {"date": "2018-01-21", "store": 10, "item": 23}, or date, store and item as '
            "query parameters",
            field="body",
        )
    if request.query_string and LEGACY_FIELDS & request.args.keys():
        raise InvalidInput(
            "send the row either as a JSON body or as the query parameters date, store and item, not both",
            field="query",
        )
    if not request.is_json:
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})"
        )
    try:
        payload = from_json(body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    rows, prefix = _parse_rows(payload, svc.settings.max_batch_rows)
    prediction = _predict_rows(svc, rows, prefix, deadline)
    answers = [answer(row, prediction, i) for i, row in enumerate(rows)]
    return jsonify(answers[0] if prefix is None else {"predictions": answers})


def _body() -> bytes:
    """The request body, read once.

    nginx buffers every body and always passes its length, so exactly that many bytes are
    read from the raw stream: Werkzeug's general path (``get_data``: a LimitedStream read in
    chunks) costs several microseconds per request on the hot path.  Without a length (a
    client talking to uWSGI directly with a chunked body) the general path is used.
    """
    length = request.content_length
    if length is None:
        return request.get_data(cache=False)
    return request.input_stream.read(length) if length else b""


def _predict_legacy(svc: ForecastService, deadline: float) -> Response:
    try:
        row: PredictRow = QUERY_ROW.validate_python(request.args.to_dict())  # type: ignore[assignment]
    except ValidationError as exc:
        raise_invalid(exc)
    return jsonify(_predict_rows(svc, [row], None, deadline).sales[0])


def _predict_rows(svc: ForecastService, rows: list[PredictRow], prefix: str | None, deadline: float) -> Prediction:
    found = g._get_current_object()  # once: each LocalProxy lookup costs about a microsecond
    found.rows = len(rows)
    prediction = svc.predict(svc.validate(rows, prefix), deadline)
    versions = set(prediction.versions)
    found.model_version = prediction.versions[0] if len(versions) == 1 else ",".join(sorted(versions))
    return prediction


def _parse_rows(payload: Any, limit: int) -> tuple[list[PredictRow], str | None]:
    """(rows, prefix): prefix is None for one object, else the batch's field path."""
    if isinstance(payload, dict) and "instances" in payload:
        if set(payload) != {"instances"} or not isinstance(payload["instances"], list):
            raise InvalidInput('"instances" must be the only field, and a list of rows', field="instances")
        return _validate_batch(payload["instances"], "instances", limit), "instances"
    if isinstance(payload, list):
        return _validate_batch(payload, "", limit), ""
    if isinstance(payload, dict):
        try:
            return [ROW.validate_python(payload)], None
        except ValidationError as exc:
            raise_invalid(exc)
    raise InvalidInput('body must be a row object, a list of rows, or {"instances": [...]}', field="body")


def _validate_batch(items: list[Any], prefix: str, limit: int) -> list[PredictRow]:
    if not items:
        raise InvalidInput("a batch needs at least one row", field=prefix or "body")
    if len(items) > limit:
        raise PayloadTooLarge(f"a batch may have at most {limit} rows; this one has {len(items)}")
    try:
        return ROWS.validate_python(items)
    except ValidationError as exc:
        raise_invalid(exc, prefix)
    raise AssertionError("unreachable")


def answer(row: PredictRow, prediction: Prediction, index: int) -> dict[str, Any]:
    """The answer for ``row``, the ``index``-th of the request (also used by app/fastlane.py)."""
    return {
        "date": row["date"].isoformat(),
        "store": row["store"],
        "item": row["item"],
        "sales": prediction.sales[index],
        "model_version": prediction.versions[index],
    }


def _deadline(svc: ForecastService) -> float:
    """The request's deadline, counted from when nginx received it (X-Request-Start)."""
    deadline = request_start(request.environ) + svc.settings.deadline_s
    if time.time() >= deadline:
        raise Unavailable("the request waited too long in the queue", svc.settings.retry_after_s, "overloaded")
    return deadline


def _authorize_admin() -> None:
    token = service().settings.admin_token
    if token is not None:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.get_secret_value().encode()):
            raise Unauthorized("reload needs Authorization: Bearer <FORECAST_ADMIN_TOKEN>")
        return
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden("reload is allowed from loopback only (set FORECAST_ADMIN_TOKEN to allow it remotely)")
