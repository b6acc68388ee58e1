"""A table of bad requests: each gets its 4xx status and a JSON error naming the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from launcher.stack import Stack

GOOD = {"date": "2018-01-21", "store": 10, "item": 23}
JSON = {"Content-Type": "application/json"}


def row(**changes: Any) -> str:
    return json.dumps({**GOOD, **changes})


CASES = [
    # (name, method, path, body, headers, status, code, field)
    ("malformed json", "POST", "/predict", '{"date": "2018-01-21",', JSON, 400, "malformed_json", None),
    ("text body", "POST", "/predict", row(), {"Content-Type": "text/plain"}, 415, "unsupported_media_type", None),
    ("no content type", "POST", "/predict", row(), {"Content-Type": ""}, 415, "unsupported_media_type", None),
    ("missing item", "POST", "/predict", json.dumps({"date": "2018-01-21", "store": 1}), JSON, 422, None, "item"),
    ("store as string", "POST", "/predict", row(store="10"), JSON, 422, "invalid_input", "store"),
    ("store as bool", "POST", "/predict", row(store=True), JSON, 422, "invalid_input", "store"),
    ("store as float", "POST", "/predict", row(store=10.5), JSON, 422, "invalid_input", "store"),
    ("impossible date", "POST", "/predict", row(date="2018-02-30"), JSON, 422, "invalid_input", "date"),
    ("date as number", "POST", "/predict", row(date=20180121), JSON, 422, "invalid_input", "date"),
    ("date not iso", "POST", "/predict", row(date="21/01/2018"), JSON, 422, "invalid_input", "date"),
    ("date too far", "POST", "/predict", row(date="2031-01-01"), JSON, 422, "invalid_input", "date"),
    ("unknown store", "POST", "/predict", row(store=11), JSON, 422, "invalid_input", "store"),
    ("item zero", "POST", "/predict", row(item=0), JSON, 422, "invalid_input", "item"),
    ("unknown item", "POST", "/predict", row(item=51), JSON, 422, "invalid_input", "item"),
    ("extra field", "POST", "/predict", row(color="red"), JSON, 422, "invalid_input", "color"),
    ("bad batch row", "POST", "/predict", f"[{row()}, {row(store='x')}]", JSON, 422, "invalid_input", "[1].store"),
    (
        "bad instance",
        "POST",
        "/predict",
        f'{{"instances": [{row()}, {row(item=99)}]}}',
        JSON,
        422,
        "invalid_input",
        "instances[1].item",
    ),
    ("instances not a list", "POST", "/predict", '{"instances": "all"}', JSON, 422, "invalid_input", "instances"),
    ("empty batch", "POST", "/predict", "[]", JSON, 422, "invalid_input", "body"),
    ("json string", "POST", "/predict", '"hello"', JSON, 422, "invalid_input", "body"),
    ("json null", "POST", "/predict", "null", JSON, 422, "invalid_input", "body"),
    ("no body, no query", "POST", "/predict", "", {}, 422, "invalid_input", "body"),
    ("empty json body", "POST", "/predict", "", JSON, 422, "invalid_input", "body"),
    (
        "batch over limit",
        "POST",
        "/predict",
        "[" + ",".join([row()] * 500_001) + "]",
        JSON,
        413,
        "batch_too_large",
        None,
    ),
    ("body over 64 MB", "POST", "/predict", "[" + " " * 67_200_000 + "]", JSON, 413, "body_too_large", None),
    ("legacy missing item", "POST", "/predict?date=2018-01-21&store=1", "", {}, 422, "invalid_input", "item"),
    ("legacy bad store", "POST", "/predict?date=2018-01-21&store=abc&item=1", "", {}, 422, "invalid_input", "store"),
    ("body and query", "POST", "/predict?date=2018-01-21&store=1&item=1", row(), JSON, 422, "invalid_input", "query"),
    ("legacy impossible date", "POST", "/predict?date=2018-02-30&store=1&item=1", "", {}, 422, "invalid_input", "date"),
    # long request heads: the app still answers (uWSGI's buffer holds what nginx forwards), else nginx does
    ("5 KB query string", "POST", "/predict?store=x&item=1&date=" + "9" * 5000, "", {}, 422, "invalid_input", "store"),
    ("request line over 8 KB", "POST", "/predict?date=" + "9" * 9000, "", {}, 414, "uri_too_long", None),
    ("header over 8 KB", "POST", "/predict", row(), {**JSON, "X-Big": "x" * 9000}, 431, "headers_too_large", None),
    ("GET predict", "GET", "/predict", "", {}, 405, "method_not_allowed", None),
    ("unknown path", "GET", "/nope", "", {}, 404, "not_found", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input(
    stack: Stack,
    method: str,
    path: str,
    body: str,
    headers: dict[str, str],
    status: int,
    code: str | None,
    field: str | None,
) -> None:
    response = requests.request(method, f"{stack.url}{path}", data=body.encode(), headers=headers, timeout=30)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()
    assert error["status"] == status
    assert error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error["field"] == field
        assert field.rsplit(".", 1)[-1].split("]")[-1] in error["message"] or field == "body"
