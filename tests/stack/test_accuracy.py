"""``GET /accuracy`` through the real stack, against actuals in a real SQLite file and a real PostgreSQL.

Each stack here serves a copy of the serving registry (v1: production, calibrated; v2: no calibration;
both trained on 2015-2016) with a store of its own, loaded with 30 series' actuals of 2016 (the
baseline's year) and of 2017's first quarter.  Every figure is computed again here, independently, from
``/predict``'s answers (its forecasts and its bands) and the rows loaded.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from forecast.data import SalesData
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import wait_for
from tests.postgres import new_database
from tests.stack.prometheus import PROMETHEUS_DIR, prometheus_of, results
from tests.stack.scrape import Scrape, scrape, scrape_until
from tests.stack.stacks import start_stack

CSV = {"Content-Type": "text/csv"}
Sold = list[tuple[str, int, int, int]]  # (date, store, item, sales) rows
WINDOW = "start=2017-01-02&end=2017-02-26"  # eight ISO weeks, Monday to Sunday
pytestmark = pytest.mark.xdist_group("accuracy")  # its stacks and loads are costly: one worker


@pytest.fixture(scope="module")
def actuals(full_data: SalesData) -> Sold:
    """(date, store, item, sales) of stores 1-3 x items 1-10, 2016-01-01..2017-03-31."""
    rows = full_data.rows
    chosen = full_data.select((rows.stores <= 3) & (rows.items <= 10) & (rows.dates >= np.datetime64("2016-01-01"))
                              & (rows.dates <= np.datetime64("2017-03-31")))  # fmt: skip
    dates = np.datetime_as_string(chosen.rows.dates, unit="D").tolist()
    return list(zip(dates, chosen.rows.stores.tolist(), chosen.rows.items.tolist(), chosen.sales.tolist(),
                    strict=True))  # fmt: skip


def as_csv(rows: Sold) -> bytes:
    return ("date,store,item,sales\n" + "".join(f"{d},{s},{i},{n}\n" for d, s, i, n in rows)).encode()


def own_registry(serving_registry: Registry, where: Path) -> Registry:
    shutil.copytree(serving_registry.root, where / "registry")
    return Registry(where / "registry")


def loaded_stack(where: Path, serving_registry: Registry, rows: Sold,
                 **env: str) -> Stack:  # fmt: skip
    stack = start_stack(where, own_registry(serving_registry, where), **env)
    answer = requests.post(f"{stack.url}/actuals", data=as_csv(rows), headers=CSV, timeout=120)
    assert answer.json() == {"added": len(rows), "replaced": 0, "unchanged": 0}, answer.text
    return stack


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry,
                 actuals: Sold) -> Iterator[Stack]:  # fmt: skip
    # No gauges here: what the mules score is the tests'.
    stack = loaded_stack(tmp_path_factory.mktemp("accuracy"), serving_registry, actuals,
                         FORECAST_ACCURACY_REFRESH_S="0")  # fmt: skip
    yield stack
    stack.stop()


def accuracy(stack: Stack, query: str) -> dict[str, Any]:
    answer = requests.get(f"{stack.url}/accuracy?{query}", timeout=60)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def entry(body: dict[str, Any], version: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [e for e in body["versions"] if e["version"] == version]
    assert len(found) == 1, body
    return found[0]


def independent(stack: Stack, rows: Sold, first: str, last: str,
                version: str) -> dict[str, Any]:  # fmt: skip
    """The window's scores from /predict (pinned to ``version`` through a named route when not production) and
    the loaded rows, by the definitions in docs/accuracy.md."""
    window = [r for r in rows if first <= r[0] <= last]
    wanted = [{"date": d, "store": s, "item": i, "level": [80, 95]} for d, s, i, _ in window]
    answer: list[dict[str, Any]] = requests.post(f"{stack.url}/predict", json=wanted, timeout=60).json()[
        "predictions"]  # fmt: skip
    assert {p["model_version"] for p in answer} == {version}
    forecast = np.array([p["sales"] for p in answer])
    actual = np.array([n for *_, n in window], dtype=float)
    by_key = {(d, s, i): n for d, s, i, n in rows}
    lagged = [by_key.get((str(np.datetime64(d) - 364), s, i)) for d, s, i, _ in window]
    has = np.array([x is not None for x in lagged])
    baseline = np.array([x if x is not None else np.nan for x in lagged], dtype=float)

    def scores(f: np.ndarray, a: np.ndarray) -> dict[str, float]:
        terms = [0.0 if x == y == 0 else 200 * abs(x - y) / (abs(x) + abs(y)) for x, y in zip(f, a, strict=True)]
        return {"smape": float(np.mean(terms)), "mae": float(np.mean(np.abs(f - a))), "bias": float(np.mean(f - a))}

    coverage = {level: float(np.mean([p["lower"][level] <= a <= p["upper"][level]
                                      for p, a in zip(answer, actual, strict=True)]))
                for level in ("80", "95")}  # fmt: skip
    return {"rows": len(window), **scores(forecast, actual), "coverage": coverage,
            "baseline": {"rows": int(has.sum()), **scores(baseline[has], actual[has])}}  # fmt: skip


def close(found: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, dict):
            close(found[name], value)
        else:
            assert found[name] == pytest.approx(value, abs=1e-9, rel=0), name


def test_production_s_accuracy_is_what_predict_and_the_actuals_give(sqlite_stack: Stack,
                                                                    actuals: Sold) -> None:  # fmt: skip
    body = accuracy(sqlite_stack, WINDOW)
    assert (body["model"], body["start"], body["end"], body["granularity"]) == ("default", "2017-01-02",
                                                                                  "2017-02-26", "day")  # fmt: skip
    v1 = entry(body, "v1")
    assert v1["aliases"] == ["production"]
    assert v1["rows"] == 30 * 56
    close(v1, independent(sqlite_stack, actuals, "2017-01-02", "2017-02-26", "v1"))
    assert v1["smape"] < v1["baseline"]["smape"]  # the model beats last year's sales on its own data


def test_a_version_asked_for_is_judged_and_one_without_bands_has_no_coverage(sqlite_stack: Stack) -> None:
    body = accuracy(sqlite_stack, WINDOW + "&version=v2")
    assert [e["version"] for e in body["versions"]] == ["v1", "v2"]
    v2 = entry(body, "v2")
    assert v2["aliases"] == []
    assert "coverage" not in v2
    assert v2["rows"] == 30 * 56
    assert v2["smape"] != entry(body, "v1")["smape"]
    unknown = requests.get(f"{sqlite_stack.url}/accuracy?version=v9", timeout=30)
    assert (unknown.status_code, unknown.json()["field"]) == (422, "version")


def test_weekly_accuracy_compares_weekly_sums_and_breaks_down_by_store(sqlite_stack: Stack,
                                                                       actuals: Sold) -> None:  # fmt: skip
    body = accuracy(sqlite_stack, WINDOW + "&granularity=week&by=store")
    v1 = entry(body, "v1")
    assert v1["rows"] == 30 * 8
    daily = [r for r in actuals if "2017-01-02" <= r[0] <= "2017-02-26"]
    wanted = [{"date": d, "store": s, "item": i} for d, s, i, _ in daily]
    forecast = [p["sales"] for p in requests.post(f"{sqlite_stack.url}/predict", json=wanted, timeout=60).json()[
        "predictions"]]  # fmt: skip
    weeks: dict[tuple[int, int, int], list[float]] = {}
    for (d, s, i, n), f in zip(daily, forecast, strict=True):
        week = int((np.datetime64(d) - np.datetime64("2017-01-02")).astype(int)) // 7
        sums = weeks.setdefault((s, i, week), [0.0, 0.0])
        sums[0], sums[1] = sums[0] + f, sums[1] + n
    errors = np.array([f - a for f, a in weeks.values()])
    assert v1["mae"] == pytest.approx(float(np.abs(errors).mean()), abs=1e-9, rel=0)
    assert v1["bias"] == pytest.approx(float(errors.mean()), abs=1e-9, rel=0)
    assert set(v1["coverage"]) == {"80", "95"}
    assert [(g["store"], g["rows"]) for g in v1["breakdown"]] == [(1, 80), (2, 80), (3, 80)]
    store_2 = np.array([f - a for (s, _, _), (f, a) in weeks.items() if s == 2])
    assert v1["breakdown"][1]["bias"] == pytest.approx(float(store_2.mean()), abs=1e-9, rel=0)


def test_answers_are_kept_until_actuals_arrive_for_their_window(sqlite_stack: Stack,
                                                                actuals: Sold) -> None:  # fmt: skip
    query = "start=2017-03-06&end=2017-03-19"
    first = accuracy(sqlite_stack, query)
    scored = scrape(sqlite_stack.url).value("forecast_mule_batch_rows_sum")
    assert scored > 0
    assert accuracy(sqlite_stack, query) == first
    assert scrape(sqlite_stack.url).value("forecast_mule_batch_rows_sum") == scored  # kept: nothing scored
    outside = requests.post(f"{sqlite_stack.url}/actuals", data=as_csv([("2017-03-31", 1, 1, 7)]), headers=CSV,
                            timeout=30)  # fmt: skip
    assert outside.status_code == 200
    assert accuracy(sqlite_stack, query) == first
    assert scrape(sqlite_stack.url).value("forecast_mule_batch_rows_sum") == scored
    changed = [(d, s, i, n + 30) for d, s, i, n in actuals if d == "2017-03-10" and s == 1]
    assert requests.post(f"{sqlite_stack.url}/actuals", data=as_csv(changed), headers=CSV,
                         timeout=30).json()["replaced"] == 10  # fmt: skip
    after = entry(accuracy(sqlite_stack, query), "v1")
    assert after["bias"] < entry(first, "v1")["bias"]  # the new actuals are higher: the forecasts fall short more
    requests.post(f"{sqlite_stack.url}/actuals", data=as_csv([r for r in actuals if r[0] == "2017-03-10"]),
                  headers=CSV, timeout=30)  # as they were, for the other tests  # fmt: skip
    assert accuracy(sqlite_stack, query) == first


def test_the_default_window_is_the_last_28_days_with_actuals_and_bad_queries_are_named(sqlite_stack: Stack) -> None:
    body = accuracy(sqlite_stack, "")
    assert (body["start"], body["end"]) == ("2017-03-04", "2017-03-31")
    for query, field in (("by=day", "by"), ("granularity=month", "granularity"), ("start=2017-02-30", "start"),
                         ("start=2016-01-01&end=2017-03-01", "start"), ("colour=red", "colour"),
                         ("start=2017-03-02&end=2017-03-01", "start"),
                         ("end=0001-01-04&by=item", "end")):  # fmt: skip  # the last: a 500 schemathesis found
        answer = requests.get(f"{sqlite_stack.url}/accuracy?{query}", timeout=30)
        assert (answer.status_code, answer.json()["field"]) == (422, field), query
    missing = requests.get(f"{sqlite_stack.url}/accuracy?model=nope", timeout=30)
    assert (missing.status_code, missing.json()["code"]) == (404, "model_not_found")


def test_a_restart_loses_no_actuals_and_answers_the_same(tmp_path: Path, serving_registry: Registry,
                                                         actuals: Sold) -> None:  # fmt: skip
    stack = loaded_stack(tmp_path, serving_registry, actuals[:3000])
    try:
        before = accuracy(stack, "start=2016-03-01&end=2016-03-28")
        assert entry(before, "v1")["rows"] > 0
    finally:
        stack.stop()
    again = start_stack(tmp_path, Registry(tmp_path / "registry"))
    try:
        assert accuracy(again, "start=2016-03-01&end=2016-03-28") == before
    finally:
        again.stop()


def test_postgresql_answers_what_sqlite_answers(tmp_path: Path, serving_registry: Registry, postgres: str,
                                                sqlite_stack: Stack, actuals: Sold) -> None:  # fmt: skip
    stack = loaded_stack(tmp_path, serving_registry, actuals, FORECAST_ACTUALS_URL=new_database(postgres))
    try:
        for query in (WINDOW, WINDOW + "&granularity=week&by=item"):
            assert accuracy(stack, query) == accuracy(sqlite_stack, query)
    finally:
        stack.stop()


def test_the_gauges_hold_production_s_last_7_and_28_days(tmp_path: Path, serving_registry: Registry,
                                                         actuals: Sold) -> None:  # fmt: skip
    stack = loaded_stack(tmp_path, serving_registry, actuals, FORECAST_ACCURACY_REFRESH_S="1")
    try:
        gauges_match(stack)
    finally:
        stack.stop()


def gauges_match(stack: Stack) -> None:
    for window, start in (("7d", "2017-03-25"), ("28d", "2017-03-04")):
        expected = entry(accuracy(stack, f"start={start}&end=2017-03-31"), "v1")
        labels = {"model": "default", "version": "v1", "alias": "production", "window": window}
        rows = expected["rows"]

        def written(now: Scrape, labels: dict[str, str] = labels, rows: int = rows) -> bool:
            return now.value("forecast_realised_rows", **labels) == rows

        found = scrape_until(stack.url, written, timeout_s=30)
        assert found.value("forecast_realised_smape", **labels) == pytest.approx(expected["smape"], abs=1e-9)
        assert found.value("forecast_realised_bias", **labels) == pytest.approx(expected["bias"], abs=1e-9)
        assert found.value("forecast_realised_baseline_smape", **labels) == pytest.approx(
            expected["baseline"]["smape"], abs=1e-9)  # fmt: skip
        assert found.value("forecast_realised_coverage", **labels, level="80") == pytest.approx(
            expected["coverage"]["80"], abs=1e-9)  # fmt: skip
    assert found.value("forecast_holdout_smape", model="default", version="v1") > 0
    assert found.value("forecast_accuracy_alert_factor") == 1.25


def alert_expr(name: str) -> str:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    (expr,) = [rule["expr"] for group in groups for rule in group["rules"] if rule.get("alert") == name]
    return str(expr)


def test_the_accuracy_alert_fires_in_prometheus_when_one_store_sells_40_percent_more(
    tmp_path: Path, serving_registry: Registry, actuals: Sold
) -> None:
    """The committed rules (their ``for:`` at 0s) in a real Prometheus scraping a stack whose gauges refresh
    every second: quiet on the actuals as generated, firing for production once store 1's last 28 days are
    +40%."""
    (tmp_path / "prometheus").mkdir()
    stack = loaded_stack(tmp_path, serving_registry, actuals, FORECAST_ACCURACY_REFRESH_S="1")
    try:
        with prometheus_of(stack, tmp_path / "prometheus", without_for=True) as prometheus:
            production = '{alias="production", window="28d"}'
            wait_for(lambda: results(prometheus, f"forecast_realised_smape{production} > 0"), 60)
            wait_for(lambda: results(prometheus, "forecast_accuracy_alert_factor"), 30)
            assert results(prometheus, alert_expr("ForecastAccuracyDegraded")) == []  # its condition: false
            assert results(prometheus, 'ALERTS{alertname="ForecastAccuracyDegraded"}') == []
            shifted = [(d, s, i, round(n * 1.4)) for d, s, i, n in actuals if d >= "2017-03-04" and s == 1]
            loaded = requests.post(f"{stack.url}/actuals", data=as_csv(shifted), headers=CSV, timeout=60)
            assert loaded.json()["replaced"] > 0.9 * len(shifted)
            firing = 'ALERTS{alertname="ForecastAccuracyDegraded", alertstate="firing"}'
            wait_for(lambda: results(prometheus, firing), 60, lambda: str(results(prometheus, "ALERTS")))
            (alert,) = results(prometheus, firing)
            assert (alert["metric"]["model"], alert["metric"]["version"]) == ("default", "v1")
    finally:
        stack.stop()
