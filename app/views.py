"""The HTTP endpoints: ``/``, ``/status``, ``/reload``, ``/predict``, ``/forecast``, ``/actuals``, ``/accuracy``,
``/models``, ``/metrics`` and the API docs.

Thin: each view adapts Flask's request to the service (:mod:`app.service`) or, for
``/predict``, to its use case (:mod:`app.predict`), which the fast lane calls too.
:data:`ENDPOINTS`, at the end, declares each one's route, operation and index entry once
(:mod:`app.endpoints`).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, redirect, request, send_file, send_from_directory
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wsgi import get_current_url

from app import exposition, openapi
from app.accuracy import ROUTE as ACCURACY_ROUTE
from app.domain import Domain, span
from app.encoding import json_exact
from app.endpoints import Endpoint
from app.errors import Forbidden, Unauthorized
from app.forecasting import NAMED_ROUTE as NAMED_HORIZON_ROUTE
from app.forecasting import ROUTE as HORIZON_ROUTE
from app.forecasting import ForecastRequest
from app.legacy_answers import INDEX_ANSWER, RELOAD_ANSWER, STATUS_ANSWER
from app.predict import NAMED_ROUTE, ROUTE, PredictRequest, read_body
from app.service import ForecastService
from app.services import services
from app.ui import PAGE as UI_PAGE
from app.ui import STATIC as UI_STATIC
from forecast.registry import DEFAULT_MODEL
from serving.processes import release_freed_memory
from serving.settings import Settings

bp = Blueprint("forecast", __name__)

SERVICE_NAME = "store-item sales forecast"


def service() -> ForecastService:
    return services().forecast


def index() -> ResponseReturnValue:
    if service().settings.legacy_answers:
        return legacy_answer(INDEX_ANSWER)
    return {
        "service": SERVICE_NAME,
        "message": "Sales Forecast Model is ready!",
        "model_version": service().served_version(),
        "endpoints": {endpoint.view.__name__: endpoint.index_entry() for endpoint in ENDPOINTS if endpoint.in_index},
    }


def status() -> ResponseReturnValue:
    """200 when every mule serves; else the error handler answers :class:`app.errors.NotReady` (503)."""
    body = service().status()
    return legacy_answer(STATUS_ANSWER) if service().settings.legacy_answers else {"status": "Alive", **body}


def docs() -> ResponseReturnValue:
    """Swagger UI lives at /docs/ (app/__init__.py); a relative redirect keeps the client's host and port."""
    return redirect("/docs/", 308)


def openapi_document() -> Response:
    """The document for the versions served now: their stores, items and dates (app/openapi.py)."""
    svc = service()
    domains = svc.served_domains()
    return jsonify(_document(svc.settings, span(domains.values()), tuple(sorted(domains))))


@functools.lru_cache(maxsize=8)  # a new one when the served versions change
def _document(settings: Settings, domain: Domain | None, models: tuple[str, ...]) -> dict[str, Any]:
    return openapi.build(ENDPOINTS, settings, domain, models)


def prometheus_metrics() -> Response:
    found = services()
    if found.metrics is not None:
        found.metrics.flush()  # this worker's latest requests; the other workers' are at most a flush interval old
    return Response(exposition.render(found.pool, found.settings), content_type=exposition.CONTENT_TYPE)


def reload() -> ResponseReturnValue:
    _authorize_admin("reload")
    body = service().reload()
    return legacy_answer(RELOAD_ANSWER) if service().settings.legacy_answers else body


@bp.before_app_request
def without_trailing_slash() -> ResponseReturnValue | None:
    """A route's path with a trailing slash (``/predict/``, ``/models/default/predict/``): 307 to the route's
    absolute URL (``http://host:port/predict?...``), method, body and query kept, as FastAPI (Starlette) did.

    Derived from the routes (Flask's URL map): a path no route takes that one does without its trailing
    slashes, whatever the method (the route then answers 405 for a method it does not take, as Starlette's
    did).  A hook, not a route: a route ``/predict/`` would make Werkzeug redirect ``/predict`` to it.  The
    host and port are the client's, as nginx passes them (``$forecast_host`` in nginx.conf).
    """
    if not isinstance(request.routing_exception, NotFound) or not request.path.endswith("/"):
        return None
    path = request.path.rstrip("/")
    adapter = current_app.create_url_adapter(request)
    if not path or adapter is None:
        return None
    try:
        adapter.match(path, request.method)
    except MethodNotAllowed:
        pass  # the route is there: the client learns its methods from it
    except HTTPException:  # none takes it either (404)
        return None
    return Response(status=307, headers={"Location": get_current_url({**request.environ, "PATH_INFO": path})})


def legacy_answer(text: str) -> Response:
    """The Ray Serve service's body for this endpoint, byte for byte: a JSON string (FORECAST_LEGACY_ANSWERS)."""
    return Response(json_exact(text), mimetype="application/json")


def models() -> dict[str, Any]:
    """Each model, its versions and aliases, what this pod routes to, and which mules hold which version."""
    return service().models()


def predict(name: str = DEFAULT_MODEL) -> Response:
    """The Flask adapter of the use case (app/predict.py); the fast lane answers most requests first."""
    length = request.content_length
    body = request.get_data(cache=False) if length is None else read_body(request.input_stream, length)
    rule = request.url_rule.rule if request.url_rule is not None else ROUTE  # what the metrics label it
    parts = PredictRequest.from_environ(request.environ, name, rule, body)
    answer = services().predict.answer(parts)
    g.report = answer.report
    body_or_stream = answer.stream if answer.stream is not None else answer.body
    response = Response(body_or_stream, answer.status, answer.headers, content_type=answer.content_type)
    if parts.large:
        response.call_on_close(release_freed_memory)  # after the body is sent and closed
    return response


def actuals() -> ResponseReturnValue:
    """Actual sales in (app/actuals.py), for the admin: the token, or loopback without one."""
    _authorize_admin("actuals")
    return services().actuals.load(request.content_type or "", request.get_data(cache=False))


def actuals_read() -> ResponseReturnValue:
    """The stored actual sales of a window (app/actuals.py): what the planner page draws beside the forecast."""
    return services().actuals.history(request.query_string.decode("latin-1"))


def ui() -> ResponseReturnValue:
    """The planner page (app/ui): what it shows, its script fetches from the API."""
    return send_file(UI_PAGE, mimetype="text/html")


def ui_asset(asset: str) -> ResponseReturnValue:
    """The page's script, style and chart library (app/ui/static; a missing one is a 404)."""
    return send_from_directory(UI_STATIC, asset)


def accuracy() -> ResponseReturnValue:
    """Realised accuracy of the served versions against the stored actuals (app/accuracy.py)."""
    return services().accuracy.answer(request.query_string.decode("latin-1"))


def forecast(name: str = DEFAULT_MODEL) -> Response:
    """The Flask adapter of the horizon use case (app/forecasting.py): GET with a query, POST with a JSON body."""
    rule = request.url_rule.rule if request.url_rule is not None else HORIZON_ROUTE
    parts = ForecastRequest.from_environ(request.environ, name, rule, request.get_data(cache=False))
    answer = services().horizon.answer(parts)
    g.report = answer.report
    body_or_stream = answer.stream if answer.stream is not None else answer.body
    return Response(body_or_stream, answer.status, answer.headers, content_type=answer.content_type)


def _authorize_admin(endpoint: str) -> None:
    token = service().settings.admin_token
    if token is not None:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.get_secret_value().encode()):
            raise Unauthorized(f"{endpoint} needs Authorization: Bearer <FORECAST_ADMIN_TOKEN>")
        return
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden(f"{endpoint} is allowed from loopback only (set FORECAST_ADMIN_TOKEN to allow it remotely)")


# Every endpoint, once: its rule and methods (the blueprint's routes, hence the trailing-slash redirects), its
# OpenAPI operation (the document's paths, in this order) and its line in GET /'s index.
ENDPOINTS = (
    Endpoint("/", ("GET",), index, openapi.index_operation),
    Endpoint("/status", ("GET",), status, openapi.status_operation, in_index=True),
    Endpoint("/reload", ("GET", "POST"), reload, openapi.reload_operation, in_index=True),
    Endpoint(ROUTE, ("POST",), predict, openapi.predict_operation, in_index=True,
             example='{"date": "2018-01-21", "store": 10, "item": 23}'),
    Endpoint(HORIZON_ROUTE, ("POST",), forecast, openapi.forecast_operation, in_index=True,
             example='{"series": [{"store": 3, "item": 23}], "days": 28, "granularity": "week"}'),
    Endpoint(HORIZON_ROUTE, ("GET",), forecast, openapi.forecast_query_operation),
    Endpoint("/actuals", ("POST",), actuals, openapi.actuals_operation, in_index=True,
             example="date,store,item,sales CSV (text/csv)"),
    Endpoint("/actuals", ("GET",), actuals_read, openapi.actuals_read_operation),
    Endpoint(ACCURACY_ROUTE, ("GET",), accuracy, openapi.accuracy_operation, in_index=True,
             example="?model=default&start=2017-12-01&end=2017-12-28"),
    Endpoint("/models", ("GET",), models, openapi.models_operation),
    Endpoint(NAMED_ROUTE, ("POST",), predict, openapi.named_predict_operation),
    Endpoint(NAMED_HORIZON_ROUTE, ("POST",), forecast, openapi.named_forecast_operation),
    Endpoint(NAMED_HORIZON_ROUTE, ("GET",), forecast, openapi.named_forecast_query_operation),
    Endpoint("/metrics", ("GET",), prometheus_metrics, openapi.metrics_operation),
    Endpoint("/docs", ("GET",), docs, None),  # the redirect to Swagger UI, which shows the document
    Endpoint("/openapi.json", ("GET",), openapi_document, None),  # the document itself
    Endpoint("/ui", ("GET",), ui, None, in_index=True),  # the planner page, a client of the API
    Endpoint("/ui/<path:asset>", ("GET",), ui_asset, None),  # its files
)  # fmt: skip


def register(endpoints: tuple[Endpoint, ...]) -> None:
    """Each endpoint's rule onto the blueprint, with its view and methods (Flask adds HEAD and OPTIONS)."""
    for endpoint in endpoints:
        bp.add_url_rule(endpoint.rule, view_func=endpoint.view, methods=endpoint.methods)


register(ENDPOINTS)
