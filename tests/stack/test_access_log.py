"""The access log (nginx) and the app's and mules' lines, from a real stack: one line per request, JSON on demand."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from forecast.registry import Registry
from launcher.stack import Stack
from tests.stack.stacks import start_stack

ROW = {"date": "2018-01-21", "store": 10, "item": 23}
JSON = {"Content-Type": "application/json"}


def record(message: str, level: int = logging.INFO, **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("app.access", level, __file__, 1, message, (), None)
    rec.__dict__.update(fields)
    return rec


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


def test_answers_nginx_gives_itself_are_logged_too(stack: Stack) -> None:
    too_big = requests.post(f"{stack.url}/predict", data=b"[" + b" " * 67_200_000 + b"]", headers=JSON, timeout=30)
    assert too_big.status_code == 413
    (line,) = access_lines(stack, f"request_id={too_big.headers['X-Request-ID']} ")
    assert "status=413" in line
    assert "error=body_too_large" in line


@pytest.fixture
def json_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    stack = start_stack(tmp_path, serving_registry, FORECAST_LOG_FORMAT="json")
    yield stack
    stack.stop()


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
