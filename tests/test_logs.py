"""Logs: one line per request with its id, JSON lines on demand, a mule's failure logged once."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from flask import Flask

from app import errors, telemetry
from app.errors import Unavailable
from forecast.logs import TextFormatter, configure_logging, json_formatter
from forecast.messages import Job, Result, pack_rows
from forecast.registry import Registry
from forecast.settings import Settings
from launcher.stack import Stack
from mules.loop import Mule
from tests.conftest import start_stack

ROW = {"date": "2018-01-21", "store": 10, "item": 23}
JSON = {"Content-Type": "application/json"}


def record(message: str, level: int = logging.INFO, **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("app.access", level, __file__, 1, message, (), None)
    rec.__dict__.update(fields)
    return rec


def test_text_lines_carry_the_fields_as_key_value() -> None:
    line = TextFormatter("worker").format(record("request", request_id="r-1", path="/predict", note="two words"))
    assert '[worker] app.access: request request_id=r-1 path=/predict note="two words"' in line


def test_json_lines_are_objects_with_role_and_fields() -> None:
    line = json_formatter("mule 2").format(record("request", request_id="r-1", rows=3))
    body = json.loads(line)
    assert body["role"] == "mule 2"
    assert body["level"] == "INFO"
    assert body["logger"] == "app.access"
    assert body["message"] == "request"
    assert body["request_id"] == "r-1"
    assert body["rows"] == 3
    assert "time" in body


def access_lines(stack: Stack, needle: str, count: int = 1) -> list[str]:
    """The access-log lines containing ``needle``, once nginx has written ``count`` of them (<= 1 s)."""
    lines: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = stack.access_log.read_text() if stack.access_log.exists() else ""
        lines = [line for line in text.splitlines() if needle in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.1)  # polling interval: nginx flushes its buffer every second
    raise AssertionError(f"{count} access line(s) with {needle!r} not written within 10 s: {lines}")


@pytest.mark.stack
def test_each_request_has_an_id_and_one_access_line(stack: Stack) -> None:
    mine = requests.post(f"{stack.url}/predict", json=ROW, headers={"X-Request-ID": "client-42.a"}, timeout=5)
    assert mine.headers["X-Request-ID"] == "client-42.a"
    assert mine.headers["X-Model-Version"] == "v1"
    assert not any(h.startswith("X-Forecast-") for h in mine.headers)  # internal: logged, not sent
    odd = requests.post(f"{stack.url}/predict", json=ROW, headers={"X-Request-ID": "has spaces"}, timeout=5)
    assert odd.headers["X-Request-ID"] != "has spaces"
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])  # one nginx made up
    bad = requests.post(f"{stack.url}/predict", json={**ROW, "store": 99}, timeout=5)
    (line,) = access_lines(stack, "request_id=client-42.a ")
    for part in ("method=POST", "path=/predict", "status=200", "duration_s=0.", "model_version=v1", "rows=1"):
        assert part in line
    (error_line,) = access_lines(stack, f"request_id={bad.headers['X-Request-ID']} ")
    assert "status=422" in error_line
    assert "error=invalid_input" in error_line


@pytest.mark.stack
def test_answers_nginx_gives_itself_are_logged_too(stack: Stack) -> None:
    too_big = requests.post(f"{stack.url}/predict", data=b"[" + b" " * 9_000_000 + b"]", headers=JSON, timeout=30)
    assert too_big.status_code == 413
    (line,) = access_lines(stack, f"request_id={too_big.headers['X-Request-ID']} ")
    assert "status=413" in line
    assert "error=body_too_large" in line


@pytest.fixture
def json_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    stack = start_stack(tmp_path, serving_registry, FORECAST_LOG_FORMAT="json")
    yield stack
    stack.stop()


@pytest.mark.stack
def test_json_format_makes_every_access_app_and_mule_line_an_object(json_stack: Stack) -> None:
    requests.post(f"{json_stack.url}/predict", json=ROW, headers={"X-Request-ID": "json-1"}, timeout=5)
    requests.post(f"{json_stack.url}/predict", json={**ROW, "item": 0}, headers={"X-Request-ID": "json-2"}, timeout=5)
    access = [json.loads(line) for line in access_lines(json_stack, '"request_id":"json-', count=2)]
    ok, bad = sorted(access, key=lambda obj: obj["request_id"])
    assert (ok["role"], ok["status"], ok["rows"], ok["model_version"], ok["error"]) == ("nginx", 200, 1, "v1", "")
    assert (bad["status"], bad["error"]) == (422, "invalid_input")
    assert isinstance(ok["duration_s"], float)
    app_lines = json_stack.uwsgi_log.read_text().splitlines()
    objects = [json.loads(line) for line in app_lines if line.startswith("{")]  # every JSON-looking line parses
    loaded = [obj for obj in objects if obj["logger"] == "mules.loop" and "loaded model" in obj["message"]]
    assert {obj["role"] for obj in loaded} == {"mule 1", "mule 2"}
    plain = [line for line in app_lines if " app." in line or " mules." in line or " forecast." in line]
    assert plain == [], "an app or mule line was not JSON"


# -- a failure crossing from mule to worker: logged once, with the job id ---------------------


class FakeUwsgi:
    """Just enough of the uwsgi module for Mule.score (pure logic; the real path is tested live)."""

    def __init__(self) -> None:
        self.cache: dict[str, bytes] = {}

    def mule_id(self) -> int:
        return 1

    def sharedarea_memoryview(self, area: int) -> memoryview:
        return memoryview(bytearray(4096))

    def set_user_harakiri(self, seconds: int) -> None:
        pass

    def cache_update(self, key: str, value: bytes, expires: int, cache: str) -> bool:
        self.cache[key] = value
        return True


class FailingPredictor:
    version = "v1"

    def predict(self, rows: object) -> object:
        raise RuntimeError("boom")


def test_a_mule_failure_is_logged_once_with_the_job_id(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    uwsgi = FakeUwsgi()
    mule = Mule(Settings(registry_dir=tmp_path, metrics_enabled=False), uwsgi)
    mule.predictor = FailingPredictor()  # type: ignore[assignment]
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = b"\0forecast-test-" + os.urandom(6).hex().encode()
    waiting.bind(address)
    job = Job(os.urandom(16), address, 1e12, pack_rows([17552], [10], [23]))
    try:
        with caplog.at_level(logging.INFO, logger="mules"):
            mule.score([job])
    finally:
        mule.notices.close()
        waiting.close()
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1
    assert errors_logged[0].jobs == job.key  # type: ignore[attr-defined]
    assert errors_logged[0].exc_info is not None  # the traceback stays in the mule's log
    result = Result.decode(uwsgi.cache[job.key])
    assert not result.ok
    assert result.error == "RuntimeError"


def test_the_worker_hands_the_failed_job_to_the_access_line_without_a_second_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    app.extensions["forecast"] = SimpleNamespace(settings=Settings())
    errors.init_app(app)
    telemetry.init_app(app, None)

    @app.post("/predict")
    def predict() -> str:
        raise Unavailable("prediction failed: RuntimeError", 1, "prediction_failed", job="ab12")

    with caplog.at_level(logging.INFO, logger="app"):
        response = app.test_client().post("/predict", json=ROW)
    assert response.status_code == 503
    assert "ab12" not in response.get_data(as_text=True)  # job ids are for the logs, not the client
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # nginx logs these headers on the request's access line and does not pass them on
    assert response.headers["X-Forecast-Job"] == "ab12"
    assert response.headers["X-Forecast-Error"] == "prediction_failed"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back for the tests that follow."""
    loggers = [logging.getLogger(name) for name in ("forecast", "app", "mules")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for lg, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level


@pytest.mark.usefixtures("restored_logging")
def test_app_log_lines_during_a_request_carry_its_id() -> None:
    app = Flask(__name__)
    app.extensions["forecast"] = SimpleNamespace(settings=Settings())
    errors.init_app(app)
    telemetry.init_app(app, None)
    configure_logging("INFO", "worker", "text", telemetry.log_context)
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger("app").handlers if h.get_name() == "forecast")
    handler.setStream(stream)  # type: ignore[attr-defined]

    @app.get("/work")
    def work() -> str:
        logging.getLogger("app.mule_client").warning("job x: something happened")
        return "ok"

    app.test_client().get("/work", headers={"X-Request-ID": "trace-7"})
    assert "job x: something happened request_id=trace-7" in stream.getvalue()
