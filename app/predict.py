"""``POST /predict``: the one use case, from a request's parts to its answer, with no Flask and no WSGI.

Both adapters call :meth:`PredictUseCase.answer` and only translate: the fast lane
(:mod:`app.fastlane`, WSGI middleware that takes every ``POST /predict`` with a known
length) and the Flask view (:mod:`app.views`, for the rest, and for everything when
the lane is off).  One flow, so the two cannot drift.

The rows arrive in one of four shapes (:class:`app.schemas.Shape`):

* a JSON object ``{"date": "2018-01-21", "store": 10, "item": 23}``: one forecast object;
* a JSON list of such objects, or ``{"instances": [...]}``: a batch, answered in order
  as ``{"predictions": [...]}``;
* a ``text/csv`` body with a header naming ``date``, ``store``, ``item`` and optionally
  ``id`` (the Kaggle test set's columns): a batch, answered as JSON like a list, or, with
  ``Accept: text/csv``, as CSV: ``id,sales`` (the Kaggle submission file), else
  ``date,store,item,sales``;
* the legacy form of the Ray Serve service's clients: no body, the three fields in the
  query string (the last of a repeated one), answered as that service answered it
  (:mod:`app.legacy_answers`): a bare number, a sentinel outside the served version's guardrails,
  the cap above its ``max_value``, byte for byte.  Where it failed with 500 (an impossible
  date) the answer is our 422.

A batch is read, checked, scored and answered as columns (:mod:`app.rows`), and encoded
:data:`app.answers.ANSWER_PIECE_ROWS` rows at a time; an answer of more than :data:`STREAM_ROWS` rows
is sent piece by piece as it is encoded, so that a worker never holds more than one
piece's answer objects.

To add an answer shape: a :class:`~app.schemas.Shape` member, its reading in
:func:`read_rows`, its answer in :func:`app.answers.render`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import numpy as np
from pydantic import ValidationError
from pydantic_core import from_json

from app.access import Report
from app.answers import OUTPUTS, render, render_row
from app.bands import Bands, row_bands
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
from app.legacy_answers import LEGACY_QUERY, LegacyQuery, parse_date
from app.prediction import Prediction
from app.rows import from_csv, from_json_pieces, from_json_rows, from_validated
from app.schemas import ROW, ROWS, Shape, raise_invalid
from app.service import ForecastService
from app.telemetry import request_start
from forecast.registry import is_model_name
from serving.columns import Columns

LEGACY_FIELDS = frozenset({"date", "store", "item"})  # the query-string form, for body-less requests only
BODY_PIECE_BYTES = 1 << 20  # a larger body is read this much at a time (read_body)
STREAM_ROWS = 50_000  # a larger answer is sent as it is encoded (no Content-Length)
# The use case's two routes, as Flask declares them (app/views.py): both adapters label the HTTP metrics
# with the rule of the one a request took, so the same route has one label whichever adapter answered.
ROUTE = "/predict"  # the default model
NAMED_ROUTE = "/models/<name>/predict"  # a model of the registry by name
JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """The parts of an HTTP request that ``/predict`` reads."""

    model: str  # the model asked for: ``/predict`` is the default one, ``/models/<name>/predict`` a named one
    query_string: str  # as received: the WSGI ``QUERY_STRING`` (bytes as latin-1 characters)
    content_type: str  # the Content-Type header, "" when there is none
    body: bytes | bytearray  # bytearray: a large body, as read_body reads it
    received_at: float  # when nginx received the request (``X-Request-Start``), in time.time() seconds
    accept: str = ""  # the Accept header, "" when there is none
    route: str = ROUTE  # the rule of the route it took (ROUTE or NAMED_ROUTE): the HTTP metrics' label

    @classmethod
    def from_environ(cls, environ: dict[str, Any], model: str, route: str, body: bytes | bytearray) -> PredictRequest:
        """The request of a WSGI environ whose body the adapter read (:func:`read_body`): both adapters build it
        here, so they read the same headers the same way."""
        return cls(model, environ.get("QUERY_STRING", ""), environ.get("CONTENT_TYPE", ""), body,
                   request_start(environ), environ.get("HTTP_ACCEPT", ""), route)  # fmt: skip

    @property
    def large(self) -> bool:
        """A body of more than :data:`BODY_PIECE_BYTES`: once it is answered (whatever the answer), the adapter
        hands the memory it freed back to the system (:func:`serving.processes.release_freed_memory`)."""
        return len(self.body) > BODY_PIECE_BYTES


@dataclass(frozen=True, slots=True)
class ReadRows:
    """A request's rows as columns, how they arrived, and a CSV body's ``id`` column."""

    columns: Columns
    shape: Shape
    ids: np.ndarray | None = None
    levels: tuple[float, ...] | None = None  # the bands the rows ask for (``level``); None: no bands asked


@dataclass(frozen=True, slots=True)
class PredictAnswer:
    """What to answer: the status, the body, extra headers, and the access line's fields.

    The body is ``body``, or, for a large answer, the pieces ``stream`` yields as it encodes
    them (no Content-Length then).
    """

    status: int
    body: bytes
    headers: dict[str, str]
    report: Report
    content_type: str = JSON
    stream: Iterator[bytes] | None = field(default=None, compare=False)


class Readable(Protocol):
    """A request's input stream (uWSGI's ``wsgi.input``, Werkzeug's ``input_stream``)."""

    def read(self, size: int, /) -> bytes: ...


def read_body(stream: Readable, length: int) -> bytes | bytearray:
    """The ``length`` bytes of a request's body (fewer if the stream ends first), a piece at a time into one buffer.

    Both adapters read bodies this way.  uWSGI's ``read(n)`` fills a buffer of its own of ``n`` bytes and
    copies it out, and keeps that buffer until the request ends: read whole, a 23 MB body was held twice
    for the whole request (measured).
    """
    if length <= BODY_PIECE_BYTES:
        return stream.read(length) if length else b""
    body = bytearray(length)
    filled = 0
    while filled < length and (piece := stream.read(min(BODY_PIECE_BYTES, length - filled))):
        body[filled : filled + len(piece)] = piece
        filled += len(piece)
    del body[filled:]
    return body


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
                return PredictAnswer(200, self._answer_legacy(request.model, legacy_query(fields), deadline, report),
                                     {}, report)  # fmt: skip
            read = read_rows(request, fields, self.settings.max_batch_rows)
            prediction = self._predict(request.model, read, deadline, report)
            bands = None if read.levels is None else self._bands(request.model, read, prediction)
        except ApiError as error:
            report.error, report.job = error.code, error.job
            status, payload, headers = error_answer(error, self.settings.retry_after_s)
            return PredictAnswer(status, json_line(payload), headers, report)
        if read.shape is Shape.ROW:  # most requests
            return PredictAnswer(200, render_row(read.columns, prediction, bands), {}, report)
        media = CSV if wants_csv(request.accept) else JSON
        pieces = render(read.columns, read.ids, prediction, media, bands)
        if len(read.columns) > STREAM_ROWS:
            return PredictAnswer(200, b"", {}, report, media, pieces)
        return PredictAnswer(200, b"".join(pieces), {}, report, media)

    def _bands(self, model: str, read: ReadRows, prediction: Prediction) -> Bands:
        """The bands the rows asked for; 422 naming ``level`` for one the calibration cannot support."""
        assert read.levels is not None
        return row_bands(prediction, read.columns, read.levels, lambda v: self.service.model(model, v))

    def _predict(self, model: str, read: ReadRows, deadline: float, report: Report) -> Prediction:
        report.rows = len(read.columns)
        prediction = self.service.predict(model, read.columns, read.shape, deadline, OUTPUTS)
        report.model_version, report.loaded = prediction.version_label(), prediction.loaded or None
        return prediction

    def _answer_legacy(self, model: str, query: LegacyQuery, deadline: float, report: Report) -> bytes:
        """The original's answer: a sentinel outside the served version's guardrails, else the capped prediction."""
        report.rows = 1
        served = self.service.served_model(model)
        sentinel = served.guardrails.sentinel(query)
        if sentinel is not None:
            report.model_version = served.version
            return json_exact(sentinel)
        prediction = self.service.predict(model, legacy_row(query), Shape.QUERY, deadline)
        report.model_version, report.loaded = prediction.version_label(), prediction.loaded or None
        capped = self.service.model(model, report.model_version).guardrails.cap(float(prediction.sales[0]))
        return json_exact(capped)

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
        raise_invalid(exc, Shape.QUERY.prefix)


def legacy_row(query: LegacyQuery) -> Columns:
    """The row of a query inside the guardrails; 422 for a date that is none (the original's 500)."""
    day = parse_date(query["date"])
    if day is None:
        raise InvalidInput(f"date: {query['date']!r} is not a date (YYYY-MM-DD)", field="date")
    return Columns.one(day, query["store"], query["item"])


def read_rows(request: PredictRequest, fields: dict[str, str], max_rows: int) -> ReadRows:
    """The rows of a request with a JSON or CSV body (``fields``: its query's); raises an :class:`ApiError`."""
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
    if mimetype == CSV:
        csv = from_csv(request.body, max_rows)
        return ReadRows(csv.columns, Shape.CSV, csv.ids)
    if not (mimetype == JSON or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json, or CSV with text/csv (got {mimetype or 'none'!r})"
        )
    pieces = from_json_pieces(request.body, max_rows)  # a large batch: its row objects a piece at a time
    if pieces is not None:
        return ReadRows(*pieces)
    try:
        payload = from_json(request.body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    return rows_from_json(payload, max_rows)


def rows_from_json(payload: Any, max_rows: int) -> ReadRows:
    """The rows of a parsed JSON body: a row object, a list of rows, or ``{"instances": [...]}``."""
    if isinstance(payload, dict) and "instances" in payload:
        if set(payload) != {"instances"} or not isinstance(payload["instances"], list):
            raise InvalidInput('"instances" must be the only field, and a list of rows', field="instances")
        return _batch(payload["instances"], Shape.INSTANCES, max_rows)
    if isinstance(payload, list):
        return _batch(payload, Shape.LIST, max_rows)
    if isinstance(payload, dict):
        try:
            row = ROW.validate_python(payload)
        except ValidationError as exc:
            raise_invalid(exc, Shape.ROW.prefix)
        levels = tuple(sorted(set(row["level"]))) if "level" in row else None
        return ReadRows(Columns.one(row["date"], row["store"], row["item"]), Shape.ROW, levels=levels)
    raise InvalidInput('body must be a row object, a list of rows, or {"instances": [...]}', field="body")


def _batch(items: list[Any], shape: Shape, max_rows: int) -> ReadRows:
    """A batch's rows as columns: read whole-column when every row is well formed, else validated by pydantic,
    which names the first bad field (the rows accepted are the same); rows asking for bands (``level``) all ask
    for the same ones (422 naming the first row that does not)."""
    if not items:
        raise InvalidInput("a batch needs at least one row", field=shape.prefix or "body")
    if len(items) > max_rows:
        raise PayloadTooLarge(f"a batch may have at most {max_rows} rows; this one has {len(items)}")
    columns = from_json_rows(items)
    if columns is not None:
        return ReadRows(columns, shape)
    try:
        rows = ROWS.validate_python(items)
    except ValidationError as exc:
        raise_invalid(exc, shape.prefix)
    asked = [tuple(sorted(set(row["level"]))) if "level" in row else None for row in rows]
    for index, levels in enumerate(asked):
        if levels != asked[0]:
            raise InvalidInput("every row of a batch asks for the same levels, or none", shape.field(index, "level"))
    return ReadRows(from_validated(rows), shape, levels=asked[0])


def query_fields(query_string: str) -> dict[str, str]:
    """The query string's fields, percent-decoded as UTF-8 (bad bytes replaced); the last of a repeated
    field wins, as it did in the original service (FastAPI)."""
    decoded = query_string.encode("latin-1").decode(errors="replace")
    return dict(parse_qsl(decoded, keep_blank_values=True, errors="replace"))


def wants_csv(accept: str) -> bool:
    """Whether the Accept header prefers ``text/csv`` to JSON (by q-value; JSON on a tie or when absent)."""
    quality = {CSV: -1.0, JSON: 0.0, "*/*": -1.0}
    for media_range in accept.split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        if media.lower() in quality:
            q = next((p.removeprefix("q=") for p in params if p.startswith("q=")), "1")
            quality[media.lower()] = float(q) if q.replace(".", "", 1).isdigit() else 0.0
    if quality[JSON] == 0.0 and quality["*/*"] > 0:
        quality[JSON] = quality["*/*"]
    return quality[CSV] > quality[JSON]
