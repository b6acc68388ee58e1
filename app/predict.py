"""``POST /predict``: the one use case, from a request's parts to its answer, with no Flask and no WSGI.

Both adapters call :meth:`PredictUseCase.answer` and only translate: the fast lane
(:mod:`app.fastlane`, WSGI middleware that takes every ``POST /predict`` with a known
length) and the Flask view (:mod:`app.views`, for the rest, and for everything when
the lane is off).  One flow, so the two cannot drift.

The rows arrive in one of four shapes (:class:`app.schemas.Shape`):

* a JSON object ``{"date": "2018-01-21", "store": 10, "item": 23}``: one forecast object;
* a JSON list of such objects, or ``{"instances": [...]}``: a batch, answered in order
  as ``{"predictions": [...]}``;
* the legacy form of the Ray Serve service's clients: no body, the three fields in the
  query string (the last of a repeated one), answered as that service answered it
  (:mod:`app.legacy`): a bare number, a sentinel outside the served version's guardrails,
  the cap above its ``max_value``, byte for byte.  Where it failed with 500 (an impossible
  date) the answer is our 422.

To add an answer shape: a :class:`~app.schemas.Shape` member, its reading in
:func:`read_rows`, its answer in :func:`render`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from pydantic_core import from_json

from app.access import Report
from app.encoding import json_exact, json_line
from app.errors import (
    ApiError,
    InvalidInput,
    MalformedJson,
    PayloadTooLarge,
    Reason,
    Unavailable,
    UnsupportedMediaType,
    error_answer,
)
from app.legacy import LEGACY_QUERY, LegacyQuery, parse_date
from app.mule_client import Prediction
from app.schemas import ROW, ROWS, PredictRow, Shape, raise_invalid
from app.service import ForecastService
from forecast.registry import is_model_name

LEGACY_FIELDS = frozenset({"date", "store", "item"})  # the query-string form, for body-less requests only


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """The parts of an HTTP request that ``/predict`` reads."""

    model: str  # the model asked for: ``/predict`` is the default one, ``/models/<name>/predict`` a named one
    query_string: str  # as received: the WSGI ``QUERY_STRING`` (bytes as latin-1 characters)
    content_type: str  # the Content-Type header, "" when there is none
    body: bytes
    received_at: float  # when nginx received the request (``X-Request-Start``), in time.time() seconds


@dataclass(frozen=True, slots=True)
class PredictAnswer:
    """What to answer: the status, the JSON body's bytes, extra headers, and the access line's fields."""

    status: int
    body: bytes
    headers: dict[str, str]
    report: Report


class PredictUseCase:
    """Answers ``/predict`` requests; one per web worker process, thread-safe (the service is)."""

    def __init__(self, service: ForecastService) -> None:
        self.service = service
        self.settings = service.settings

    def answer(self, request: PredictRequest) -> PredictAnswer:
        """The answer to ``request``: 200 with the forecasts, or the error answer of an :class:`ApiError`.

        Anything else raised is a bug: it propagates, and the adapter answers 500 and logs it.
        """
        # Only a well-formed name reaches the access line's header: the path may hold CR, LF, anything.
        report = Report(model=request.model if is_model_name(request.model) else None)
        try:
            deadline = self._deadline(request)
            fields = query_fields(request.query_string) if request.query_string else {}
            if not request.body and fields:
                body = self._answer_legacy(request.model, legacy_query(fields), deadline, report)
            else:
                rows = read_rows(request, fields, self.settings.max_batch_rows)
                body = self._answer_rows(request.model, rows, deadline, report)
        except ApiError as error:
            report.error, report.job = error.code, error.job
            status, payload, headers = error_answer(error, self.settings.retry_after_s)
            return PredictAnswer(status, json_line(payload), headers, report)
        return PredictAnswer(200, body, {}, report)

    def _answer_rows(self, model: str, read: tuple[list[PredictRow], Shape], deadline: float, report: Report) -> bytes:
        rows, shape = read
        report.rows = len(rows)
        prediction = self.service.predict(model, rows, shape, deadline)
        report.model_version, report.loaded = prediction.version_label(), prediction.loaded or None
        return json_line(render(rows, shape, prediction))

    def _answer_legacy(self, model: str, query: LegacyQuery, deadline: float, report: Report) -> bytes:
        """The original's answer: a sentinel outside the served version's guardrails, else the capped prediction."""
        report.rows = 1
        served = self.service.served_model(model)
        sentinel = served.guardrails.sentinel(query)
        if sentinel is not None:
            report.model_version = served.version
            return json_exact(sentinel)
        prediction = self.service.predict(model, [legacy_row(query)], Shape.QUERY, deadline)
        report.model_version, report.loaded = prediction.version_label(), prediction.loaded or None
        return json_exact(self.service.model(model, report.model_version).guardrails.cap(prediction.sales[0]))

    def _deadline(self, request: PredictRequest) -> float:
        """The request's deadline, counted from when nginx received it; past it already, the request is shed."""
        deadline = request.received_at + self.settings.deadline_s
        if time.time() >= deadline:
            raise Unavailable("the request waited too long in the queue", Reason.OVERLOADED)
        return deadline


def legacy_query(fields: dict[str, str]) -> LegacyQuery:
    """The legacy form's three fields, typed as the original's FastAPI read them; 422 naming a bad one."""
    try:
        return LEGACY_QUERY.validate_python(fields)
    except ValidationError as exc:
        raise_invalid(exc, Shape.QUERY)


def legacy_row(query: LegacyQuery) -> PredictRow:
    """The row of a query inside the guardrails; 422 for a date that is none (the original's 500)."""
    day = parse_date(query["date"])
    if day is None:
        raise InvalidInput(f"date: {query['date']!r} is not a date (YYYY-MM-DD)", field="date")
    return {"date": day, "store": query["store"], "item": query["item"]}  # type: ignore[typeddict-item]


def read_rows(request: PredictRequest, fields: dict[str, str], max_rows: int) -> tuple[list[PredictRow], Shape]:
    """The rows of a request with a JSON body (``fields``: its query's); raises an :class:`ApiError`."""
    if not request.body:
        raise InvalidInput(
            'send a JSON body like {"date": "2018-01-21", "store": 10, "item": 23}, or date, store and item as '
            "query parameters",
            field="body",
        )
    if fields and LEGACY_FIELDS & fields.keys():
        raise InvalidInput(
            "send the row either as a JSON body or as the query parameters date, store and item, not both",
            field="query",
        )
    mimetype = request.content_type.partition(";")[0].strip().lower()
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise UnsupportedMediaType(f"send JSON with Content-Type: application/json (got {mimetype or 'none'!r})")
    try:
        payload = from_json(request.body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    return rows_from_json(payload, max_rows)


def rows_from_json(payload: Any, max_rows: int) -> tuple[list[PredictRow], Shape]:
    """The rows of a parsed JSON body: a row object, a list of rows, or ``{"instances": [...]}``."""
    if isinstance(payload, dict) and "instances" in payload:
        if set(payload) != {"instances"} or not isinstance(payload["instances"], list):
            raise InvalidInput('"instances" must be the only field, and a list of rows', field="instances")
        return _batch(payload["instances"], Shape.INSTANCES, max_rows), Shape.INSTANCES
    if isinstance(payload, list):
        return _batch(payload, Shape.LIST, max_rows), Shape.LIST
    if isinstance(payload, dict):
        try:
            return [ROW.validate_python(payload)], Shape.ROW
        except ValidationError as exc:
            raise_invalid(exc, Shape.ROW)
    raise InvalidInput('body must be a row object, a list of rows, or {"instances": [...]}', field="body")


def _batch(items: list[Any], shape: Shape, max_rows: int) -> list[PredictRow]:
    if not items:
        raise InvalidInput("a batch needs at least one row", field=shape.prefix or "body")
    if len(items) > max_rows:
        raise PayloadTooLarge(f"a batch may have at most {max_rows} rows; this one has {len(items)}")
    try:
        return ROWS.validate_python(items)
    except ValidationError as exc:
        raise_invalid(exc, shape)


def query_fields(query_string: str) -> dict[str, str]:
    """The query string's fields, percent-decoded as UTF-8 (bad bytes replaced); the last of a repeated
    field wins, as it did in the original service (FastAPI)."""
    decoded = query_string.encode("latin-1").decode(errors="replace")
    return dict(parse_qsl(decoded, keep_blank_values=True, errors="replace"))


def render(rows: list[PredictRow], shape: Shape, prediction: Prediction) -> Any:
    """The answer's body for rows that came in ``shape`` (a JSON shape: the legacy form is answered apart)."""
    if shape is Shape.ROW:
        row = rows[0]
        return {"date": row["date"].isoformat(), "store": row["store"], "item": row["item"],
                "sales": prediction.sales[0], "model_version": prediction.versions[0]}  # fmt: skip
    forecasts = [
        {"date": row["date"].isoformat(), "store": row["store"], "item": row["item"], "sales": sales,
         "model_version": version}
        for row, sales, version in zip(rows, prediction.sales, prediction.versions, strict=True)
    ]  # fmt: skip
    return {"predictions": forecasts}
