"""A drop-in for the Ray Serve sales service: its test script's calls, its model, its reload workflow.

Real nginx + uWSGI + mules serving a model built here in the original's style
(``tests/legacy_models.py``), imported from the original's kind of registry file served
on 127.0.0.1 (``FORECAST_LEGACY_REGISTRY_URL``), with ``FORECAST_LEGACY_ANSWERS=true``.
Every expected number is LightGBM's own prediction on the row the original built, and its
body the digits the original's FastAPI wrote; the model has more trees than one of lleaves'
blocks, so compiled trees summed in blocks would answer other last digits (asserted too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from forecast.data import SalesData
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import kaggle_test_rows, serving_directory
from tests.legacy_models import (
    DIGITS_ROUNDS,
    compiled_prediction,
    original_prediction,
    train_legacy_model,
    write_registry_file,
)
from tests.stack.stacks import start_stack

SCRIPT_ROWS = [("2018-01-02", 1, 1), ("2018-01-19", 2, 9), ("2018-01-21", 10, 23)]  # its test script's valid calls

# One xdist worker runs this module whole (make test: --dist loadgroup), so that
# its module fixture (the original's model, trained) is made once.
pytestmark = pytest.mark.xdist_group("test_legacy")


@pytest.fixture(scope="module")
def legacy_text(full_data: SalesData) -> str:
    return train_legacy_model(full_data, rounds=DIGITS_ROUNDS)


@pytest.fixture(scope="module")
def blocked(legacy_text: str, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int, int], float]:
    """What compiled trees summed in lleaves' blocks forecast for the test script's rows and the Kaggle grid."""
    rows = SCRIPT_ROWS + kaggle_test_rows()
    forecasts = compiled_prediction(legacy_text, rows, tmp_path_factory.mktemp("blocked") / "v", exact_sum=False)
    return dict(zip(rows, forecasts, strict=True))


def bootstrap(registry: Path, source: str) -> None:
    """``python -m forecast bootstrap`` as ``make serve`` and the image run it: an empty registry imports."""
    env = {**os.environ, "FORECAST_REGISTRY_DIR": str(registry), "FORECAST_LEGACY_REGISTRY_URL": source}
    done = subprocess.run([sys.executable, "-m", "forecast", "bootstrap"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"registered v1 from {source}" in done.stdout


class Original:
    """The original's published model registry file and model, served over HTTP from ``directory``."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory, self.url = directory, url
        self.registry_url = f"{url}/model_registry.json"

    def publish(self, model_text: str, name: str = "lgb_model.txt", **changes: Any) -> None:
        (self.directory / name).write_text(model_text)
        write_registry_file(self.directory, f"{self.url}/{name}", **changes)


@pytest.fixture
def original(tmp_path: Path, legacy_text: str) -> Iterator[Original]:
    directory = tmp_path / "published"
    directory.mkdir()
    with serving_directory(directory) as url:
        published = Original(directory, url)
        published.publish(legacy_text)
        yield published


@pytest.fixture
def legacy_stack(tmp_path: Path, original: Original) -> Iterator[Stack]:
    registry = tmp_path / "registry"
    bootstrap(registry, original.registry_url)
    stack = start_stack(tmp_path / "run", Registry(registry), FORECAST_LEGACY_REGISTRY_URL=original.registry_url,
                        FORECAST_LEGACY_ANSWERS="true")  # fmt: skip
    yield stack
    stack.stop()


def predict(stack: Stack, params: dict[str, Any] | list[tuple[str, Any]]) -> requests.Response:
    return requests.post(f"{stack.url}/predict", params=params, timeout=10)


def number(value: float) -> bytes:
    """A float as the original's FastAPI wrote it (Python's shortest repr)."""
    return json.dumps(value).encode()


def test_the_original_test_script_gets_the_original_answers(
    legacy_stack: Stack, legacy_text: str, blocked: dict[tuple[str, int, int], float]
) -> None:
    """Every call of the original's test_sales_forecast.py, in its order; bodies compared byte for byte."""
    url = legacy_stack.url
    assert "version v1 (compiled;" in legacy_stack.uwsgi_log.read_text()  # the mules score compiled trees
    assert requests.get(f"{url}/", timeout=5).content == b'"Sales Forecast Model is ready!"'
    assert requests.get(f"{url}/status", timeout=5).content == b'"Alive"'
    valid = SCRIPT_ROWS
    for row, expected in zip(valid, original_prediction(legacy_text, valid), strict=True):
        assert number(blocked[row]) != number(expected), row  # the model shows the difference: other digits
        answer = predict(legacy_stack, {"date": row[0], "store": row[1], "item": row[2]})
        assert (answer.status_code, answer.content) == (200, number(expected)), row
        assert answer.headers["Content-Type"] == "application/json"
    guardrails = [  # past the max date, before the min date, store 100, item 100
        ({"date": "2018-04-21", "store": 10, "item": 23}, b"-1.0"),
        ({"date": "2017-04-21", "store": 10, "item": 23}, b"-1.0"),
        ({"date": "2018-01-21", "store": 100, "item": 25}, b"-2.0"),
        ({"date": "2018-01-21", "store": 10, "item": 100}, b"-3.0"),
    ]
    for params, sentinel in guardrails:
        answer = predict(legacy_stack, params)
        assert (answer.status_code, answer.content) == (200, sentinel), params
    assert requests.get(f"{url}/reload", timeout=120).content == b'"Model reloaded"'
    again = predict(legacy_stack, {"date": "2018-01-02", "store": 1, "item": 1})
    assert again.content == number(original_prediction(legacy_text, valid[:1])[0])


def test_the_query_form_as_fastapi_read_it(legacy_stack: Stack, legacy_text: str) -> None:
    """The last of a repeated parameter, lenient integers, ids from 0, a trailing slash; a date that is none: 422."""
    expected = original_prediction(legacy_text, [("2018-02-10", 0, 7)])[0]
    repeated = predict(legacy_stack, [("date", "2018-02-10"), ("store", "3"), ("store", "0"), ("item", "7")])
    assert repeated.content == number(expected)
    lenient = predict(legacy_stack, {"date": "2018-02-10", "store": " 0 ", "item": "7.0"})
    assert lenient.content == number(expected)
    slashed = requests.post(f"{legacy_stack.url}/predict/", params={"date": "2018-02-10", "store": 0, "item": 7},
                            allow_redirects=False, timeout=5)  # fmt: skip
    location = f"{legacy_stack.url}/predict?date=2018-02-10&store=0&item=7"  # absolute, as FastAPI's
    assert (slashed.status_code, slashed.headers["Location"]) == (307, location)
    followed = requests.post(f"{legacy_stack.url}/predict/", params={"date": "2018-02-10", "store": 0, "item": 7},
                             timeout=5)  # fmt: skip
    assert followed.content == number(expected)  # a client following the 307 keeps method and parameters
    for path in ("/status/", "/reload/"):
        redirected = requests.get(f"{legacy_stack.url}{path}", allow_redirects=False, timeout=5)
        assert (redirected.status_code, redirected.headers["Location"]) == (307, legacy_stack.url + path[:-1])
    impossible = predict(legacy_stack, {"date": "2018-02-30", "store": 1, "item": 1})
    assert (impossible.status_code, impossible.json()["field"]) == (422, "date")
    mistyped = predict(legacy_stack, {"date": "2018-02-10", "store": "one", "item": 1})
    assert (mistyped.status_code, mistyped.json()["field"]) == (422, "store")


def test_the_kaggle_test_grid_through_the_batch_form_equals_lightgbm(
    legacy_stack: Stack, legacy_text: str, blocked: dict[tuple[str, int, int], float]
) -> None:
    """Every store x item x day of 2018-Q1 (45,000 rows): the original's features, LightGBM's numbers, exactly."""
    rows = kaggle_test_rows()
    expected = original_prediction(legacy_text, rows)
    assert sum(blocked[row] != value for row, value in zip(rows, expected, strict=True)) > len(rows) // 2
    instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]
    response = requests.post(f"{legacy_stack.url}/predict", json={"instances": instances}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    served = [p["sales"] for p in response.json()["predictions"]]
    assert max(abs(a - b) for a, b in zip(served, expected, strict=True)) == 0


def test_reload_imports_a_changed_model_and_refuses_a_bad_one(
    legacy_stack: Stack, original: Original, full_data: SalesData
) -> None:
    row = ("2018-03-03", 4, 44)
    params = {"date": row[0], "store": row[1], "item": row[2]}
    retrained = train_legacy_model(full_data, rounds=20)
    original.publish(retrained, name="lgb_model_2.txt")
    assert requests.get(f"{legacy_stack.url}/reload", timeout=120).status_code == 200
    assert predict(legacy_stack, params).content == number(original_prediction(retrained, [row])[0])
    unchanged = requests.get(f"{legacy_stack.url}/reload", timeout=120)
    assert unchanged.status_code == 200
    six_features = train_legacy_model(full_data, names=("store", "item", "month", "day", "year", "extra"))
    refusals = {
        "gone.txt": "HTTP 404",
        "page.txt": "not a LightGBM model text",
        "six.txt": "5: store item month day year",
    }
    (original.directory / "page.txt").write_text("<html>moved</html>")
    (original.directory / "six.txt").write_text(six_features)
    for name, reason in refusals.items():
        write_registry_file(original.directory, f"{original.url}/{name}")
        refused = requests.get(f"{legacy_stack.url}/reload", timeout=120)
        assert (refused.status_code, refused.json()["code"]) == (422, "reload_refused"), name
        assert reason in refused.json()["message"], refused.json()
        assert predict(legacy_stack, params).content == number(original_prediction(retrained, [row])[0])
    listed = Registry(Path(legacy_stack.settings().registry_dir)).versions()
    assert listed == ["v1", "v2"]  # the reloads without a change and the refused ones registered nothing
