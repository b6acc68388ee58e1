"""Batches at scale through the real stack: compiled trees in the mules, CSV in and out, 500,000 rows at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from forecast.features import Rows
from forecast.registry import COMPILED_TOLERANCE, Registry
from launcher.stack import Stack
from tests.helpers import kaggle_test_rows
from tests.stack.stacks import start_stack


def lightgbm(registry: Registry, dates: list[str], stores: list[int], items: list[int]) -> np.ndarray:
    """LightGBM's own forecasts of the rows, in this process (no compiled trees)."""
    return registry.load("v1", compiled=False).predict(Rows.from_columns(dates, stores, items))


def kaggle_csv() -> tuple[bytes, list[str], list[int], list[int]]:
    """The Kaggle test set as its file: ``id,date,store,item``, ids from 0."""
    rows = kaggle_test_rows()
    lines = [f"{n},{d},{s},{i}\n" for n, (d, s, i) in enumerate(rows)]
    return (
        ("id,date,store,item\n" + "".join(lines)).encode(),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )


def test_the_mules_score_with_compiled_trees_what_lightgbm_forecasts(stack: Stack, serving_registry: Registry) -> None:
    library = serving_registry.compiled_paths("v1")[0]
    assert library.exists()  # promote compiled it
    assert serving_registry.compiled_state("v1") == ""
    body, dates, stores, items = kaggle_csv()
    response = requests.post(f"{stack.url}/predict", data=body, headers={"Content-Type": "text/csv"}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    sales = np.array([p["sales"] for p in response.json()["predictions"]])
    difference = np.abs(sales - lightgbm(serving_registry, dates, stores, items))
    assert difference.max() <= COMPILED_TOLERANCE
    assert "default version v1 (compiled;" in stack.uwsgi_log.read_text()
    for mule in requests.get(f"{stack.url}/status", timeout=5).json()["mules"]:
        maps = Path(f"/proc/{mule['pid']}/maps").read_text()
        assert str(library) in maps  # loaded as a shared library ...
        assert "llvmlite" not in maps  # ... without LLVM, which only compiling needs


def test_the_kaggle_test_file_is_answered_as_its_submission_file(stack: Stack, serving_registry: Registry) -> None:
    body, dates, stores, items = kaggle_csv()
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    response = requests.post(f"{stack.url}/predict", data=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "text/csv"
    assert response.headers["X-Model-Version"] == "v1"
    header, *lines = response.text.splitlines()
    assert header == "id,sales"
    ids, sales = zip(*(line.split(",") for line in lines), strict=True)
    assert list(ids) == [str(n) for n in range(45_000)]
    expected = lightgbm(serving_registry, dates, stores, items)
    assert np.abs(np.array(sales, dtype=float) - expected).max() <= COMPILED_TOLERANCE
    json_answer = requests.post(f"{stack.url}/predict", json=[
        {"date": d, "store": s, "item": i} for d, s, i in zip(dates, stores, items, strict=True)
    ], timeout=60).json()  # fmt: skip
    assert [p["sales"] for p in json_answer["predictions"]] == [float(value) for value in sales]  # the same numbers


@pytest.fixture
def bulk_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    """A stack for bulk scoring: a deadline of a minute, as a nightly job would set."""
    stack = start_stack(tmp_path, serving_registry, FORECAST_DEADLINE_MS="60000", FORECAST_WORKER_HARAKIRI_S="90")
    yield stack
    stack.stop()


def test_500000_rows_in_one_request_are_answered_whole_and_in_order(
    bulk_stack: Stack, serving_registry: Registry
) -> None:
    """Every series for 1,000 days, as CSV and as JSON (read a piece at a time): the answer is streamed (no length
    up front), every row there, in order."""
    days = np.datetime64("2016-01-01") + np.arange(1000)
    stores, items, dates = np.meshgrid(np.arange(1, 11), np.arange(1, 51), days, indexing="ij")
    dates_text = np.datetime_as_string(dates.ravel()).tolist()
    body = "date,store,item\n" + "".join(
        f"{d},{s},{i}\n" for d, s, i in zip(dates_text, stores.ravel().tolist(), items.ravel().tolist(), strict=True)
    )
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    response = requests.post(f"{bulk_stack.url}/predict", data=body.encode(), headers=headers, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert "Content-Length" not in response.headers  # sent as it was encoded
    header, *lines = response.text.splitlines()
    assert header == "date,store,item,sales"
    assert len(lines) == 500_000
    assert lines[0].startswith("2016-01-01,1,1,")
    assert lines[-1].startswith(f"{dates_text[-1]},10,50,")
    sales = np.array([line.rpartition(",")[2] for line in lines], dtype=float)
    expected = serving_registry.load("v1").predict(
        Rows(dates.ravel(), stores.ravel().astype(np.int64), items.ravel().astype(np.int64))
    )
    assert np.abs(sales - expected).max() <= COMPILED_TOLERANCE
    rows = [{"date": d, "store": s, "item": i} for d, s, i in zip(dates_text, stores.ravel().tolist(),
                                                                  items.ravel().tolist(), strict=True)]  # fmt: skip
    response = requests.post(f"{bulk_stack.url}/predict", json={"instances": rows}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    predictions = response.json()["predictions"]
    assert [p["date"] for p in predictions[::50_000]] == dates_text[::50_000]
    assert [p["sales"] for p in predictions] == sales.tolist()  # the same numbers as the CSV answer, in order
