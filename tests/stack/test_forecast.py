"""``/forecast`` through the real stack: daily values are /predict's, weeks and totals their sums, bands nest,
explanations multiply back to the forecast, every bad input is named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import requests

from forecast.features import Rows
from forecast.intervals import Calibration, level_index
from forecast.registry import Registry
from launcher.stack import Stack
from tests.stack.scrape import Scrape, scrape_until, settled_scrape
from tests.stack.test_access_log import access_lines


def forecast(stack: Stack, body: dict[str, Any] | None = None, query: str = "", **headers: str) -> requests.Response:
    if body is None:
        return requests.get(f"{stack.url}/forecast?{query}", headers=headers, timeout=120)
    return requests.post(f"{stack.url}/forecast", json=body, headers=headers, timeout=120)


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text[:500]
    found: dict[str, Any] = response.json()
    return found


def test_daily_forecasts_are_what_predict_answers_bit_for_bit(stack: Stack) -> None:
    series = [{"store": 3, "item": 23}, {"store": 1, "item": 1}, {"store": 10, "item": 50}]
    answer = ok(forecast(stack, {"series": series, "start": "2017-01-30", "days": 40}))
    assert answer["model_version"] == "v1"
    assert [(r["store"], r["item"]) for r in answer["forecasts"]] == [(s["store"], s["item"]) for s in series
                                                                     for _ in range(40)]  # fmt: skip
    rows = [{"date": r["date"], "store": r["store"], "item": r["item"]} for r in answer["forecasts"]]
    predicted = requests.post(f"{stack.url}/predict", json=rows, timeout=60).json()["predictions"]
    assert [r["sales"] for r in answer["forecasts"]] == [p["sales"] for p in predicted]
    assert answer["forecasts"][0]["date"] == "2017-01-30"
    assert answer["forecasts"][39]["date"] == "2017-03-10"


def test_weeks_and_totals_are_exact_sums_of_the_daily_forecasts(stack: Stack) -> None:
    query = "store=3&start=2017-02-01&days=30"  # a Wednesday: weeks of 5, 7, 7, 7 and 4 days
    daily = ok(forecast(stack, query=query))["forecasts"]
    assert len(daily) == 50 * 30
    weekly_totals = ok(forecast(stack, query=query + "&granularity=week&totals=store"))["forecasts"]
    assert [(w["date"], w["days"], w["store"], w["item"]) for w in weekly_totals] == [
        ("2017-02-01", 5, 3, None), ("2017-02-06", 7, 3, None), ("2017-02-13", 7, 3, None),
        ("2017-02-20", 7, 3, None), ("2017-02-27", 4, 3, None)]  # fmt: skip
    by_day = [sum(daily[n * 30 + d]["sales"] for n in range(50)) for d in range(30)]  # series order, day by day
    assert [w["sales"] for w in weekly_totals] == [sum(by_day[a:b]) for a, b in
                                                   ((0, 5), (5, 12), (12, 19), (19, 26), (26, 30))]  # fmt: skip
    weekly = ok(forecast(stack, query=query + "&granularity=week"))["forecasts"]
    assert weekly[5 + 1]["sales"] == sum(r["sales"] for r in daily[30 + 5 : 30 + 12])  # item 2's second week


def test_bands_nest_around_the_forecast_and_never_go_below_zero(stack: Stack) -> None:
    for query in ("store=3&item=23&days=91&level=80,95,99",
                  "days=60&granularity=week&totals=item&level=60&level=90", "days=200&totals=all"):  # fmt: skip
        answer = ok(forecast(stack, query=query))
        levels = answer["intervals"]["levels"]
        assert answer["intervals"]["method"].startswith("split conformal")
        for row in answer["forecasts"]:
            lows = [row["lower"][level] for level in reversed(levels)]
            highs = [row["upper"][level] for level in levels]
            assert lows[0] >= 0, row
            assert lows == sorted(lows), row
            assert lows[-1] <= row["sales"] <= highs[0], row
            assert highs == sorted(highs), row


def test_each_band_is_the_versions_calibration_at_the_rows_horizon(stack: Stack, serving_registry: Registry) -> None:
    rows = ok(forecast(stack, query="store=3&item=23&start=2016-10-01&days=366&level=95"))["forecasts"]
    cell = Calibration.from_dict(serving_registry.metadata("v1")["intervals"]).cells["day/series/1"]
    sales = np.array([r["sales"] for r in rows])
    trained_through = np.datetime64(serving_registry.metadata("v1")["data"]["trained_through"])
    horizons = (np.array([r["date"] for r in rows], dtype="datetime64[D]") - trained_through).astype(np.int64)
    expected = cell.halfwidths(horizons, sales, [level_index(95)])[:, 0]
    assert np.allclose([math.log1p(r["upper"]["95"]) - math.log1p(r["sales"]) for r in rows], expected, atol=1e-9)
    assert len(set(expected.round(9))) > 4  # horizons and sizes do pick different half-widths


def test_a_year_of_every_series_streams_as_csv(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/forecast?days=366", headers={"Accept": "text/csv"}, stream=True,
                            timeout=120)  # fmt: skip
    assert response.status_code == 200
    assert "Content-Length" not in response.headers  # sent piece by piece
    lines = sum(chunk.count(b"\n") for chunk in response.iter_content(1 << 16))
    assert lines == 1 + 500 * 366


def test_the_csv_form_holds_the_json_forms_numbers(stack: Stack) -> None:
    query = "store=2&item=7&days=20&granularity=week&level=80,95"
    answer = ok(forecast(stack, query=query))["forecasts"]
    response = forecast(stack, query=query, Accept="text/csv")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    header, *lines = response.text.splitlines()
    assert header == "date,days,store,item,sales,lower_80,upper_80,lower_95,upper_95"
    for line, row in zip(lines, answer, strict=True):
        date, days, store, item, sales, low80, high80, low95, high95 = line.split(",")
        assert (date, int(days), int(store), int(item)) == (row["date"], row["days"], row["store"], row["item"])
        assert [float(v) for v in (sales, low80, high80, low95, high95)] == [
            row["sales"], row["lower"]["80"], row["upper"]["80"], row["lower"]["95"], row["upper"]["95"]]  # fmt: skip


def test_explanations_multiply_back_to_the_forecast_and_are_lightgbms_contributions(
    stack: Stack, serving_registry: Registry
) -> None:
    answer = ok(forecast(stack, {"series": [{"store": 4, "item": 9}], "start": "2017-03-01", "days": 14,
                                 "explain": True}))["forecasts"]  # fmt: skip
    for row in answer:
        explanation = row["explanation"]
        assert explanation["of"] == "1 + sales"
        assert list(explanation["factors"]) == ["store", "item", "dayofweek", "month", "dayofmonth", "dayofyear",
                                                "trend"]  # fmt: skip
        product = explanation["base"] * math.prod(explanation["factors"].values())
        assert product == pytest.approx(1 + row["sales"], rel=1e-9)
    plain = ok(forecast(stack, {"series": [{"store": 4, "item": 9}], "start": "2017-03-01", "days": 14}))
    assert [r["sales"] for r in answer] == [r["sales"] for r in plain["forecasts"]]  # the same numbers, explained
    lightgbm = serving_registry.load("v1", compiled=False)
    rows = Rows.from_columns([r["date"] for r in answer], [4] * 14, [9] * 14)
    contributions = lightgbm.output("contributions", rows)
    assert contributions is not None
    got = np.array([[math.log(f) for f in list(r["explanation"]["factors"].values())[:6]] for r in answer])
    assert np.allclose(got, contributions[:, :-1], rtol=0, atol=1e-12)
    assert np.allclose([math.log(r["explanation"]["base"]) for r in answer], contributions[:, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"days": 0}, 422, "days", "greater than or equal to 1"),
        ({"days": 367}, 422, "days", "less than or equal to 366"),
        ({"series": [{"store": 11, "item": 1}]}, 422, "series[0].store", "store 11 is not known"),
        ({"series": [{"store": 1, "item": 1}, {"store": 1, "item": 51}]}, 422, "series[1].item", "item 51"),
        ({"series": [{"store": 1}]}, 422, "series[0].item", "Field required"),
        ({"level": [95, 99.95]}, 422, "level[1]", "less than 99.9"),
        ({"level": [50]}, 422, "level[0]", "greater than 50"),
        ({"granularity": "month"}, 422, "granularity", "'day' or 'week'"),
        ({"totals": "region"}, 422, "totals", "'store', 'item' or 'all'"),
        ({"start": "2010-01-01"}, 422, "start", "outside version v1's range"),
        ({"start": "2017-02-30"}, 422, "start", "date"),
        ({"explain": True, "granularity": "week"}, 422, "explain", "daily forecasts of single series"),
        ({"horizon": 3}, 422, "horizon", "Extra inputs"),
    ],
)
def test_every_bad_input_is_named(stack: Stack, body: dict[str, Any], status: int, field: str | None,
                                  message: str) -> None:  # fmt: skip
    response = forecast(stack, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert message in error["message"]
    assert error.get("field") == field


def test_the_query_form_names_its_bad_fields_too(stack: Stack) -> None:
    for query, field in (("store=x", "store"), ("days=many", "days"), ("level=high", "level[0]"),
                         ("explain=maybe", "explain"), ("weeks=3", "weeks")):  # fmt: skip
        response = forecast(stack, query=query)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
    malformed = requests.post(f"{stack.url}/forecast", data=b"{", headers={"Content-Type": "application/json"},
                              timeout=10)  # fmt: skip
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "malformed_json"


def test_forecasts_are_counted_by_model_version_and_granularity_and_logged_with_their_size(stack: Stack) -> None:
    before = settled_scrape(stack.url, "forecast_horizon_requests_total")  # earlier tests' forecasts counted
    ok(forecast(stack, query="store=5&item=5&days=21&granularity=week", **{"X-Request-ID": "horizon-1"}))
    ok(forecast(stack, {"series": [{"store": 5, "item": 6}], "days": 3}))

    def both_counted(now: Scrape) -> bool:  # each request may be written by another worker's flusher
        return all(now.value("forecast_horizon_requests_total", model="default", version="v1", granularity=g)
                   > before.value("forecast_horizon_requests_total", model="default", version="v1", granularity=g)
                   for g in ("day", "week"))  # fmt: skip

    after = scrape_until(stack.url, both_counted)
    for granularity in ("week", "day"):
        labels = {"model": "default", "version": "v1", "granularity": granularity}
        assert after.value("forecast_horizon_requests_total", **labels) == before.value(
            "forecast_horizon_requests_total", **labels) + 1  # fmt: skip
    (line,) = access_lines(stack, "request_id=horizon-1")
    for part in ("method=GET", "path=/forecast", "status=200", "model_version=v1", "rows=21", "series=1", "days=21"):
        assert part in line, line


def test_a_predict_row_asking_for_bands_gets_the_forecasts_own(stack: Stack) -> None:
    horizon = ok(forecast(stack, {"series": [{"store": 6, "item": 7}], "start": "2017-05-01", "days": 3,
                                  "level": [80, 95]}))["forecasts"]  # fmt: skip
    rows = [{"date": r["date"], "store": 6, "item": 7, "level": [80, 95]} for r in horizon]
    predicted = requests.post(f"{stack.url}/predict", json=rows, timeout=10).json()["predictions"]
    for mine, theirs in zip(predicted, horizon, strict=True):
        assert (mine["sales"], mine["lower"], mine["upper"]) == (theirs["sales"], theirs["lower"], theirs["upper"])
    single = requests.post(f"{stack.url}/predict", json=rows[0], timeout=10).json()
    assert single["upper"] == horizon[0]["upper"]
