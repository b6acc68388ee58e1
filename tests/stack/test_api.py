"""Every endpoint's contract, against real nginx + uWSGI + mules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from forecast.features import Rows
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import kaggle_test_rows


def offline(registry: Registry, rows: list[tuple[str, int, int]], version: str = "v1") -> np.ndarray:
    dates, stores, items = zip(*rows, strict=True)
    return registry.load(version).predict(Rows.from_columns(list(dates), list(stores), list(items)))


def test_root_names_the_service_version_and_endpoints(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "store-item sales forecast"
    assert body["model_version"] == "v1"
    assert set(body["endpoints"]) == {"status", "reload", "predict", "forecast", "actuals", "accuracy", "ui"}
    assert body["endpoints"]["ui"] == "GET /ui"


def test_status_reports_every_mule(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/status", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["model_version"] == "v1"
    assert [mule["id"] for mule in body["mules"]] == [1, 2]
    for mule in body["mules"]:
        assert mule["state"] == "ready"
        assert mule["model_version"] == "v1"
        assert mule["pid"] > 0
        assert mule["heartbeat_age_s"] < 10


def test_mules_scoring_compiled_trees_hold_neither_lightgbm_nor_llvm_nor_pandas(own_stack: Stack) -> None:
    """The default model's compiled trees are a shared library checked without LightGBM (forecast/compiled.py).

    A stack of its own: an explained forecast loads LightGBM into a mule (app/explain.py), as it should."""
    stack = own_stack
    requests.post(f"{stack.url}/predict", json=[{"date": "2017-01-01", "store": 1, "item": i} for i in range(1, 50)],
                  timeout=10).raise_for_status()  # fmt: skip
    mules = requests.get(f"{stack.url}/status", timeout=5).json()["mules"]
    assert len(mules) == 2
    assert "default version v1 (compiled;" in stack.uwsgi_log.read_text()
    for mule in mules:
        libraries = Path(f"/proc/{mule['pid']}/maps").read_text()
        assert "/versions/v1/compiled-" in libraries
        for absent in ("lib_lightgbm", "llvmlite", "/pandas/", "/scipy/"):
            assert absent not in libraries, absent


def test_predict_one_row(stack: Stack, serving_registry: Registry) -> None:
    response = requests.post(f"{stack.url}/predict", json={"date": "2018-01-21", "store": 10, "item": 23}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "date": "2018-01-21",
        "store": 10,
        "item": 23,
        "sales": pytest.approx(float(offline(serving_registry, [("2018-01-21", 10, 23)])[0]), rel=1e-12),
        "model_version": "v1",
    }


def test_legacy_query_parameters_answer_a_bare_number(stack: Stack, serving_registry: Registry) -> None:
    """The Ray Serve service's own test script: requests.post(url, params=...)."""
    params: dict[str, Any] = {"date": "2018-01-21", "store": 10, "item": 23}
    response = requests.post(f"{stack.url}/predict", params=params, timeout=5)
    assert response.status_code == 200
    assert response.json() == pytest.approx(float(offline(serving_registry, [("2018-01-21", 10, 23)])[0]), rel=1e-12)


def test_legacy_query_form_answers_like_the_original(stack: Stack) -> None:
    """Outside the served version's guardrails a sentinel (here: our model's stores 1-10), a bad parameter 422."""
    outside = requests.post(f"{stack.url}/predict", params={"date": "2018-01-21", "store": 11, "item": 23}, timeout=5)
    assert (outside.status_code, outside.content) == (200, b"-2.0")
    mistyped = requests.post(
        f"{stack.url}/predict", params={"date": "2018-01-21", "store": "ten", "item": 23}, timeout=5
    )
    assert (mistyped.status_code, mistyped.json()["field"]) == (422, "store")


@pytest.mark.parametrize("wrap", [False, True])
def test_batch_is_answered_in_order(stack: Stack, serving_registry: Registry, wrap: bool) -> None:
    rows = [("2018-01-01", 1, 1), ("2018-02-28", 10, 50), ("2017-07-04", 5, 23), ("2018-01-01", 1, 1)]
    instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]
    response = requests.post(f"{stack.url}/predict", json={"instances": instances} if wrap else instances, timeout=10)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [(p["date"], p["store"], p["item"]) for p in predictions] == rows
    assert [p["sales"] for p in predictions] == pytest.approx(offline(serving_registry, rows).tolist(), rel=1e-12)
    assert {p["model_version"] for p in predictions} == {"v1"}


def test_kaggle_test_set_in_one_call(stack: Stack, serving_registry: Registry) -> None:
    """45,000 rows: every store x item for the 90 days of 2018-Q1, split over the mules and reassembled."""
    rows = kaggle_test_rows()
    instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]
    response = requests.post(f"{stack.url}/predict", json={"instances": instances}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    predictions = response.json()["predictions"]
    assert len(predictions) == 45_000
    sales = np.array([p["sales"] for p in predictions])
    assert np.allclose(sales, offline(serving_registry, rows), rtol=1e-12)
    assert [p["item"] for p in predictions[::90]] == [i for _ in range(10) for i in range(1, 51)]


@pytest.mark.parametrize("path", ["/predict", "/models/default/predict"])
def test_a_chunked_body_is_read_whole(stack: Stack, serving_registry: Registry, path: str) -> None:
    """A client that streams its body (Transfer-Encoding: chunked, no Content-Length) gets the same answer."""
    dates = [f"2016-03-0{day}" for day in range(1, 8)]
    body = json.dumps([{"date": date, "store": 1, "item": 2} for date in dates]).encode()
    pieces = (body[i : i + 40] for i in range(0, len(body), 40))  # a generator: requests sends it chunked
    response = requests.post(f"{stack.url}{path}", data=pieces, headers={"Content-Type": "application/json"},
                             timeout=10)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    expected = offline(serving_registry, [(date, 1, 2) for date in dates])
    assert [answer["sales"] for answer in response.json()["predictions"]] == pytest.approx(expected.tolist(), rel=1e-9)
