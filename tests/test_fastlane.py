"""The fast lane answers exactly as the Flask view does, and only takes the requests it should.

Pure logic: the real app factory, schemas, service and error handlers around a stand-in
for the mules (the stack tests drive the fast lane through real nginx, uWSGI and mules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.errors import DeadlineExceeded, Unavailable
from app.fastlane import FastLane
from app.mule_client import Prediction
from forecast.registry import Registry
from forecast.settings import Settings

READY = [{"id": 1, "state": "ready", "model_version": "v1"}, {"id": 2, "state": "ready", "model_version": "v1"}]
# Headers a client or nginx's access line reads.
COMPARED_HEADERS = ("Content-Type", "Retry-After", "X-Model-Version", "X-Forecast-Rows", "X-Forecast-Error")


class StandInMules:
    """Answers every row with 10 + store + item / 100, or raises ``failure``."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.mule_ids = [1, 2]
        self.failure = failure
        self.calls = 0

    def mule_states(self) -> list[dict[str, Any]]:
        return [dict(state) for state in READY]

    def predict(self, days: list[int], stores: list[int], items: list[int], deadline: float) -> Prediction:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return Prediction([10 + s + i / 100 for s, i in zip(stores, items, strict=True)], ["v1"] * len(days))


def make_app(registry: Registry, mules: StandInMules, fast_lane: bool) -> Flask:
    settings = Settings(registry_dir=registry.root, metrics_enabled=False, fast_lane_enabled=fast_lane)
    return create_app(settings, mules)


def count_flask_calls(app: Flask) -> list[int]:
    """Wrap the Flask app behind the fast lane; the list's one element counts the requests it got."""
    lane = app.wsgi_app
    assert isinstance(lane, FastLane)
    calls = [0]
    inner = lane.flask_app

    def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        calls[0] += 1
        return inner(environ, start_response)

    lane.flask_app = counting
    return calls


def answer(app: Flask, request: dict[str, Any]) -> tuple[int, Any, dict[str, str | None]]:
    response = app.test_client().post(**request)
    return response.status_code, response.get_json(), {h: response.headers.get(h) for h in COMPARED_HEADERS}


ROW = {"date": "2015-06-01", "store": 2, "item": 3}
# (name, test-client arguments, whether the fast lane answers it itself)
REQUESTS = [
    ("one row", {"path": "/predict", "json": ROW}, True),
    ("one row, charset", {"path": "/predict", "data": b'{"date":"2015-06-01","store":2,"item":3}',
                          "content_type": "application/json; charset=utf-8"}, True),
    ("unknown store", {"path": "/predict", "json": {**ROW, "store": 99}}, False),
    ("impossible date", {"path": "/predict", "json": {**ROW, "date": "2015-02-30"}}, False),
    ("store as text", {"path": "/predict", "json": {**ROW, "store": "2"}}, False),
    ("extra field", {"path": "/predict", "json": {**ROW, "colour": "red"}}, False),
    ("missing field", {"path": "/predict", "json": {"date": "2015-06-01", "store": 2}}, False),
    ("malformed JSON", {"path": "/predict", "data": b'{"date": ', "content_type": "application/json"}, False),
    ("not an object", {"path": "/predict", "json": 42}, False),
    ("text body", {"path": "/predict", "data": b"date=2015-06-01", "content_type": "text/plain"}, False),
    ("a list", {"path": "/predict", "json": [ROW, {**ROW, "item": 4}]}, False),
    ("instances", {"path": "/predict", "json": {"instances": [ROW]}}, False),
    ("legacy query form", {"path": "/predict?date=2015-06-01&store=2&item=3"}, True),
    ("legacy, percent-encoded", {"path": "/predict?date=2015%2D06%2D01&store=%32&item=3"}, True),
    ("legacy, repeated field", {"path": "/predict?date=2015-06-01&store=2&store=9&item=3"}, True),
    ("legacy, other field", {"path": "/predict?date=2015-06-01&store=2&item=3&debug=1"}, True),
    ("legacy, unknown item", {"path": "/predict?date=2015-06-01&store=2&item=77"}, False),
    ("legacy, missing item", {"path": "/predict?date=2015-06-01&store=2"}, False),
    ("legacy, invalid UTF-8", {"path": "/predict?date=2015-06-01&store=2&item=%ff"}, False),
    ("legacy, no fields", {"path": "/predict?&"}, False),
    ("query and body", {"path": "/predict?store=2", "json": ROW}, False),
    ("empty body", {"path": "/predict", "data": b"", "content_type": "application/json"}, False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "request_args", "in_lane"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_same_answer_with_and_without_the_fast_lane(
    registry: Registry, name: str, request_args: dict[str, Any], in_lane: bool
) -> None:
    fast = make_app(registry, StandInMules(), fast_lane=True)
    flask_calls = count_flask_calls(fast)
    expected = answer(make_app(registry, StandInMules(), fast_lane=False), request_args)
    assert answer(fast, request_args) == expected
    assert flask_calls[0] == (0 if in_lane else 1), name


def test_one_row_answer_is_the_forecast_with_its_version(registry: Registry) -> None:
    mules = StandInMules()
    status, body, headers = answer(make_app(registry, mules, fast_lane=True), {"path": "/predict", "json": ROW})
    assert (status, mules.calls) == (200, 1)
    assert body == {**ROW, "sales": 12.03, "model_version": "v1"}
    assert headers["X-Model-Version"] == "v1"
    assert headers["X-Forecast-Rows"] == "1"


def test_legacy_query_form_is_answered_with_a_bare_number(registry: Registry) -> None:
    app = make_app(registry, StandInMules(), fast_lane=True)
    response = app.test_client().post("/predict?date=2015-06-01&store=2&item=3")
    assert (response.status_code, response.data) == (200, b"12.03\n")


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Unavailable("the server is at capacity; retry shortly", 1, "overloaded"), 503, "overloaded"),
        (Unavailable("the mules serving this request died; retry", 1, "mule_died", job="ab12"), 503, "mule_died"),
        (DeadlineExceeded("no prediction within the deadline of 5000 ms"), 504, "deadline_exceeded"),
        (RuntimeError("a bug with a secret in its message"), 500, "internal_error"),
    ],
)
def test_failures_after_submission_are_answered_once_in_the_error_shape(
    registry: Registry, failure: Exception, status: int, code: str
) -> None:
    """The rows reached the mules: the lane answers itself (handing over would submit them twice)."""
    fast_mules, flask_mules = StandInMules(failure), StandInMules(failure)
    fast = make_app(registry, fast_mules, fast_lane=True)
    flask_calls = count_flask_calls(fast)
    request_args = {"path": "/predict", "json": ROW}
    got = answer(fast, request_args)
    assert got == answer(make_app(registry, flask_mules, fast_lane=False), request_args)
    assert (fast_mules.calls, flask_calls[0]) == (1, 0)
    got_status, body, headers = got
    assert (got_status, body["code"], headers["X-Forecast-Error"]) == (status, code, code)
    assert "secret" not in str(body)
    assert (headers["Retry-After"] == "1") == (status == 503)
