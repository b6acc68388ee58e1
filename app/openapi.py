"""The OpenAPI 3.1 document of the service, built from the schema objects the views use.

Request schemas are the pydantic adapters that validate requests
(:mod:`app.schemas`); answer schemas are the typed dicts the views return.
pydantic turns both into JSON Schema and ``apispec`` assembles the document:
paths, parameters, and an example of every answer and of every error, made
with the same :func:`app.errors.error_body` the error handlers use.  Built once
per worker, at the first ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from pydantic import TypeAdapter

from app import legacy, schemas
from app.errors import error_body
from serving.settings import Settings

TITLE = "Store-item sales forecast"
VERSION = "1.0.0"
_REF = "#/components/schemas/{model}"

# Every component, from the objects the app validates with or answers in.
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "PredictRow": schemas.ROW,
    "LegacyQuery": legacy.LEGACY_QUERY,
    "Instances": TypeAdapter(schemas.Instances),
    "Forecast": TypeAdapter(schemas.Forecast),
    "Forecasts": TypeAdapter(schemas.Forecasts),
    "ErrorBody": TypeAdapter(schemas.ErrorBody),
    "MuleState": TypeAdapter(schemas.MuleState),
    "Status": TypeAdapter(schemas.Status),
    "NotReady": TypeAdapter(schemas.NotReady),
    "Reloaded": TypeAdapter(schemas.Reloaded),
    "Models": TypeAdapter(schemas.Models),
    "ServiceIndex": TypeAdapter(schemas.ServiceIndex),
}

ROW_EXAMPLE = {"date": "2018-01-21", "store": 10, "item": 23}
FORECAST_EXAMPLE = {**ROW_EXAMPLE, "sales": 72.4, "model_version": "v2"}
MULE_EXAMPLE = {
    "id": 1, "pid": 4242, "state": "ready", "model_version": "v2", "heartbeat": 1795392000.5,
    "started": 1795391000.0, "jobs_done": 1520, "error": None, "heartbeat_age_s": 0.21,
}  # fmt: skip
ROLLOUT_EXAMPLE: dict[str, Any] = {"generation": 3, "in_progress": None, "refused": {}}
MODELS_EXAMPLE = {
    "models": {
        "default": {
            "versions": ["v1", "v2", "v3"],
            "aliases": {"production": {"version": "v2", "weight": None}, "canary": {"version": "v3", "weight": 10}},
            "routes": {"production": "v2", "canary": "v3", "canary_weight": 10, "shadow": None, "shadow_weight": 0},
            "mules": {"v2": [1, 2], "v3": [1]},
        },
        "store-3": {
            "versions": ["v1"], "aliases": {"production": {"version": "v1", "weight": None}},
            "routes": {"production": "v1", "canary": None, "canary_weight": 0, "shadow": None, "shadow_weight": 0},
            "mules": {"v1": [2]},
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


def _predict(max_rows: int, named: bool = False) -> dict[str, Any]:
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
        "parameters": [query, *([MODEL_NAME] if named else [])],
        "requestBody": {
            "required": False,
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
    operation["requestBody"]["content"]["text/csv"] = {"schema": {"type": "string"}, "example": CSV_EXAMPLE}
    operation["responses"]["200"]["content"]["text/csv"] = {
        "schema": {"type": "string"},
        "example": "id,sales\n0,13.58\n",
    }
    return operation


CSV_EXAMPLE = "id,date,store,item\n0,2018-01-01,1,1\n1,2018-01-02,1,1\n"


MODEL_NAME = {
    "name": "name", "in": "path", "required": True, "description": "The model's name in the registry.",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
}  # fmt: skip


def _paths(settings: Settings) -> dict[str, dict[str, Any]]:
    reload = {
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
    return {
        "/": {"get": {
            "summary": "The service, the model version it serves, and its endpoints",
            "responses": {"200": {"description": "Service index.", **_json(_ref("ServiceIndex"), index={
                "service": "store-item sales forecast", "message": "Sales Forecast Model is ready!",
                "model_version": "v2", "endpoints": {"predict": "POST /predict"}})}},
        }},
        "/status": {"get": {
            "summary": "Ready when every mule has a model loaded (for load balancers and health checks)",
            "responses": {
                "200": {"description": "Every mule serves a model.", **_json(_ref("Status"), ready={
                    "status": "Alive", "ready": True, "model_version": "v2", "mules": [MULE_EXAMPLE],
                    "rollout": ROLLOUT_EXAMPLE})},
                "503": {
                    "description": "Some mule has no model (starting, loading, failed or stale).",
                    "headers": RETRY_AFTER,
                    **_json(_ref("NotReady"), not_ready={
                        **error_body(503, "not_ready", "not every mule has a model loaded"), "ready": False,
                        "model_version": "v2", "mules": [{"id": 2, "state": "loading", "heartbeat_age_s": 0.4}],
                        "rollout": None}),
                },
            },
        }},
        "/reload": {"get": reload, "post": reload},
        "/predict": {"post": _predict(settings.max_batch_rows)},
        "/models": {"get": {
            "summary": "Every model: its versions and aliases, this pod's routes, which mules hold which version",
            "responses": {"200": {"description": "The models.", **_json(_ref("Models"), models=MODELS_EXAMPLE)}},
        }},
        "/models/{name}/predict": {"post": {
            **_predict(settings.max_batch_rows, named=True),
            "summary": "Forecast daily unit sales with a named model (every form /predict takes)",
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics of every web worker and mule",
            "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {
                "schema": {"type": "string"},
                "example": "# HELP forecast_mule_up 1 when the mule has a model and a fresh heartbeat.\n"
                           "# TYPE forecast_mule_up gauge\nforecast_mule_up{mule=\"1\"} 1.0\n"}}}},
        }},
    }  # fmt: skip


def build(settings: Settings) -> dict[str, Any]:
    """The whole document as a dict (JSON-ready)."""
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
        [(name, "validation", adapter) for name, adapter in _ADAPTERS.items()], ref_template=_REF
    )
    for name, schema in definitions["$defs"].items():
        spec.components.schema(name, schema)
    for path, operations in _paths(settings).items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
