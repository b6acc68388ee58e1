"""The OpenAPI 3.1 document of the service, built from the schema objects the views use.

Request schemas are the pydantic adapters that validate requests
(:mod:`app.schemas`); answer schemas are the typed dicts the views return.
pydantic turns both into JSON Schema and ``apispec`` assembles the document:
paths, parameters, and an example of every answer and of every error, made
with the same :func:`app.errors.error_body` the error handlers use.  Built in
each worker at the first ``GET /openapi.json``, and again when the served versions change.

It states what the server enforces: a row's store, item and date within what the served
versions know (their :class:`~app.domain.Domain`; the span of them when several models are
served), the model names the pod serves, and a body required (the legacy query form, which
has none, is the one exception OpenAPI cannot state: its parameters are documented beside it).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from typing import Any

from apispec import APISpec
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from app import answers, legacy_answers, schemas
from app.domain import Domain
from app.endpoints import Endpoint, Served
from app.errors import error_body
from app.forecasting import MAX_EXPLAINED_ROWS
from serving.settings import Settings

TITLE = "Store-item sales forecast"
VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"

# Every component, from the objects the app validates with or answers in.
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "PredictRow": schemas.ROW,
    "LegacyQuery": legacy_answers.LEGACY_QUERY,
    "Instances": TypeAdapter(schemas.Instances),
    "Forecast": TypeAdapter(schemas.Forecast),
    "Forecasts": TypeAdapter(schemas.Forecasts),
    "ForecastBody": schemas.FORECAST_BODY,
    "HorizonForecasts": TypeAdapter(schemas.HorizonForecasts),
    "ActualsLoaded": TypeAdapter(schemas.ActualsLoaded),
    "StoredActuals": TypeAdapter(schemas.StoredActuals),
    "ActualRow": TypeAdapter(schemas.ActualRow),
    "Accuracy": TypeAdapter(schemas.Accuracy),
    "ErrorBody": TypeAdapter(schemas.ErrorBody),
    "MuleState": TypeAdapter(schemas.MuleStateBody),
    "Status": TypeAdapter(schemas.Status),
    "NotReady": TypeAdapter(schemas.NotReadyBody),
    "Reloaded": TypeAdapter(schemas.Reloaded),
    "Models": TypeAdapter(schemas.Models),
    "ServiceIndex": TypeAdapter(schemas.ServiceIndex),
}

# Schema classes named apart from a clashing name elsewhere keep the component name (and title) they had.
_COMPONENT_NAMES = {schemas.MuleStateBody.__name__: "MuleState", schemas.NotReadyBody.__name__: "NotReady"}


class _ComponentNames(GenerateJsonSchema):
    """pydantic's JSON Schema, the components of :data:`_COMPONENT_NAMES` under the names they had."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(_COMPONENT_NAMES.get(name, name))


ROW_EXAMPLE = {"date": "2018-01-21", "store": 10, "item": 23}
FORECAST_EXAMPLE = answers.EXAMPLE  # each answer field's example
MULE_EXAMPLE = {
    "id": 1, "pid": 4242, "state": "ready", "model_version": "v2", "heartbeat": 1795392000.5,
    "started": 1795391000.0, "jobs_done": 1520, "error": None, "heartbeat_age_s": 0.21,
}  # fmt: skip
ROLLOUT_EXAMPLE: dict[str, Any] = {"generation": 3, "in_progress": None, "refused": {}}
MLFLOW_EXAMPLE: dict[str, Any] = {
    "tracking_uri": "http://mlflow:5000", "last_success": 1795392000.2, "age_s": 4.1, "failures": 0,
    "last_error": None, "refused": {"default/mlflow:sales/4": "MLflow model 'sales' version 4: its features store item "
                                    "price are not a feature set this service knows; expected ..."},
}  # fmt: skip
MODELS_EXAMPLE = {
    "models": {
        "default": {
            "versions": ["v1", "v2", "v3"],
            "aliases": {"production": {"version": "v2", "weight": None}, "canary": {"version": "v3", "weight": 10}},
            "routes": {"production": "v2", "canary": "v3", "canary_weight": 10, "shadow": None, "shadow_weight": 0},
            "mules": {"v2": [1, 2], "v3": [1]},
            "serves": {"stores": [1, 2, 3], "items": [1, 2, 3], "first_date": "2013-01-01", "last_date": "2018-12-31",
                       "trained_through": "2017-12-31"},
        },
        "store-3": {
            "versions": ["v1"], "aliases": {"production": {"version": "v1", "weight": None}},
            "routes": {"production": "v1", "canary": None, "canary_weight": 0, "shadow": None, "shadow_weight": 0},
            "mules": {"v1": [2]},
            "serves": {"stores": [3], "items": [1, 2], "first_date": "2013-01-01", "last_date": "2018-12-31",
                       "trained_through": "2017-12-31"},
        },
    },
    "refused": {},
}  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any], **examples: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"content": {"application/json": content}}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def _error(description: str, status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    example = error_body(status, code, message, **extra)
    response = {"description": description, **_json(_ref("ErrorBody"), **{code: example})}
    if status == 503:
        response["headers"] = RETRY_AFTER
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    """The documented error answers of an operation, with one example each."""
    catalogue = {
        400: _error("The body is not JSON.", 400, "malformed_json",
                    "request body is not valid JSON: EOF while parsing"),
        401: _error("/reload needs the admin token.", 401, "unauthorized",
                    "reload needs Authorization: Bearer <FORECAST_ADMIN_TOKEN>"),
        403: _error("/reload without a token is for loopback only.", 403, "forbidden",
                    "reload is allowed from loopback only"),
        413: _error("More rows than FORECAST_MAX_BATCH_ROWS, or a body over 64 MB.", 413, "batch_too_large",
                    "a batch may have at most 50000 rows; this one has 60000"),
        414: _error("A request line over 8 KB (nginx).", 414, "uri_too_long", "request line over 8 KB"),
        415: _error("A body that is neither application/json nor text/csv.", 415, "unsupported_media_type",
                    "send JSON with Content-Type: application/json, or CSV with text/csv (got 'text/plain')"),
        422: _error("A missing or mistyped field, an impossible date, or a store, item or date unknown to the model.",
                    422, "invalid_input", "store 11 is not known to the model (known: 1-10)", field="store",
                    details=[{"field": "store", "message": "store 11 is not known to the model (known: 1-10)"}]),
        431: _error("A request header over 8 KB (nginx).", 431, "headers_too_large", "a request header over 8 KB"),
        404: _error("No model of that name in the registry.", 404, "model_not_found", "there is no model 'store-11'",
                    field="model"),
        503: _error("At capacity, not ready, or a mule failed: retry after Retry-After seconds.", 503, "overloaded",
                    "the server is at capacity; retry shortly"),
        504: _error("No prediction within FORECAST_DEADLINE_MS.", 504, "deadline_exceeded",
                    "no prediction within the deadline of 5000 ms"),
    }  # fmt: skip
    return {str(status): catalogue[status] for status in statuses}


def _predict(max_rows: int, domain: Domain | None, models: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The operation of ``/predict``, or with ``models`` (the names the pod serves) of ``/models/{name}/predict``;
    a CSV body's rows within ``domain`` when it is known."""
    named = models is not None
    batch = {"type": "array", "items": _ref("PredictRow"), "minItems": 1, "maxItems": max_rows}
    # The legacy form (no body): date, store and item as query parameters, the LegacyQuery adapter's fields.
    query = {
        "name": "row", "in": "query", "required": False, "style": "form", "explode": True,
        "schema": _ref("LegacyQuery"), "description": "Legacy form, with no body: date, store and item.",
    }  # fmt: skip
    operation: dict[str, Any] = {
        "summary": "Forecast daily unit sales",
        "description": (
            'Send one row, a list of rows, or `{"instances": [...]}` (a batch, answered in order, at most '
            f"{max_rows} rows). The legacy form of the Ray Serve clients sends no body and the three fields as "
            "query parameters (the last of a repeated one counts), and is answered as that service answered: a "
            "bare number; -1.0, -2.0 or -3.0 for a date, store or item outside the served version's guardrails; "
            "200.0 for a prediction above its max_value. A `text/csv` body (a header naming date, store, item and "
            "optionally id: Kaggle's test.csv) is a batch too, answered as JSON, or with `Accept: text/csv` as CSV "
            "(`id,sales`, the submission file; `date,store,item,sales` without an id column)."
        ),
        "parameters": [query, *([_model_name(models)] if models is not None else [])],
        "requestBody": {
            "required": True,  # or the legacy form's query parameters instead, which OpenAPI cannot say
            **_json(
                {"anyOf": [_ref("PredictRow"), batch, _ref("Instances")]},
                one_row=ROW_EXAMPLE,
                batch=[ROW_EXAMPLE, {"date": "2018-01-22", "store": 10, "item": 23}],
                instances={"instances": [ROW_EXAMPLE]},
            ),
        },
        "responses": {
            "200": {
                "description": "The forecast: an object for one row, `predictions` for a batch, a number for the "
                "legacy query form.",
                **_json(
                    {
                        "anyOf": [
                            _ref("Forecast"),
                            _ref("Forecasts"),
                            {
                                "type": "number",
                                "description": "the legacy form: a forecast; -1.0, -2.0, -3.0 outside the guardrails",
                            },
                        ]
                    },
                    one_row=FORECAST_EXAMPLE,
                    batch={"predictions": [FORECAST_EXAMPLE]},
                    legacy=72.4,
                ),
            },
            **_errors(400, *([404] if named else []), 413, 414, 415, 422, 431, 503, 504),
        },
    }
    csv = {"type": "string"} if domain is None else {"type": "string", "pattern": csv_pattern(domain)}
    operation["requestBody"]["content"]["text/csv"] = {"schema": csv, "example": CSV_EXAMPLE}
    operation["responses"]["200"]["content"]["text/csv"] = {
        "schema": {"type": "string"},
        "example": "id,sales\n0,13.58\n",
    }
    return operation


CSV_EXAMPLE = "id,date,store,item\n0,2018-01-01,1,1\n1,2018-01-02,1,1\n"


MODEL_NAME: dict[str, Any] = {
    "name": "name", "in": "path", "required": True, "description": "The model's name in the registry.",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
}  # fmt: skip


def _model_name(models: tuple[str, ...]) -> dict[str, Any]:
    """The path parameter ``name``: one of the models the pod serves (404 for a name the registry does not have)."""
    if not models:
        return MODEL_NAME
    return {**MODEL_NAME, "schema": {**MODEL_NAME["schema"], "enum": list(models)}}


def date_pattern(first: dt.date, last: dt.date) -> str:
    """A regular expression matching the ISO dates from ``first`` to ``last`` and no other string.

    JSON Schema cannot bound a date (``format: date`` has no minimum), so the document states the range
    this way, one alternative per month.
    """
    return f"^{_dates(first, last)}$"


def _dates(first: dt.date, last: dt.date) -> str:
    """:func:`date_pattern` without its anchors."""
    years: dict[int, list[str]] = {}
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        low = first.day if (year, month) == (first.year, first.month) else 1
        high = last.day if (year, month) == (last.year, last.month) else calendar.monthrange(year, month)[1]
        years.setdefault(year, []).append(f"{month:02d}-(?:{_two_digits(low, high)})")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return "(?:" + "|".join(f"{year:04d}-(?:{'|'.join(months)})" for year, months in years.items()) + ")"


def _two_digits(low: int, high: int) -> str:
    """A regular expression matching the two-digit numbers from ``low`` to ``high`` (``01`` to ``31``)."""
    tens = []
    for ten in range(low // 10, high // 10 + 1):
        first, last = max(low, 10 * ten) % 10, min(high, 10 * ten + 9) % 10
        tens.append(f"{ten}{first}" if first == last else f"{ten}[{first}-{last}]")
    return "|".join(tens)


def csv_pattern(domain: Domain) -> str:
    """A regular expression matching the CSV bodies of rows within ``domain``, with Kaggle's header or without
    its ``id`` column (the server reads any order of the columns too, and ``\\r\\n`` line ends, blank lines)."""
    row = f"{_dates(domain.first_date, domain.last_date)},{_one_of(domain.stores)},{_one_of(domain.items)}\n"
    return f"^(?:id,date,store,item\n(?:[0-9]{{1,9}},{row})+|date,store,item\n(?:{row})+)$"


def _one_of(values: frozenset[int]) -> str:
    return "(?:" + "|".join(str(value) for value in sorted(values, reverse=True)) + ")"


def _ids(values: frozenset[int], what: str) -> dict[str, Any]:
    """An id property bounded to ``values``: a range when they have no gap, else the list."""
    low, high = min(values), max(values)
    if len(values) == high - low + 1:
        return {"type": "integer", "minimum": low, "maximum": high, "description": f"{what} id, {low}-{high}."}
    return {"type": "integer", "enum": sorted(values), "description": f"{what} id: one the model knows."}


def _bound_rows(definitions: dict[str, Any], domain: Domain) -> None:
    """A row's fields, a forecast's series and start, as the served versions know them (what check_domain and
    check_horizon enforce), in place."""
    row = definitions["PredictRow"]["properties"]
    series = definitions["SeriesRef"]["properties"]
    row["store"] = series["store"] = _ids(domain.stores, "Store")
    row["item"] = series["item"] = _ids(domain.items, "Item")
    row["date"] = _day(domain)
    definitions["ForecastBody"]["properties"]["start"] = {"anyOf": [_day(domain), {"type": "null"}]}


def _day(domain: Domain) -> dict[str, Any]:
    """A date property bounded to the served versions' range."""
    return {
        "type": "string", "pattern": date_pattern(domain.first_date, domain.last_date),
        "description": f"A day from {domain.first_date} to {domain.last_date} (the served version's range), "
                       "YYYY-MM-DD.",
    }  # fmt: skip


# -- the operations, one per endpoint (app/views.py ENDPOINTS names each at its route) ----------------------------


def index_operation(served: Served) -> dict[str, Any]:
    return {
        "summary": "The service, the model version it serves, and its endpoints",
        "responses": {"200": {"description": "Service index.", **_json(_ref("ServiceIndex"), index={
            "service": "store-item sales forecast", "message": "Sales Forecast Model is ready!",
            "model_version": "v2", "endpoints": {"predict": "POST /predict"}})}},
    }  # fmt: skip


def status_operation(served: Served) -> dict[str, Any]:
    return {
        "summary": "Ready when every mule has a model loaded (for load balancers and health checks)",
        "responses": {
            "200": {"description": "Every mule serves a model.", **_json(_ref("Status"), ready={
                "status": "Alive", "ready": True, "model_version": "v2", "mules": [MULE_EXAMPLE],
                "rollout": ROLLOUT_EXAMPLE, "mlflow": MLFLOW_EXAMPLE})},
            "503": {
                "description": "Some mule has no model (starting, loading, failed or stale).",
                "headers": RETRY_AFTER,
                **_json(_ref("NotReady"), not_ready={
                    **error_body(503, "not_ready", "not every mule has a model loaded"), "ready": False,
                    "model_version": "v2", "mules": [{"id": 2, "state": "loading", "heartbeat_age_s": 0.4}],
                    "rollout": None, "mlflow": None}),
            },
        },
    }  # fmt: skip


def reload_operation(served: Served) -> dict[str, Any]:
    return {
        "summary": "Load the registry's production model into every mule, one at a time",
        "description": "The other mules keep serving meanwhile. A version that fails to load or verify is refused "
        "(422) and the old one keeps serving. Needs `Authorization: Bearer <token>` when FORECAST_ADMIN_TOKEN is "
        "set, else is allowed from loopback only.",
        "responses": {
            "200": {"description": "Every mule serves the new version.", **_json(_ref("Reloaded"), reloaded={
                "model_version": "v3", "mules": [{**MULE_EXAMPLE, "model_version": "v3"}]})},
            **_errors(401, 403),
            "422": _error("The production version cannot be served.", 422, "reload_refused",
                          "mule 1 refused version v3: version v3: model.txt does not match its checksum"),
            **_errors(503, 504),
        },
    }  # fmt: skip


def predict_operation(served: Served) -> dict[str, Any]:
    return _predict(served.settings.max_batch_rows, served.domain)


def named_predict_operation(served: Served) -> dict[str, Any]:
    return {
        **_predict(served.settings.max_batch_rows, served.domain, served.models),
        "summary": "Forecast daily unit sales with a named model (every form /predict takes)",
    }


HORIZON_EXAMPLE = {
    "model": "default", "model_version": "v3", "granularity": "week", "totals": None,
    "intervals": {"method": "split conformal on |log1p(actual) - log1p(forecast)|, rolling-origin backtest",
                  "levels": ["80", "95"]},
    "forecasts": [{"date": "2018-01-01", "days": 7, "store": 3, "item": 23, "sales": 218.4,
                   "lower": {"80": 197.1, "95": 186.9}, "upper": {"80": 241.9, "95": 254.8}}],
}  # fmt: skip
HORIZON_CSV_EXAMPLE = "date,days,store,item,sales,lower_80,upper_80,lower_95,upper_95\n" \
                      "2018-01-01,7,3,23,218.4,197.1,241.9,186.9,254.8\n"  # fmt: skip


def _horizon(summary: str, max_rows: int, request: dict[str, Any], models: tuple[str, ...] | None) -> dict[str, Any]:
    """A ``/forecast`` operation: ``request`` is its body or its parameters."""
    operation = {
        "summary": summary,
        "description": "Every series asked (all the model knows when none is), `days` days from `start` (the day "
        "after the version's training data when omitted), by day or ISO week (Monday to Sunday, clipped to the "
        "range), per series or summed into store, item or chain totals, each with its bands: split-conformal "
        "intervals calibrated when the version was trained, on the errors of rows of the same kind and horizon. "
        f"Daily values are exactly what /predict answers; weeks and totals are their sums. At most {max_rows} "
        f"daily rows (series x days), {MAX_EXPLAINED_ROWS} explained ones. `Accept: text/csv` answers CSV.",
        **request,
        "responses": {
            "200": {"description": "The forecasts, series by series, date by date.",
                    "content": {"application/json": {"schema": _ref("HorizonForecasts"),
                                                     "examples": {"weekly": {"value": HORIZON_EXAMPLE}}},
                                "text/csv": {"schema": {"type": "string"}, "example": HORIZON_CSV_EXAMPLE}}},
            # a query form's request line can outgrow nginx's 8 KB
            **_errors(400, 413, *((414,) if "parameters" in request else ()), 415, 422,
                      *((404,) if models is not None else ()), 503, 504),
        },
    }  # fmt: skip
    if models is not None:
        operation["parameters"] = [_model_name(models), *operation.get("parameters", [])]
    return operation


def _horizon_body() -> dict[str, Any]:
    example = {"series": [{"store": 3, "item": 23}], "start": "2018-01-01", "days": 91, "granularity": "week",
               "totals": None, "level": [80, 95], "explain": False}  # fmt: skip
    return {"requestBody": {"required": False, **_json(_ref("ForecastBody"), weekly=example)}}


def _horizon_query(domain: Domain | None) -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    any_id = {"type": "integer", "minimum": 1, "maximum": schemas.ID_MAX}
    stores, items = (_ids(domain.stores, "Store"), _ids(domain.items, "Item")) if domain else (any_id, any_id)
    start = _day(domain) if domain else {"type": "string", "format": "date"}
    return {"parameters": [
        query("store", stores, "One store (every store the model knows when absent)."),
        query("item", items, "One item (every item the model knows when absent)."),
        query("start", start, "First day (default: after the training data)."),
        query("days", {"type": "integer", "minimum": 1, "maximum": schemas.MAX_FORECAST_DAYS}, "Days (default 28)."),
        query("granularity", {"enum": ["day", "week"]}, "By day (default) or ISO week."),
        query("totals", {"enum": ["store", "item", "all"]}, "Sum over items, stores, or both."),
        query("level", {"type": "array", "maxItems": schemas.MAX_LEVELS,
                        "items": {"type": "number", "exclusiveMinimum": 50, "exclusiveMaximum": 99.9}},
              "Bands in percent, repeated (`level=80&level=95`) or comma-separated (default 80,95; empty: none)."),
        query("explain", {"type": "boolean"}, "Each daily forecast's factors."),
    ]}  # fmt: skip


def forecast_operation(served: Served) -> dict[str, Any]:
    return _horizon("Forecast the next days or weeks of series or totals, with bands", served.settings.max_batch_rows,
                    _horizon_body(), None)  # fmt: skip


def forecast_query_operation(served: Served) -> dict[str, Any]:
    return _horizon("The horizon forecast from a query string (browsers, spreadsheets)",
                    served.settings.max_batch_rows, _horizon_query(served.domain), None)  # fmt: skip


def named_forecast_operation(served: Served) -> dict[str, Any]:
    return _horizon("Forecast a horizon with a named model", served.settings.max_batch_rows, _horizon_body(),
                    served.models)  # fmt: skip


def named_forecast_query_operation(served: Served) -> dict[str, Any]:
    return _horizon("The horizon forecast of a named model from a query string", served.settings.max_batch_rows,
                    _horizon_query(served.domain), served.models)  # fmt: skip


def actuals_operation(served: Served) -> dict[str, Any]:
    csv = "date,store,item,sales\n2018-01-01,1,1,13\n2018-01-02,1,1,11\n"
    return {
        "summary": "Store actual sales: a date,store,item,sales CSV (any column order) or JSON rows",
        "description": "A row for a (date, store, item) already stored replaces its sales: loading the same rows "
        "twice changes nothing. A bad line refuses the whole request, naming the line and field, and nothing is "
        "stored. Needs `Authorization: Bearer <token>` when FORECAST_ADMIN_TOKEN is set, else loopback only.",
        "requestBody": {"required": True, "content": {
            "text/csv": {"schema": {"type": "string"}, "example": csv},
            "application/json": {"schema": {"type": "array", "minItems": 1, "items": _ref("ActualRow")},
                                 "example": [{"date": "2018-01-01", "store": 1, "item": 1, "sales": 13}]}}},
        "responses": {
            "200": {"description": "Stored.", **_json(_ref("ActualsLoaded"), loaded={
                "added": 2, "replaced": 0, "unchanged": 0})},
            **_errors(400, 401, 403, 415),
            "422": _error("A bad line: nothing was stored.", 422, "invalid_input",
                          "line 7.sales: '-3' is not a number of units sold (a whole number, 0 or more)",
                          field="line 7.sales"),
            **_errors(503),
        },
    }  # fmt: skip


def actuals_read_operation(served: Served) -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    day = {"type": "string", "format": "date"}
    stored = {
        "start": "2018-01-01",
        "end": "2018-01-02",
        "source": "actuals",
        "actuals": [
            {"date": "2018-01-01", "store": 3, "item": 23, "sales": 31},
            {"date": "2018-01-02", "store": 3, "item": 23, "sales": 27},
        ],
    }
    return {
        "summary": "The stored actual sales of a window: a series, a store, an item or all",
        "description": "By store, item and date; by default the last 56 days with actuals (at most 366). With nothing "
        "stored yet, the last 56 days of the model's production version's training data (`source` says which). "
        "What the planner page (/ui) draws beside the forecast.",
        "parameters": [
            query("model", {"type": "string", "enum": list(served.models) or ["default"]},
                  "Whose training data answers while nothing is stored (default)."),
            query("start", day, "First day (default: 55 days before the end)."),
            query("end", day, "Last day (default: the last day with actuals)."),
            query("store", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, "Only this store."),
            query("item", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, "Only this item."),
        ],
        "responses": {
            "200": {"description": "The rows.", **_json(_ref("StoredActuals"), stored=stored)},
            **_errors(404, 414),
            "422": _error("A parameter it cannot read.", 422, "invalid_input",
                          "store: a whole number from 0 to 2147483647 (got 'x')", field="store"),
            **_errors(503),
        },
    }  # fmt: skip


ACCURACY_EXAMPLE = {
    "model": "default", "start": "2017-12-04", "end": "2017-12-31", "granularity": "day", "by": None,
    "versions": [{"version": "v3", "aliases": ["production"], "rows": 14000, "smape": 12.91, "mae": 4.12,
                  "bias": -0.31, "coverage": {"80": 0.81, "95": 0.95},
                  "baseline": {"rows": 14000, "smape": 18.04, "mae": 5.93, "bias": 0.42}}],
}  # fmt: skip


def accuracy_operation(served: Served) -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    day = {"type": "string", "format": "date"}
    return {
        "summary": "How each served version's forecasts did against the stored actuals, beside a seasonal-naive "
        "baseline",
        "description": "SMAPE (Kaggle's), MAE, bias (mean of forecast - actual) and the share of actuals inside "
        "each band, per version (production, canary, shadow and any asked for), over a window of days (default: "
        "the last 28 days with actuals), and the same for the seasonal-naive forecast (same store, item and "
        "weekday 364 days earlier). Scored in the mules' spare time; kept until new actuals arrive for the window.",
        "parameters": [
            query("model", {"type": "string", "enum": list(served.models) or ["default"]}, "The model (default)."),
            query("start", day, "First day of the window (default: 27 days before its end)."),
            query("end", day, "Last day of the window (default: the last day with actuals)."),
            query("granularity", {"enum": ["day", "week"]}, "Days, or complete ISO weeks as weekly sums."),
            query("by", {"enum": ["store", "item"]}, "A breakdown by store or item beside the whole."),
            query("version", {"type": "string", "pattern": r"^v[0-9]+$"}, "Another version to judge (repeatable)."),
        ],
        "responses": {
            "200": {"description": "Each version's scores.", **_json(_ref("Accuracy"), accuracy=ACCURACY_EXAMPLE)},
            **_errors(404, 414),
            "422": _error("A parameter it cannot read.", 422, "invalid_input", "by: store or item (got 'day')",
                          field="by"),
            **_errors(503, 504),
        },
    }  # fmt: skip


def models_operation(served: Served) -> dict[str, Any]:
    return {
        "summary": "Every model: its versions and aliases, this pod's routes, which mules hold which version",
        "responses": {"200": {"description": "The models.", **_json(_ref("Models"), models=MODELS_EXAMPLE)}},
    }


def metrics_operation(served: Served) -> dict[str, Any]:
    return {
        "summary": "Prometheus metrics of every web worker and mule",
        "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {
            "schema": {"type": "string"},
            "example": "# HELP forecast_mule_up 1 when the mule has a model and a fresh heartbeat.\n"
                       "# TYPE forecast_mule_up gauge\nforecast_mule_up{mule=\"1\"} 1.0\n"}}}},
    }  # fmt: skip


def _paths(endpoints: Sequence[Endpoint], served: Served) -> dict[str, dict[str, Any]]:
    """Each endpoint's operation at its path, under each of its methods (one object for all of them)."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        if endpoint.operation is not None:
            operation = endpoint.operation(served)
            paths.setdefault(endpoint.path, {}).update({method.lower(): operation for method in endpoint.methods})
    return paths


def build(
    endpoints: Sequence[Endpoint], settings: Settings, domain: Domain | None = None, models: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The whole document as a dict (JSON-ready): the ``endpoints``' operations, rows bounded to ``domain`` (what
    the served versions know), ``/models/{name}/predict`` to the ``models`` served; without them, what the wire
    schemas alone say."""
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.1.0",
        info={
            "description": "Daily unit sales of an item in a store, forecast by LightGBM (Kaggle's Store Item "
            "Demand Forecasting schema), served by nginx + uWSGI mules. Every error answer has the `ErrorBody` "
            "shape; every answer carries `X-Request-ID`."
        },
    )
    _, definitions = TypeAdapter.json_schemas(
        [(name, "validation", adapter) for name, adapter in _ADAPTERS.items()],
        ref_template=_REF,
        schema_generator=_ComponentNames,
    )
    definitions["$defs"]["LegacyQuery"]["properties"]["date"] = {
        "type": "string", "format": "date",
        "description": "A day, YYYY-MM-DD (parsed as the original did: 2018-1-5 too); outside the served version's "
                       "range the answer is -1.0.",
    }  # fmt: skip
    # a batch has 1 to max_batch_rows rows, however it comes (app/predict.py _batch: 422, or 413 past the limit)
    definitions["$defs"]["Instances"]["properties"]["instances"].update(minItems=1, maxItems=settings.max_batch_rows)
    if domain is not None:
        _bound_rows(definitions["$defs"], domain)
    for name, schema in definitions["$defs"].items():
        spec.components.schema(name, schema)
    for path, operations in _paths(endpoints, Served(settings, domain, models)).items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
