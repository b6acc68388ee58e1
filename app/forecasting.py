"""``/forecast``: a horizon of every series asked, by day or ISO week, with totals, bands and explanations.

One use case, no Flask: the view (:mod:`app.views`) hands it the request's parts, as
``/predict``'s does.  A forecast is the daily rows of ``series x days`` scored through the
same path as ``/predict`` (:meth:`app.service.ForecastService.predict`: the same routing,
canary and mules), so a daily forecast is exactly what ``/predict`` answers for its row.
Weeks and totals are sums of those (:mod:`forecast.buckets`, in the order a client would
add them); bands come from the scoring version's calibration (:mod:`forecast.intervals`),
calibrated on errors of rows of the same kind: a week's band on weekly sums, a total's on
totals.  Explanations come from the mules (:mod:`app.explain`).

The request arrives as a JSON body (``POST``, :class:`app.schemas.ForecastBody`) or as a
query string (``GET /forecast?store=3&item=23&days=28``: ``store`` and ``item`` each pick
one, or all the model knows when absent).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from pydantic import ValidationError
from pydantic_core import from_json

from app.access import Report
from app.bands import half_widths, horizons, no_bands
from app.encoding import json_line
from app.errors import ApiError, InvalidInput, MalformedJson, PayloadTooLarge, UnsupportedMediaType, error_answer
from app.explain import OUTPUT as explained_output
from app.explain import Explanation, explanation
from app.forecast_answers import HorizonAnswer, render
from app.predict import CSV, JSON, STREAM_ROWS, PredictAnswer, wants_csv
from app.prediction import Prediction
from app.schemas import DEFAULT_DAYS, DEFAULT_LEVELS, FORECAST_BODY, ID_MAX, ForecastBody, raise_invalid
from app.service import ForecastService, ServedModel
from app.telemetry import request_start
from forecast.buckets import Buckets, Granularity, Groups, Totals, aggregate, date_buckets, series_groups
from forecast.intervals import bands, kind_key
from forecast.registry import is_model_name
from serving.columns import EPOCH, Columns

ROUTE = "/forecast"
# Daily rows explained in one request: LightGBM's pred_contrib runs in a mule, and 71,500 explained rows missed the
# 5 s deadline under the schema tests' load; 10,000 kept every explained request of those tests within it.
MAX_EXPLAINED_ROWS = 10_000
NAMED_ROUTE = "/models/<name>/forecast"


@dataclass(frozen=True, slots=True)
class ForecastRequest:
    """The parts of an HTTP request ``/forecast`` reads."""

    model: str
    method: str
    query_string: str
    content_type: str
    body: bytes
    received_at: float  # when nginx received it, time.time() seconds
    accept: str = ""
    route: str = ROUTE  # the metrics' label

    @classmethod
    def from_environ(cls, environ: dict[str, Any], model: str, route: str, body: bytes) -> ForecastRequest:
        return cls(model, environ.get("REQUEST_METHOD", "GET"), environ.get("QUERY_STRING", ""),
                   environ.get("CONTENT_TYPE", ""), body, request_start(environ), environ.get("HTTP_ACCEPT", ""),
                   route)  # fmt: skip


@dataclass(frozen=True)
class Ask:
    """A forecast request, read: what to forecast before the model is consulted."""

    series: list[tuple[int, int]] | None  # (store, item) pairs; None: every one the model knows
    stores: int | None  # the GET form's one store (None: all), when ``series`` is None
    items: int | None
    start: dt.date | None  # None: the day after the version's training data
    days: int
    granularity: Granularity
    totals: Totals | None
    levels: tuple[float, ...]
    explain: bool


class ForecastUseCase:
    """Answers ``/forecast``; one per web worker, thread-safe (the service is)."""

    def __init__(self, service: ForecastService) -> None:
        self.service = service
        self.settings = service.settings

    def answer(self, request: ForecastRequest) -> PredictAnswer:
        """200 with the forecasts (JSON, or CSV for ``Accept: text/csv``), or the error answer of an ApiError."""
        report = Report(model=request.model if is_model_name(request.model) else None)
        try:
            deadline = request.received_at + self.settings.deadline_s
            ask = read_ask(request)
            answer = self._forecast(request.model, ask, deadline, report)
        except ApiError as error:
            report.error, report.job = error.code, error.job
            status, payload, headers = error_answer(error, self.settings.retry_after_s)
            return PredictAnswer(status, json_line(payload), headers, report)
        media = CSV if wants_csv(request.accept) else JSON
        pieces = render(answer, media)
        if len(answer) > STREAM_ROWS:
            return PredictAnswer(200, b"", {}, report, media, pieces)
        return PredictAnswer(200, b"".join(pieces), {}, report, media)

    def _forecast(self, model: str, ask: Ask, deadline: float, report: Report) -> HorizonAnswer:
        served = self.service.served_model(model)
        stores, items = series_of(ask, served)
        start = ask.start or served.trained_through + dt.timedelta(days=1)
        check_horizon(ask, stores, items, start, served, self.settings.max_batch_rows)
        report.rows, report.series, report.days = len(stores) * ask.days, len(stores), ask.days
        report.granularity = ask.granularity.value
        first_day = (start - EPOCH).days
        columns = Columns.of(np.tile(first_day + np.arange(ask.days), len(stores)), np.repeat(stores, ask.days),
                             np.repeat(items, ask.days))  # fmt: skip
        outputs = (explained_output,) if ask.explain else ()
        prediction = self.service.predict(model, columns, _SeriesFields(ask.days), deadline, outputs)
        report.model_version, report.loaded = prediction.version_label(), prediction.loaded or None
        daily = prediction.sales.reshape(len(stores), ask.days)
        buckets = date_buckets(first_day, ask.days, ask.granularity)
        groups = series_groups(stores, items, ask.totals)
        values = aggregate(daily, groups, buckets)
        explained = explanation(prediction, columns, lambda v: self.service.model(model, v)) if ask.explain else None
        return self._answer(model, ask, prediction, groups, buckets, values, explained)

    def _answer(self, model: str, ask: Ask, prediction: Prediction, groups: Groups, buckets: Buckets,
                values: np.ndarray, explained: Explanation | None) -> HorizonAnswer:  # fmt: skip
        """The answer's rows and their bands, from the calibration of the version that scored the rows: when a
        canary splits the series between two versions, production's (a total sums both)."""
        version = prediction.labels[0] if len(prediction.labels) == 1 else self.service.route(model).production
        served = self.service.model(model, version)
        lower = upper = None
        note = no_bands(served, ask.levels)
        if note is None:
            lower, upper = band_edges(served, ask, buckets, values)
        return HorizonAnswer(model, prediction.version_label(), ask.granularity, ask.totals, ask.levels, groups,
                             buckets, values.ravel(), lower, upper, note, explained)  # fmt: skip


def band_edges(served: ServedModel, ask: Ask, buckets: Buckets, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), ``(rows, levels)``, from ``served``'s calibration of rows of this kind (a week's of weeks of
    its length, a total's of totals); 422 naming ``level`` for a level its errors cannot support."""
    ahead = horizons(served, buckets.last_days)
    widths = np.empty((*values.shape, len(ask.levels)))
    for length in np.unique(buckets.lengths).tolist():
        chosen = buckets.lengths == length
        shape = (values.shape[0], int(chosen.sum()))
        key = kind_key(ask.granularity, ask.totals, length)
        found = half_widths(served, key, np.broadcast_to(ahead[chosen], shape).ravel(), values[:, chosen].ravel(),
                            ask.levels)  # fmt: skip
        widths[:, chosen] = found.reshape(*shape, len(ask.levels))
    return bands(values.ravel(), widths.reshape(-1, len(ask.levels)))


class _SeriesFields:
    """How a row's field is named in an error: ``series[i].store``, ``start`` for its date."""

    def __init__(self, days: int) -> None:
        self.days = days

    def field(self, index: int, name: str) -> str:
        return "start" if name == "date" else f"series[{index // self.days}].{name}"


def series_of(ask: Ask, served: ServedModel) -> tuple[np.ndarray, np.ndarray]:
    """The (stores, items) the request forecasts, in answer order."""
    if ask.series is not None:
        pairs = np.array(ask.series, dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]
    domain = served.domain
    stores = [ask.stores] if ask.stores is not None else sorted(domain.stores)
    items = [ask.items] if ask.items is not None else sorted(domain.items)
    return np.repeat(np.array(stores, np.int64), len(items)), np.tile(np.array(items, np.int64), len(stores))


def check_horizon(ask: Ask, stores: np.ndarray, items: np.ndarray, start: dt.date, served: ServedModel,
                  max_rows: int) -> None:  # fmt: skip
    """Refuse what the served version cannot forecast, naming the field: too many rows (413), unknown series,
    dates outside its range, explanations of sums (422)."""
    rows = len(stores) * ask.days
    if rows > max_rows:
        raise PayloadTooLarge(f"a forecast may have at most {max_rows} daily rows (series x days); this one has "
                              f"{len(stores)} x {ask.days} = {rows}")  # fmt: skip
    domain = served.domain
    for n, (store, item) in enumerate(zip(stores.tolist(), items.tolist(), strict=True)):
        prefix = f"series[{n}]" if ask.series is not None else ""
        if store not in domain.stores:
            raise InvalidInput(f"store {store} is not known to the model", field=f"{prefix}.store".lstrip("."))
        if item not in domain.items:
            raise InvalidInput(f"item {item} is not known to the model", field=f"{prefix}.item".lstrip("."))
    end = start + dt.timedelta(days=ask.days - 1)
    if start < domain.first_date or end > domain.last_date:
        raise InvalidInput(f"{start}..{end} is outside version {served.version}'s range "
                           f"{domain.first_date}..{domain.last_date}", field="start")  # fmt: skip
    if ask.explain and (ask.granularity is not Granularity.DAY or ask.totals is not None):
        raise InvalidInput("explanations are given for daily forecasts of single series: ask for granularity "
                           '"day" and no totals', field="explain")  # fmt: skip
    if ask.explain and rows > MAX_EXPLAINED_ROWS:
        raise PayloadTooLarge(f"a forecast may explain at most {MAX_EXPLAINED_ROWS} daily rows (series x days); "
                              f"this one has {len(stores)} x {ask.days} = {rows}")  # fmt: skip


# -- reading the request --------------------------------------------------------------------


def read_ask(request: ForecastRequest) -> Ask:
    """The request's :class:`Ask`, from its JSON body (POST) or its query string (GET); 4xx naming the field."""
    if request.method == "GET":
        fields = body_of_query(request.query_string)
        store, item = fields.pop("store", None), fields.pop("item", None)
        for name, value in (("store", store), ("item", item)):
            if value is not None and not (isinstance(value, int) and 1 <= value <= ID_MAX):
                raise InvalidInput(f"{name}: must be a whole number from 1 to {ID_MAX} (got {value!r})", field=name)
        return _validated(fields, store, item)
    if not request.body:
        return _validated({})  # every default: the next 28 days of every series
    mimetype = request.content_type.partition(";")[0].strip().lower()
    if not (mimetype == JSON or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise UnsupportedMediaType(f"send the forecast request as JSON (got {mimetype or 'none'!r})")
    try:
        payload = from_json(request.body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput('the body must be an object like {"series": [{"store": 3, "item": 23}], "days": 28}',
                           field="body")  # fmt: skip
    return _validated(payload)


def _validated(fields: dict[str, Any], store: int | None = None, item: int | None = None) -> Ask:
    try:
        return ask_of(FORECAST_BODY.validate_python(fields), store, item)
    except ValidationError as exc:
        raise_invalid(exc)


def ask_of(body: ForecastBody, store: int | None = None, item: int | None = None) -> Ask:
    series = body.get("series")
    totals = body.get("totals")
    return Ask(
        [(ref["store"], ref["item"]) for ref in series] if series else None,
        store,
        item,
        body.get("start"),
        body.get("days", DEFAULT_DAYS),
        Granularity(body.get("granularity", "day")),
        Totals(totals) if totals else None,
        tuple(sorted(set(body.get("level", DEFAULT_LEVELS)))),
        body.get("explain", False),
    )


QUERY_FIELDS = ("store", "item", "start", "days", "granularity", "totals", "level", "explain")


def body_of_query(query_string: str) -> dict[str, Any]:
    """The GET form's fields as a body: ``store`` and ``item`` become the series, ``level`` may repeat or hold
    commas, numbers and booleans are read from their text (anything else is left for the schema to name)."""
    fields: dict[str, Any] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in QUERY_FIELDS:
            raise InvalidInput(f"unknown query parameter {name!r} (known: {', '.join(QUERY_FIELDS)})", field=name)
        if name == "level":  # empty: no bands
            fields.setdefault("level", []).extend(_number(part) for part in value.split(",") if value)
        elif name == "explain":
            fields[name] = {"true": True, "1": True, "false": False, "0": False}.get(value.lower(), value)
        elif name in ("store", "item", "days"):
            fields[name] = int(value) if value.isdigit() else value
        else:
            fields[name] = value
    return fields


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text
