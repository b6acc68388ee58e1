"""Log lines: text and JSON formats, the request id on the app's lines, a mule's failure logged once."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import errors, telemetry
from app.errors import Reason, Unavailable
from mules.loop import Mule
from serving.logs import TextFormatter, configure_logging, json_formatter
from serving.messages import Job, Result, encode_rows
from serving.settings import Settings
from tests.unit.fake_uwsgi import FakeUwsgi

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


# -- a failure crossing from mule to worker: logged once, with the job id ---------------------


class FailingPredictor:
    version = "v1"

    def predict(self, rows: object) -> object:
        raise RuntimeError("boom")


def test_a_mule_failure_is_logged_once_with_the_job_id(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    uwsgi = FakeUwsgi()
    mule = Mule(Settings(registry_dir=tmp_path, metrics_enabled=False), uwsgi.mule(1))
    mule.models.get = lambda key: (FailingPredictor(), False)  # type: ignore[method-assign,assignment,return-value]
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = b"\0forecast-test-" + os.urandom(6).hex().encode()
    waiting.bind(address)
    job = Job(os.urandom(16), address, 1e12, encode_rows([17552], [10], [23]), "default", "v1")
    try:
        with caplog.at_level(logging.INFO, logger="mules"):
            mule.jobs.score([job])
    finally:
        mule.jobs.notices.close()
        waiting.close()
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1
    assert errors_logged[0].jobs == job.key  # type: ignore[attr-defined]
    assert errors_logged[0].exc_info is not None  # the traceback stays in the mule's log
    result = Result.decode(uwsgi.caches["results"][job.key])
    assert not result.ok
    assert result.error == "RuntimeError"


def test_the_worker_hands_the_failed_job_to_the_access_line_without_a_second_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    errors.init_app(app, Settings().retry_after_s)
    telemetry.init_app(app, None)

    @app.post("/predict")
    def predict() -> str:
        raise Unavailable("prediction failed: RuntimeError", Reason.PREDICTION_FAILED, job="ab12")

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
    errors.init_app(app, Settings().retry_after_s)
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
