"""``/forecast``'s use case with stand-in mules: limits, defaults, the GET form's series, versions without bands."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from app import create_app
from forecast.registry import Registry
from serving.settings import Settings
from tests.helpers import clone_version
from tests.unit.test_predict import StandInMules, StandInPool


def make_app(registry: Registry, max_rows: int = 100_000) -> Flask:
    settings = Settings(registry_dir=registry.root, metrics_enabled=False, max_batch_rows=max_rows)
    return create_app(settings, StandInMules(), StandInPool())


def serve_a_version_without_calibration(registry: Registry) -> None:
    """v2: v1 as a version trained without a backtest (or before calibrations), made production."""
    clone_version(registry, "v1", "v2")
    path = registry.metadata_path("v2")
    metadata = json.loads(path.read_text())
    metadata["intervals"] = None
    path.write_text(json.dumps(metadata))
    registry.set_alias("production", "v2")


def get(app: Flask, query: str) -> tuple[int, Any]:
    response = app.test_client().get(f"/forecast?{query}")
    return response.status_code, response.get_json()


def test_more_daily_rows_than_the_limit_is_413_naming_both(registry: Registry) -> None:
    status, body = get(make_app(registry, max_rows=100), "days=9")  # 3 stores x 4 items x 9 days
    assert status == 413
    assert body["message"] == "a forecast may have at most 100 daily rows (series x days); this one has 12 x 9 = 108"


def test_the_get_forms_store_alone_means_its_every_item_from_the_day_after_training(registry: Registry) -> None:
    status, body = get(make_app(registry), "store=2&days=3")
    assert status == 200, body
    trained_through = registry.metadata("v1")["data"]["trained_through"]
    assert trained_through == "2014-12-31"
    assert [(r["date"], r["store"], r["item"]) for r in body["forecasts"][:4]] == [
        ("2015-01-01", 2, 1), ("2015-01-02", 2, 1), ("2015-01-03", 2, 1), ("2015-01-01", 2, 2)]  # fmt: skip
    assert len(body["forecasts"]) == 4 * 3
    assert [r["sales"] for r in body["forecasts"][:3]] == [12.01] * 3  # the stand-in: 10 + store + item / 100


def test_a_version_without_a_calibration_answers_without_bands_and_says_why(registry: Registry) -> None:
    serve_a_version_without_calibration(registry)
    status, body = get(make_app(registry), "store=1&item=1&days=2")
    assert status == 200, body
    assert "has no interval calibration" in body["intervals"]["none"]
    assert all("lower" not in row and "upper" not in row for row in body["forecasts"])


def test_a_level_the_backtest_has_too_few_errors_for_is_422_naming_level(registry: Registry) -> None:
    status, body = get(make_app(registry), "days=14&granularity=week&totals=all&level=99.8&start=2015-01-05")
    assert status == 422
    assert body["field"] == "level"
    assert "too few errors of week/all/7 rows for a 99.8% band" in body["message"]


@pytest.mark.parametrize(
    ("query", "rows"),
    [("days=14&granularity=week&totals=all&start=2015-01-05", 2), ("days=3&totals=store", 9),
     ("days=3&totals=item", 12), ("item=2&days=1", 3)],
)  # fmt: skip
def test_totals_have_one_row_per_group_and_bucket(registry: Registry, query: str, rows: int) -> None:
    status, body = get(make_app(registry), query)
    assert status == 200, body
    assert len(body["forecasts"]) == rows


def test_no_level_asked_is_an_answer_without_bands(registry: Registry) -> None:
    response = make_app(registry).test_client().post("/forecast", json={"days": 2, "level": []})
    assert response.status_code == 200
    assert response.get_json()["intervals"] == {"none": "no level was asked for (level: [])"}


def test_a_predict_row_may_ask_for_its_bands_a_batch_for_the_same_ones(registry: Registry) -> None:
    client = make_app(registry).test_client()
    row = {"date": "2015-01-05", "store": 2, "item": 3, "level": [95, 80]}
    one = client.post("/predict", json=row).get_json()
    assert list(one) == ["date", "store", "item", "sales", "model_version", "lower", "upper"]
    assert list(one["lower"]) == ["80", "95"]
    assert one["lower"]["95"] <= one["lower"]["80"] <= one["sales"] <= one["upper"]["80"] <= one["upper"]["95"]
    batch = client.post("/predict", json=[row, {**row, "item": 4}]).get_json()["predictions"]
    assert batch[0] == one
    csv = client.post("/predict", json=[row], headers={"Accept": "text/csv"}).get_data(as_text=True)
    assert csv.splitlines()[0] == "date,store,item,sales,lower_80,upper_80,lower_95,upper_95"
    mixed = client.post("/predict", json={"instances": [row, {**row, "level": [80]}]})
    assert mixed.status_code == 422
    assert mixed.get_json()["field"] == "instances[1].level"
    plain = client.post("/predict", json={"date": "2015-01-05", "store": 2, "item": 3}).get_json()
    assert "lower" not in plain


def test_a_predict_row_of_a_version_without_calibration_says_why_it_has_no_bands(registry: Registry) -> None:
    serve_a_version_without_calibration(registry)
    row = {"date": "2015-01-05", "store": 2, "item": 3, "level": [80]}
    answer = make_app(registry).test_client().post("/predict", json=row).get_json()
    assert "has no interval calibration" in answer["intervals"]["none"]
    assert "lower" not in answer
