"""The ``/predict`` contract: one use case, the same answer through both adapters (fast lane and Flask).

Pure logic: the real app factory, schemas, domain check, service, use case and error handlers
around stand-ins for the mules and their heartbeats (the stack tests drive the same code
through real nginx, uWSGI and mules).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson
import pytest
from flask import Flask
from pydantic_core import from_json

import app.answers
import app.fastlane
import app.predict
import app.views
from app import create_app
from app.errors import DeadlineExceeded, Reason, Unavailable
from app.fastlane import FastLane, lane_request
from app.pool import PoolView
from app.prediction import Part, Prediction
from forecast.registry import Registry
from serving.messages import Heartbeat, MuleState, Result
from serving.settings import Settings

# Headers a client or nginx's access line reads.
COMPARED_HEADERS = ("Content-Type", "Retry-After", "X-Model-Version", "X-Forecast-Rows", "X-Forecast-Error")


def ready_view(version: str = "v1") -> PoolView:
    now = time.time()
    beats = {m: Heartbeat(m, 100 + m, MuleState.READY, version, now, now - 60, 0) for m in (1, 2)}
    return PoolView(beats, now, 10)


class StandInPool:
    """Heartbeats of two ready mules (or ``failure`` raised when read)."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure

    def view(self) -> PoolView:
        if self.failure is not None:
            raise self.failure
        return ready_view()

    def routes(self) -> None:
        return None  # production read from the registry

    def sync_state(self) -> None:
        return None  # not following MLflow


class StandInMules:
    """Answers every row with 10 + store + item / 100, or raises ``failure``."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.mule_ids = [1, 2]
        self.failure = failure
        self.calls = 0

    def predict(self, model: str, parts: list[Part], deadline: float, outputs: tuple[str, ...] = ()) -> Prediction:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        (part,) = parts  # no canary here: one version
        columns = part.columns
        sales = 10 + columns.stores + columns.items / 100
        # six features and the expected value
        return Prediction(sales, (part.version,), outputs={name: np.zeros((len(columns), 7)) for name in outputs})

    def load(self, mule_id: int, version: str, pid: int | None, model: str = "default") -> Result:
        raise AssertionError("not used here")


def make_app(registry: Registry, mules: StandInMules, fast_lane: bool, pool: StandInPool | None = None) -> Flask:
    settings = Settings(
        registry_dir=registry.root, metrics_enabled=False, fast_lane_enabled=fast_lane, max_batch_rows=10
    )
    return create_app(settings, mules, pool or StandInPool())


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


def csv(body: bytes, **extra: Any) -> dict[str, Any]:
    """Test-client arguments of a CSV body to /predict."""
    return {"path": "/predict", "data": body, "content_type": "text/csv", **extra}


TOO_OLD = {"X-Request-Start": "t=1000000000.000"}  # nginx received it in 2001: far past its deadline
FORECAST = {**ROW, "sales": 12.03, "model_version": "v1"}
# (name, test-client arguments, status, what the answer holds): every form, and every way of failing before
# the mules; for 200 the body itself, for an error (its code, the field it names).
REQUESTS = [
    ("one row", {"path": "/predict", "json": ROW}, 200, FORECAST),
    ("one row, charset", {"path": "/predict", "data": b'{"date":"2015-06-01","store":2,"item":3}',
                          "content_type": "application/json; charset=utf-8"}, 200, FORECAST),
    ("one row, +json", {"path": "/predict", "json": ROW, "content_type": "application/vnd.api+json"}, 200, FORECAST),
    ("unknown store", {"path": "/predict", "json": {**ROW, "store": 99}}, 422, ("invalid_input", "store")),
    ("impossible date", {"path": "/predict", "json": {**ROW, "date": "2015-02-30"}}, 422, ("invalid_input", "date")),
    ("date too far", {"path": "/predict", "json": {**ROW, "date": "2031-01-01"}}, 422, ("invalid_input", "date")),
    ("store as text", {"path": "/predict", "json": {**ROW, "store": "2"}}, 422, ("invalid_input", "store")),
    ("extra field", {"path": "/predict", "json": {**ROW, "colour": "red"}}, 422, ("invalid_input", "colour")),
    ("missing field", {"path": "/predict", "json": {"date": "2015-06-01", "store": 2}}, 422, ("invalid_input", "item")),
    ("malformed JSON", {"path": "/predict", "data": b'{"date": ', "content_type": "application/json"}, 400,
     ("malformed_json", None)),
    ("not an object", {"path": "/predict", "json": 42}, 422, ("invalid_input", "body")),
    ("text body", {"path": "/predict", "data": b"date=2015-06-01", "content_type": "text/plain"}, 415,
     ("unsupported_media_type", None)),
    ("a list", {"path": "/predict", "json": [ROW, {**ROW, "item": 4}]}, 200,
     {"predictions": [FORECAST, {**FORECAST, "item": 4, "sales": 12.04}]}),
    ("a list, unknown item", {"path": "/predict", "json": [ROW, {**ROW, "item": 77}]}, 422,
     ("invalid_input", "[1].item")),
    ("instances", {"path": "/predict", "json": {"instances": [ROW]}}, 200, {"predictions": [FORECAST]}),
    ("instances, bad row", {"path": "/predict", "json": {"instances": [ROW, {**ROW, "date": 5}]}}, 422,
     ("invalid_input", "instances[1].date")),
    ("instances and more", {"path": "/predict", "json": {"instances": [ROW], "x": 1}}, 422,
     ("invalid_input", "instances")),
    ("empty list", {"path": "/predict", "json": []}, 422, ("invalid_input", "body")),
    ("too many rows", {"path": "/predict", "json": [ROW] * 11}, 413, ("batch_too_large", None)),
    ("legacy query form", {"path": "/predict?date=2015-06-01&store=2&item=3"}, 200, 12.03),
    ("legacy, percent-encoded", {"path": "/predict?date=2015%2D06%2D01&store=%32&item=3"}, 200, 12.03),
    ("legacy, repeated field", {"path": "/predict?date=2015-06-01&store=9&store=2&item=3"}, 200, 12.03),
    ("legacy, other field", {"path": "/predict?date=2015-06-01&store=2&item=3&debug=1"}, 200, 12.03),
    ("legacy, item outside", {"path": "/predict?date=2015-06-01&store=2&item=77"}, 200, -3.0),
    ("legacy, store outside", {"path": "/predict?date=2015-06-01&store=0&item=3"}, 200, -2.0),
    ("legacy, date outside", {"path": "/predict?date=2031-01-01&store=99&item=77"}, 200, -1.0),
    ("legacy, not a date", {"path": "/predict?date=yesterday&store=2&item=3"}, 200, -1.0),  # "y" > "2016-..."
    ("legacy, impossible date", {"path": "/predict?date=2015-02-30&store=2&item=3"}, 422, ("invalid_input", "date")),
    ("legacy, lenient integers", {"path": "/predict?date=2015-06-01&store=%202%20&item=3.0"}, 200, 12.03),
    ("legacy, missing item", {"path": "/predict?date=2015-06-01&store=2"}, 422, ("invalid_input", "item")),
    ("legacy, store as text", {"path": "/predict?date=2015-06-01&store=two&item=3"}, 422, ("invalid_input", "store")),
    ("legacy, invalid UTF-8", {"path": "/predict?date=2015-06-01&store=2&item=%ff"}, 422, ("invalid_input", "item")),
    ("legacy, no fields", {"path": "/predict?&"}, 422, ("invalid_input", "body")),
    ("query and body", {"path": "/predict?store=2", "json": ROW}, 422, ("invalid_input", "query")),
    ("empty body", {"path": "/predict", "data": b"", "content_type": "application/json"}, 422,
     ("invalid_input", "body")),
    ("waited past its deadline", {"path": "/predict", "json": ROW, "headers": TOO_OLD}, 503, ("overloaded", None)),
    ("CSV", csv(b"id,date,store,item\n7,2015-06-01,2,3\n8,2015-06-01,2,4\n"), 200,
     {"predictions": [FORECAST, {**FORECAST, "item": 4, "sales": 12.04}]}),
    ("CSV, CRLF, no id, no last line end", csv(b"store,item,date\r\n2,3,2015-06-01"), 200, {"predictions": [FORECAST]}),
    ("CSV, unknown column", csv(b"date,store,item,sales\n2015-06-01,2,3,5\n"), 422, ("invalid_input", "header")),
    ("CSV, header only", csv(b"date,store,item\n"), 422, ("invalid_input", "body")),
    ("CSV, a short line", csv(b"date,store,item\n2015-06-01,2,3\n2015-06-01,2\n"), 422, ("invalid_input", "body")),
    ("CSV, not a number", csv(b"date,store,item\n2015-06-01,2,3\n2015-06-01,x,3\n"), 422,
     ("invalid_input", "line 3.store")),
    ("CSV, impossible date", csv(b"date,store,item\n2015-02-30,2,3\n"), 422, ("invalid_input", "line 2.date")),
    ("CSV, unknown item", csv(b"date,store,item\n2015-06-01,2,3\n2015-06-01,2,77\n"), 422,
     ("invalid_input", "line 3.item")),
    ("CSV, too many rows", csv(b"date,store,item\n" + b"2015-06-01,2,3\n" * 11), 413, ("batch_too_large", None)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "request_args", "status", "holds"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_contract_through_the_fast_lane_and_through_flask(
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    request_args: dict[str, Any],
    status: int,
    holds: Any,
) -> None:
    """Each request gets its answer; both adapters give the same status, body and headers; the lane
    answers every /predict itself and parses a body at most once."""
    parses: list[bytes] = []
    parse = from_json

    def counting_parse(data: bytes) -> Any:
        parses.append(data)
        return parse(data)

    monkeypatch.setattr(app.predict, "from_json", counting_parse)
    fast = make_app(registry, StandInMules(), fast_lane=True)
    flask_calls = count_flask_calls(fast)
    got = answer(fast, request_args)
    got_status, body, headers = got
    assert (flask_calls[0], got_status) == (0, status), name
    if status == 200:
        assert body == holds
    else:
        assert (body["code"], body.get("field")) == holds
        assert headers["X-Forecast-Error"] == holds[0]
    assert len(parses) <= 1
    assert answer(make_app(registry, StandInMules(), fast_lane=False), request_args) == got


def test_one_row_answer_is_the_forecast_with_its_version(registry: Registry) -> None:
    mules = StandInMules()
    status, body, headers = answer(make_app(registry, mules, fast_lane=True), {"path": "/predict", "json": ROW})
    assert (status, mules.calls) == (200, 1)
    assert body == {**ROW, "sales": 12.03, "model_version": "v1"}
    assert headers["X-Model-Version"] == "v1"
    assert headers["X-Forecast-Rows"] == "1"


def test_a_batch_is_answered_in_order_and_an_error_names_the_row(registry: Registry) -> None:
    rows = [ROW, {**ROW, "item": 4}, {**ROW, "store": 3}]
    app_ = make_app(registry, StandInMules(), fast_lane=True)
    _, body, headers = answer(app_, {"path": "/predict", "json": {"instances": rows}})
    assert [p["sales"] for p in body["predictions"]] == [12.03, 12.04, 13.03]
    assert headers["X-Forecast-Rows"] == "3"
    _, error, _ = answer(app_, {"path": "/predict", "json": [ROW, {**ROW, "item": 99}]})
    assert (error["code"], error["field"]) == ("invalid_input", "[1].item")


def test_legacy_query_form_is_answered_with_a_bare_number(registry: Registry) -> None:
    app_ = make_app(registry, StandInMules(), fast_lane=True)
    response = app_.test_client().post("/predict?date=2015-06-01&store=2&item=3")
    assert (response.status_code, response.data) == (200, b"12.03")  # the original's bytes: no newline


def test_a_request_that_waited_past_its_deadline_is_shed_before_reaching_the_mules(registry: Registry) -> None:
    mules = StandInMules()
    status, body, headers = answer(
        make_app(registry, mules, True), {"path": "/predict", "json": ROW, "headers": TOO_OLD}
    )
    assert (status, body["code"], headers["Retry-After"], mules.calls) == (503, "overloaded", "1", 0)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Unavailable("the server is at capacity; retry shortly", Reason.OVERLOADED), 503, "overloaded"),
        (Unavailable("the mules serving this request died; retry", Reason.MULE_DIED, job="ab12"), 503, "mule_died"),
        (DeadlineExceeded("no prediction within the deadline of 5000 ms"), 504, "deadline_exceeded"),
        (RuntimeError("a bug with a secret in its message"), 500, "internal_error"),
    ],
)
def test_failures_after_submission_are_answered_once_in_the_error_shape(
    registry: Registry, failure: Exception, status: int, code: str
) -> None:
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


def test_a_bug_before_submission_is_a_500_with_a_log_line_not_a_retry_through_flask(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """No routing by exception: the lane does not hand a failing request to Flask to try again."""
    mules = StandInMules()
    fast = make_app(registry, mules, fast_lane=True, pool=StandInPool(RuntimeError("a bug reading heartbeats")))
    flask_calls = count_flask_calls(fast)
    with caplog.at_level(logging.ERROR, logger="app"):
        status, body, _ = answer(fast, {"path": "/predict", "json": ROW})
    assert (status, body["code"], flask_calls[0], mules.calls) == (500, "internal_error", 0, 0)
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None
    assert "heartbeats" not in str(body)


def environ(method: str = "POST", path: str = "/predict", **extra: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(b"{}"), **extra}


@pytest.mark.parametrize(
    ("request_environ", "in_lane"),
    [
        (environ(CONTENT_LENGTH="2"), True),
        (environ(path="/models/store-7/predict", CONTENT_LENGTH="2"), True),
        (environ(path="/models//predict", CONTENT_LENGTH="2"), False),
        (environ(path="/models/a/b/predict", CONTENT_LENGTH="2"), False),
        (environ(QUERY_STRING="date=2018-01-01"), True),  # no body at all
        (environ(CONTENT_LENGTH="2", HTTP_TRANSFER_ENCODING="chunked"), False),  # sent to uWSGI directly
        (environ(CONTENT_LENGTH="two"), False),
        (environ("GET"), False),
        (environ(path="/predict/"), False),
        (environ(path="/status"), False),
    ],
)
def test_the_lane_takes_a_request_by_its_method_path_and_length(request_environ: dict[str, Any], in_lane: bool) -> None:
    assert (lane_request(request_environ) is not None) is in_lane


def raw_answer(app: Flask, request: dict[str, Any]) -> tuple[int, bytes, str | None, str | None]:
    response = app.test_client().post(**request)
    return response.status_code, response.data, response.content_type, response.headers.get("Content-Length")


@pytest.mark.parametrize(
    ("request_args", "expected"),
    [
        (csv(b"id,date,store,item\n7,2015-06-01,2,3\n8,2015-06-01,2,4\n", headers={"Accept": "text/csv"}),
         b"id,sales\n7,12.03\n8,12.04\n"),
        ({"path": "/predict", "json": [ROW, {**ROW, "store": 3}], "headers": {"Accept": "text/csv, */*;q=0.1"}},
         b"date,store,item,sales\n2015-06-01,2,3,12.03\n2015-06-01,3,3,13.03\n"),
    ],
)  # fmt: skip
def test_a_batch_is_answered_as_csv_when_the_client_prefers_it(
    registry: Registry, request_args: dict[str, Any], expected: bytes
) -> None:
    got = raw_answer(make_app(registry, StandInMules(), fast_lane=True), request_args)
    assert got == (200, expected, "text/csv", str(len(expected)))
    assert raw_answer(make_app(registry, StandInMules(), fast_lane=False), request_args) == got


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [("", False), ("*/*", False), ("text/csv", True), ("application/json, text/csv", False),
     ("text/csv;q=0.9, application/json;q=0.5", True), ("text/csv;q=0.1, */*", False), ("text/*", False),
     ("TEXT/CSV", True), ("text/csv;q=bad", False)],
)  # fmt: skip
def test_the_accept_header_picks_csv_only_when_it_prefers_it(accept: str, csv_wanted: bool) -> None:
    assert app.predict.wants_csv(accept) is csv_wanted


def test_a_large_batch_is_sent_in_pieces_and_arrives_whole_and_in_order(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.predict, "STREAM_ROWS", 3)
    monkeypatch.setattr(app.answers, "ANSWER_PIECE_ROWS", 3)
    pairs = [(1 + n % 3, 1 + n % 4) for n in range(10)]
    rows = [{**ROW, "store": store, "item": item} for store, item in pairs]
    parsers: list[Callable[[bytes], list[float]]] = [
        lambda data: [p["sales"] for p in orjson.loads(data)["predictions"]],
        lambda data: [float(line.split(",")[-1]) for line in data.decode().splitlines()[1:]],
    ]
    for accept, parse in zip(["application/json", "text/csv"], parsers, strict=True):
        request_args = {"path": "/predict", "json": rows, "headers": {"Accept": accept}}
        status, data, _, length = raw_answer(make_app(registry, StandInMules(), fast_lane=True), request_args)
        assert (status, length) == (200, None)  # streamed: no length known up front
        assert parse(data) == [10 + store + item / 100 for store, item in pairs]
        assert raw_answer(make_app(registry, StandInMules(), fast_lane=False), request_args)[:2] == (status, data)


@pytest.mark.parametrize("fast_lane", [True, False])
@pytest.mark.parametrize(
    ("rows", "stream_rows", "status"),
    [(4, 3, 200), (4, 10, 200), (11, 10, 413), (1, 10, 200)],  # streamed, whole, refused, and a small body
)
def test_once_a_large_body_is_answered_the_worker_hands_freed_memory_back(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, fast_lane: bool, rows: int, stream_rows: int, status: int
) -> None:
    monkeypatch.setattr(app.predict, "BODY_PIECE_BYTES", 100)  # a row is about 50 bytes
    monkeypatch.setattr(app.predict, "STREAM_ROWS", stream_rows)
    releases: list[int] = []

    def release() -> bool:
        releases.append(1)
        return True

    for module in (app.fastlane, app.views):
        monkeypatch.setattr(module, "release_freed_memory", release)
    client = make_app(registry, StandInMules(), fast_lane=fast_lane).test_client()
    response = client.post("/predict", json=[ROW] * rows, buffered=False)
    assert response.status_code == status
    assert response.get_data()
    assert releases == []  # not before the answer is sent and closed
    response.close()
    assert releases == ([1] if rows > 2 else [])


class CountedReads(io.BytesIO):
    """A request's input stream that notes the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


@pytest.mark.parametrize("length", [0, 10, app.predict.BODY_PIECE_BYTES, 3 * app.predict.BODY_PIECE_BYTES + 5])
def test_a_body_is_read_whole_a_piece_at_a_time(length: int) -> None:
    data = bytes(range(256)) * (length // 256 + 1)
    stream = CountedReads(data)
    assert app.predict.read_body(stream, length) == data[:length]
    assert max(stream.sizes, default=0) <= app.predict.BODY_PIECE_BYTES
    assert sum(stream.sizes) == length


def test_a_body_that_ends_early_is_what_arrived() -> None:
    length = 2 * app.predict.BODY_PIECE_BYTES
    assert app.predict.read_body(io.BytesIO(b"[1, 2"), length) == b"[1, 2"
