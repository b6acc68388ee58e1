"""The HTTP contract's edges through nginx: trailing slashes, 405s, one route label, and schemathesis on it all.

The routes are read from the app's own URL map (``app.add_routes``, the one list of them), never a list here.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.routing import Rule

from app import ForecastFlask, add_routes
from app.views import ENDPOINTS
from forecast.registry import DEFAULT_MODEL
from launcher.stack import Stack
from tests.stack.scrape import Scrape, scrape, scrape_until

ROW = {"date": "2016-03-01", "store": 2, "item": 3}
# a value for each rule's argument
SAMPLES = {"name": DEFAULT_MODEL, "path": "index.html", "filename": "x", "asset": "ui.js"}


def routes_app() -> Flask:
    app = ForecastFlask("app")  # the name create_app gives it: the same static route
    add_routes(app)
    return app


def served(rule: Rule) -> str:
    """A path the rule takes: its arguments filled in."""
    missing = set(rule.arguments) - set(SAMPLES)
    assert not missing, f"give SAMPLES a value for {missing} ({rule.rule})"
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda argument: SAMPLES[argument.group(1)], rule.rule)


def slash_cases() -> Iterator[tuple[str, str]]:
    """(method, path) for every method of every route whose path with a slash is no route's (``/docs/`` is
    Swagger UI's own page; a path converter takes the slash as part of its file name)."""
    app = routes_app()
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        path = served(rule)
        if path.endswith("/") or adapter.allowed_methods(path + "/"):
            continue
        for method in sorted(rule.methods or ()):
            yield method, path


SLASH_CASES = list(slash_cases())


def body_of(method: str, path: str) -> dict[str, Any]:
    return {"json": ROW} if method == "POST" and path.endswith("/predict") else {}


def test_every_route_is_tried() -> None:
    """The enumeration itself: the routes a client uses are among the cases, named the way the app names them."""
    declared = {(method, served(Rule(endpoint.rule))) for endpoint in ENDPOINTS for method in endpoint.methods}
    # but / (its own slashed form), /docs (its slashed form is Swagger UI's page) and the planner page's files (a
    # path converter takes the slash into the file name): app/views.py ENDPOINTS
    assert declared - {("GET", "/"), ("GET", "/docs"), ("GET", "/ui/ui.js")} <= set(SLASH_CASES)
    assert ("HEAD", "/metrics") in SLASH_CASES  # and the methods Flask adds


@pytest.mark.parametrize(("method", "path"), SLASH_CASES, ids=[f"{m} {p}" for m, p in SLASH_CASES])
def test_a_route_with_a_trailing_slash_is_a_307_to_its_absolute_url(stack: Stack, method: str, path: str) -> None:
    """As FastAPI (Starlette) answers: the absolute URL, the query kept; following it with the same method and
    body gives what the route itself answers."""
    query = "probe=1&x=%C3%A9"
    slashed = requests.request(method, f"{stack.url}{path}/?{query}", allow_redirects=False, timeout=10,
                               **body_of(method, path))  # fmt: skip
    assert slashed.status_code == 307, slashed.text
    assert slashed.headers["Location"] == f"{stack.url}{path}?{query}"
    followed = requests.request(method, slashed.headers["Location"], allow_redirects=False, timeout=10,
                                **body_of(method, path))  # fmt: skip
    direct = requests.request(method, f"{stack.url}{path}?{query}", allow_redirects=False, timeout=10,
                              **body_of(method, path))  # fmt: skip
    assert (followed.status_code, followed.headers.get("Content-Type")) == (
        direct.status_code,
        direct.headers.get("Content-Type"),
    )
    if path.endswith("/predict") and method == "POST":
        assert followed.status_code == 200
        assert followed.json() == direct.json()


def raw(stack: Stack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (no client fills anything in); the answer's status, headers (lower-case) and body."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    connection.connect()
    assert connection.sock is not None
    connection.sock.sendall(request)
    response = http.client.HTTPResponse(connection.sock, method="GET")
    response.begin()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return answer


@pytest.mark.parametrize(
    ("request_head", "location"),
    [
        ("GET /status/ HTTP/1.1\r\nHost: forecast.example:8443\r\n", "http://forecast.example:8443/status"),
        ("GET /status/ HTTP/1.1\r\nHost: Forecast.Example\r\n", "http://forecast.example/status"),
        # an absolute request line wins over a Host that disagrees (nginx's $host), as Debian's params intend
        ("GET http://other.example:81/status/ HTTP/1.1\r\nHost: evil.example\r\n", "http://other.example/status"),
        ("GET /status/?a=1 HTTP/1.0\r\n", "http://127.0.0.1:{port}/status?a=1"),  # no Host: the address it came to
    ],
)
def test_the_absolute_url_names_the_host_and_port_the_client_asked_for(
    stack: Stack, request_head: str, location: str
) -> None:
    status, headers, _ = raw(stack, f"{request_head}Connection: close\r\n\r\n".encode())
    assert (status, headers["location"]) == (307, location.format(port=stack.port))


def allow_cases() -> Iterator[tuple[str, str, set[str]]]:
    """(method, path, the methods its routes take) for each route's path and each method it does not take."""
    app = routes_app()
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        path = served(rule)
        allowed = set(adapter.allowed_methods(path))
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND"):
            if method not in allowed:
                yield method, path, allowed


ALLOW_CASES = list(allow_cases())


@pytest.mark.parametrize(("method", "path", "allowed"), ALLOW_CASES, ids=[f"{m} {p}" for m, p, _ in ALLOW_CASES])
def test_every_405_carries_allow_in_the_error_shape(stack: Stack, method: str, path: str, allowed: set[str]) -> None:
    """RFC 9110: a 405 names the methods the resource takes; TRACE and CONNECT too, which nginx refuses itself."""
    status, headers, body = raw(stack, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status == 405, body
    assert {m.strip() for m in headers["allow"].split(",")} == allowed
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {**json.loads(body), "status": 405, "code": "method_not_allowed"}


def route_labels(before: Scrape, after: Scrape) -> dict[str, float]:
    """How many POSTs answered 422 each route label gained between two scrapes."""
    labels: dict[str, float] = {}
    for sample in after.matching("forecast_http_requests_total", method="POST", status="422"):
        gained = sample.value - before.value("forecast_http_requests_total", **sample.labels)
        if gained:
            labels[sample.labels["endpoint"]] = labels.get(sample.labels["endpoint"], 0) + gained
    return labels


LABELS = [("/predict", "/predict"), (f"/models/{DEFAULT_MODEL}/predict", "/models/<name>/predict")]


@pytest.mark.parametrize(("path", "label"), LABELS)
def test_a_route_has_one_label_whatever_the_body_form(stack: Stack, path: str, label: str) -> None:
    """A body of known length and a chunked one (nginx reads it whole and blanks Transfer-Encoding, so the fast
    lane answers both): both counted under the route's rule. Flask's view answers only requests sent to uWSGI
    directly; that it records the same rule is tests/unit/test_contract.py's."""
    row = {**ROW, "store": 999}  # a 422 from both: no other test's late-written request counts here
    before = scrape(stack.url)
    assert requests.post(f"{stack.url}{path}", json=row, timeout=10).status_code == 422
    chunked = requests.post(f"{stack.url}{path}", data=iter([json.dumps(row).encode()]), timeout=10,
                            headers={"Content-Type": "application/json"})  # fmt: skip
    assert (chunked.request.headers["Transfer-Encoding"], chunked.status_code) == ("chunked", 422)
    after = scrape_until(stack.url, lambda now: sum(route_labels(before, now).values()) >= 2)
    assert route_labels(before, after) == {label: 2}


# -- schemathesis ---------------------------------------------------------------------------------------

LEGACY_FIELDS = {"date", "store", "item"}
FORECAST = ("GET /forecast", "POST /forecast", "GET /models/{name}/forecast", "POST /models/{name}/forecast")
PREDICT = ("POST /predict", "POST /models/{name}/predict")


@dataclass(frozen=True)
class Finding:
    check: str
    operation: str
    case: dict[str, Any]  # as schemathesis reports it: method, path, query, body, media_type, meta
    status: int | None
    body: bytes

    def error_field(self) -> str | None:
        try:
            field: str | None = json.loads(self.body).get("field")
        except (ValueError, AttributeError):
            return None
        return field

    def __str__(self) -> str:
        head = f"{self.check} {self.operation} -> {self.status}"
        return (
            f"{head}: query={self.case.get('query')} body={str(self.case.get('body'))[:200]} answer={self.body[:200]!r}"
        )


@dataclass(frozen=True)
class Explained:
    """A finding that is a choice, not a bug: which check, on which operations, recognised how, and why."""

    check: str
    operations: tuple[str, ...]
    reason: str
    applies: Callable[[Finding], bool]


def _query(finding: Finding) -> set[str]:
    return set(finding.case.get("query") or {})


def _integral_floats(value: Any) -> bool:
    """Whether a JSON value holds a number written as a float with no fraction (``5.0``)."""
    if isinstance(value, dict):
        return any(_integral_floats(v) for v in value.values())
    if isinstance(value, list):
        return any(_integral_floats(v) for v in value)
    return isinstance(value, float) and value.is_integer()


EXPLAINED = (
    Explained("positive_data_acceptance", PREDICT,
              "the legacy query form beside a body is 422 'not both'; OpenAPI 3.1 cannot tie a parameter to no body",
              lambda f: bool(f.case.get("body")) and bool(LEGACY_FIELDS & _query(f))
              and f.status == 422 and f.error_field() == "query"),
    Explained("negative_data_rejection", PREDICT,
              "the legacy query form has no body (an empty one is none), which the document requires: 'a body or "
              "these three parameters' cannot be said in OpenAPI 3.1",
              lambda f: not f.case.get("body") and _query(f) >= LEGACY_FIELDS and f.status == 200),
    Explained("positive_data_acceptance", PREDICT + FORECAST,
              "ids are strict JSON integers (app/schemas.py): 5.0 is refused, and JSON Schema's integer cannot tell it "
              "from 5",
              lambda f: _integral_floats(f.case.get("body")) and f.status == 422 and b"a valid integer" in f.body),
    Explained("positive_data_acceptance", FORECAST,
              "a forecast's last day (start + days) must be in the version's range too: JSON Schema bounds each field, "
              "not their sum",
              lambda f: f.status == 422 and f.error_field() == "start" and b"is outside version" in f.body),
    Explained("positive_data_acceptance", FORECAST,
              "explanations are for daily forecasts of single series, at most 10,000 rows: a rule between granularity, "
              "totals, explain, series and days that JSON Schema cannot state",
              lambda f: (f.status == 422 and f.error_field() == "explain")
              or (f.status == 413 and b"may explain at most" in f.body)),
    Explained("positive_data_acceptance", FORECAST,
              "the highest level a band can have depends on how many backtest errors the served version's calibration "
              "holds for the kind of row asked (its metadata, not the document)",
              lambda f: f.status == 422 and f.error_field() == "level" and b"too few errors" in f.body),
    Explained("positive_data_acceptance", ("POST /actuals",),
              "a CSV body's header and lines, a row's date that exists, a store or item the served models know and a "
              "row repeated: what the lines hold, which JSON Schema cannot state of a text body (or of the rows' "
              "relations)",
              lambda f: f.status == 422 and f.error_field() is not None),
    Explained("positive_data_acceptance", ("GET /accuracy",),
              "a version the model has, and a window whose start is not after its end and that spans at most 366 days: "
              "what the registry holds and how two parameters relate, which a parameter's schema cannot state",
              lambda f: f.status == 422 and f.error_field() in ("version", "start")),
    Explained("positive_data_acceptance", ("GET /actuals",),
              "a window whose start is not after its end and that spans at most 366 days: how two parameters relate, "
              "which a parameter's schema cannot state",
              lambda f: f.status == 422 and f.error_field() == "start"),
    Explained("not_a_server_error", FORECAST,
              "a forecast of many series, days and levels can take longer than FORECAST_DEADLINE_MS on 2 busy cores: "
              "504 deadline_exceeded, documented",
              lambda f: f.status == 504 and b"deadline_exceeded" in f.body),
)  # fmt: skip


STATEFUL = "Stateful tests"


def findings(report: Path) -> Iterator[Finding]:
    """Every failed check of a schemathesis NDJSON report."""
    for line in report.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario or not scenario.get("recorder"):
            continue
        recorder = scenario["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                response = (recorder["interactions"].get(case_id) or {}).get("response") or {}
                content = (response.get("content") or {}).get("$base64", "")
                case = recorder["cases"][case_id]["value"]
                # the stateful phase (POST then GET /actuals, say) labels its scenario, not the operation
                label = recorder["label"] if recorder["label"] != STATEFUL else f"{case['method']} {case['path']}"
                yield Finding(check["name"], label, case, response.get("status_code"), base64.b64decode(content))


def unexplained(found: list[Finding]) -> list[Finding]:
    return [
        f for f in found
        if not any(e.check == f.check and f.operation in e.operations and e.applies(f) for e in EXPLAINED)
    ]  # fmt: skip


def test_schemathesis_finds_nothing_unexplained(stack: Stack, tmp_path: Path) -> None:
    """``schemathesis run --checks all`` (every phase: examples, coverage, fuzzing) against nginx in front.

    Bounded by examples per operation (a run takes about 30 s on 2 cores); the seed is fixed, so a finding
    is reproducible (``st run ... --seed 1``).  Any failed check not in :data:`EXPLAINED` fails the test.
    """
    report = tmp_path / "events.ndjson"
    command = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
               "run", f"{stack.url}/openapi.json",
               "--checks", "all", "--max-examples", "12", "--seed", "1", "--workers", "1", "--continue-on-failure",
               "--request-timeout", "10", "--report", "ndjson", "--report-ndjson-path", str(report),
               "--no-color"]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=150, check=False)
    assert report.exists(), run.stdout + run.stderr
    events = [next(iter(json.loads(line))) for line in report.read_text().splitlines()]
    assert "EngineFinished" in events, run.stdout[-3000:]
    assert not [e for e in events if "Error" in e], run.stdout[-3000:]
    found = list(findings(report))
    assert not unexplained(found), "\n".join(map(str, unexplained(found)[:20])) + "\n" + run.stdout[-3000:]
    # the explained ones are still there: the run reached the legacy form (and the list is not stale)
    assert {e.check for e in EXPLAINED[:2]} <= {f.check for f in found}, run.stdout[-3000:]
