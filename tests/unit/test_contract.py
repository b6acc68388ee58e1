"""The contract's edges as logic: trailing-slash 307s, one route label for both adapters, the document's bounds.

The stack tier (tests/stack/test_contract.py) drives the same through nginx and schemathesis.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import jsonschema
import pytest
from werkzeug.test import Client

from app import ForecastFlask, add_routes, errors, openapi
from app.access import Report
from app.domain import Domain, span
from app.fastlane import FastLane
from app.predict import NAMED_ROUTE, ROUTE
from app.services import EXTENSION, services_of
from app.telemetry import init_app
from app.views import ENDPOINTS
from forecast.registry import DEFAULT_MODEL, Registry
from serving.settings import Settings
from tests.unit.test_predict import ROW, StandInMules, make_app

HOST = "http://forecast.example:8080"


def routes_client() -> Any:
    app = ForecastFlask("app")
    errors.init_app(app, Settings().retry_after_s)
    add_routes(app)
    return app, app.test_client()


def slashed_paths() -> list[tuple[str, str]]:
    """(method, path) of every route whose path with a slash is no route's, its arguments filled in."""
    app, _ = routes_client()
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", DEFAULT_MODEL, rule.rule)
        if not path.endswith("/") and not adapter.allowed_methods(path + "/"):
            found += [(method, path) for method in sorted(rule.methods or ())]
    return found


@pytest.mark.parametrize(("method", "path"), slashed_paths())
def test_a_route_with_a_trailing_slash_is_a_307_to_its_absolute_url(method: str, path: str) -> None:
    _, client = routes_client()
    response = client.open(f"{path}/?a=1&b=%C3%A9", method=method, base_url=HOST, data=b"{}")
    assert (response.status_code, response.headers["Location"]) == (307, f"{HOST}{path}?a=1&b=%C3%A9")


def declared_paths(*, but: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """(method, path) of every declared endpoint (app/views.py ENDPOINTS) but ``but``, its arguments filled in."""
    return {(method, re.sub(r"<(?:[^:>]+:)?([^>]+)>", DEFAULT_MODEL, endpoint.rule))
            for endpoint in ENDPOINTS if endpoint.rule not in but for method in endpoint.methods}  # fmt: skip


def test_the_slash_forms_cover_every_declared_endpoint() -> None:
    """All but ``/`` (its own slashed form), /docs (whose slashed form is Swagger UI's page itself) and the planner
    page's files (a path converter takes the slash as part of the file name)."""
    assert declared_paths(but=("/", "/docs", "/ui/<path:asset>")) <= set(slashed_paths())


# Served, and not operations of the API: the document itself, the redirect to its UI and the planner page with
# its files (declared with no operation in ENDPOINTS), and what packages add: Swagger UI's page and files
# (flask-swagger-ui's blueprint, /docs/ and /docs/<path>) and Flask's static route (Flask adds it to every app).
NOT_OPERATIONS = frozenset({"/openapi.json", "/docs", "/ui", "/ui/<path:asset>"})
ADDED_BY_PACKAGES = ("static", "swagger_ui.")  # their endpoints' names start so


def served_operations() -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app serves, but those above; HEAD and OPTIONS aside (Flask adds
    them to every route: HEAD answers as GET without the body, OPTIONS lists Allow)."""
    app, _ = routes_client()
    return {(method.lower(), re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule))
            for rule in app.url_map.iter_rules()
            if rule.rule not in NOT_OPERATIONS and not rule.endpoint.startswith(ADDED_BY_PACKAGES)
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}  # fmt: skip


DOMAIN = Domain(frozenset(range(1, 11)), frozenset(range(1, 51)), dt.date(2015, 1, 1), dt.date(2017, 3, 15))


@pytest.mark.parametrize("domain", [None, DOMAIN])
def test_the_document_names_every_served_route_and_no_other(domain: Domain | None) -> None:
    """A route added without its operation, or an operation left when its route went, fails here."""
    document = openapi.build(ENDPOINTS, Settings(), domain, (DEFAULT_MODEL,))
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert documented == served_operations()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/nope/", 404), ("/models/default/nope/", 404), ("/predict//", 307), ("/", 200), ("/docs/", 200)],
)
def test_only_a_route_s_path_is_redirected(path: str, status: int) -> None:
    """A path no route takes, with or without its slashes, stays 404; one a route takes as it is is answered."""
    app, client = routes_client()
    app.extensions[EXTENSION] = None  # GET / needs the service: stood in below
    app.view_functions["forecast.index"] = lambda: {"index": True}
    response = client.get(path, base_url=HOST)
    assert response.status_code == status
    if status == 307:
        assert response.headers["Location"] == f"{HOST}/predict"


class Labels:
    """A stand-in for the request metrics: the route label of each request recorded."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def record(self, endpoint: str, method: str, status: int, seconds: float, report: Report) -> None:
        self.labels.append(endpoint)


@pytest.mark.parametrize(("path", "rule"), [("/predict", ROUTE), (f"/models/{DEFAULT_MODEL}/predict", NAMED_ROUTE)])
def test_a_route_has_one_label_whichever_adapter_answered(registry: Registry, path: str, rule: str) -> None:
    app = make_app(registry, StandInMules(), fast_lane=False)
    recorder = Labels()
    init_app(app, recorder)  # Flask's labels, as app/telemetry.py records them
    lane = FastLane(app.wsgi_app, services_of(app).predict, recorder)
    assert Client(lane).post(path, json=ROW).status_code == 200  # the fast lane
    assert app.test_client().post(path, json=ROW).status_code == 200  # Flask
    assert recorder.labels == [rule, rule]


# -- the document -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "last"), [(dt.date(2015, 1, 1), dt.date(2017, 3, 15)),
                                             (dt.date(2016, 2, 27), dt.date(2016, 3, 2)),
                                             (dt.date(2019, 12, 31), dt.date(2020, 1, 1))])  # fmt: skip
def test_the_date_pattern_matches_the_range_and_nothing_else(first: dt.date, last: dt.date) -> None:
    pattern = re.compile(openapi.date_pattern(first, last))
    day = first - dt.timedelta(days=40)
    while day <= last + dt.timedelta(days=40):
        assert bool(pattern.search(day.isoformat())) is (first <= day <= last), day
        day += dt.timedelta(days=1)
    for text in ("2016-02-30", "2016-13-01", "2016-00-10", "2016-03-00", "2016-3-1", f" {first}", f"{first}x"):
        assert not pattern.search(text), text


def test_the_document_bounds_a_row_to_what_the_served_versions_know() -> None:
    document = openapi.build(ENDPOINTS, Settings(), DOMAIN, (DEFAULT_MODEL, "store-3"))
    row = document["components"]["schemas"]["PredictRow"]
    validate = jsonschema.Draft202012Validator(row).is_valid
    assert validate({"date": "2017-03-15", "store": 10, "item": 50})
    assert validate({"date": "2015-01-01", "store": 1, "item": 1})
    for bad in ({"store": 11}, {"store": 0}, {"item": 51}, {"date": "2017-03-16"}, {"date": "2014-12-31"}):
        assert not validate({"date": "2016-01-01", "store": 1, "item": 1, **bad}), bad
    for path in ("/predict", "/models/{name}/predict"):
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True  # an empty POST is 422: a body, or the legacy query
        csv = operation["requestBody"]["content"]["text/csv"]["schema"]["pattern"]
        assert re.search(csv, openapi.CSV_EXAMPLE.replace("2018-01-0", "2016-01-0"))
        assert not re.search(csv, openapi.CSV_EXAMPLE.replace("2018-01-0", "2018-01-0"))  # past the range
    instances = document["components"]["schemas"]["Instances"]["properties"]["instances"]
    assert (instances["minItems"], instances["maxItems"]) == (1, Settings().max_batch_rows)
    name = document["paths"]["/models/{name}/predict"]["post"]["parameters"][1]
    assert name["schema"]["enum"] == [DEFAULT_MODEL, "store-3"]


def test_several_models_are_bounded_by_their_span() -> None:
    other = Domain(frozenset({12, 14}), frozenset({1}), dt.date(2014, 6, 1), dt.date(2016, 1, 1))
    both = span([DOMAIN, other])
    assert both == Domain(DOMAIN.stores | {12, 14}, DOMAIN.items, dt.date(2014, 6, 1), DOMAIN.last_date)
    row = openapi.build(ENDPOINTS, Settings(), both)["components"]["schemas"]["PredictRow"]["properties"]
    assert row["store"]["enum"] == [*range(1, 11), 12, 14]  # with gaps: the list
    assert span([]) is None


def test_without_a_served_version_the_document_says_what_the_wire_schemas_say() -> None:
    row = openapi.build(ENDPOINTS, Settings())["components"]["schemas"]["PredictRow"]["properties"]
    assert row["store"]["minimum"] == 1
    assert "maximum" not in row["item"] or row["item"]["maximum"] > 50
    assert row["date"]["format"] == "date"
