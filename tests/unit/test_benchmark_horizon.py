"""The forecast horizon scenario's own logic: the Ray user's grid and weeks, reading and checking answers, which
Ray configuration runs, and the report's table and goals."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from benchmarks.check import horizon_problems
from benchmarks.horizon import (
    FORMS,
    Form,
    Table,
    choose_ray,
    csv_columns,
    expected_values,
    grid,
    grid_body,
    iso_weeks,
    ray_sales,
    read_forecast,
    table_problems,
    week_sums,
)
from benchmarks.report import goals_section, horizon_gaps, horizon_section
from forecast.buckets import Granularity, date_buckets

MONDAY = np.datetime64("2018-01-01")


def test_weeks_are_iso_weeks_clipped_to_the_range_as_the_service_buckets_them() -> None:
    offsets, lengths = iso_weeks(MONDAY, 90)
    assert offsets.tolist() == list(range(0, 90, 7))
    assert lengths.tolist() == [7] * 12 + [6]
    wednesday = np.datetime64("2017-02-01")
    assert iso_weeks(wednesday, 30)[1].tolist() == [5, 7, 7, 7, 4]  # tests/stack/test_forecast.py's weeks
    for start, days in ((MONDAY, 366), (wednesday, 30), (np.datetime64("2018-01-07"), 1)):
        service = date_buckets(int(start.astype(np.int64)), days, Granularity.WEEK)
        offsets, lengths = iso_weeks(start, days)
        assert offsets.tolist() == (service.first_days - int(start.astype(np.int64))).tolist()
        assert lengths.tolist() == service.lengths.tolist()


def test_week_sums_add_each_series_days_of_each_week() -> None:
    daily = np.arange(2 * 10, dtype=np.float64).reshape(2, 10)  # two series, 2017-02-01 (Wednesday) on
    sums = week_sums(daily, np.datetime64("2017-02-01"))
    assert sums.tolist() == [[0 + 1 + 2 + 3 + 4, sum(range(5, 10))], [sum(range(10, 15)), sum(range(15, 20))]]


def test_the_grid_is_every_series_day_by_day_as_the_forecast_answers_it() -> None:
    rows = grid(3, series=[(1, 1), (1, 2)])
    assert rows.rows == 6
    assert np.datetime_as_string(rows.dates()).tolist() == ["2018-01-01", "2018-01-02", "2018-01-03"] * 2
    assert rows.row_stores().tolist() == [1] * 6
    assert rows.row_items().tolist() == [1, 1, 1, 2, 2, 2]
    body, headers = grid_body(rows, "json")
    assert orjson.loads(body)[3] == {"date": "2018-01-01", "store": 1, "item": 2}
    assert headers == {"Content-Type": "application/json"}
    body, headers = grid_body(rows, "csv")
    assert body.decode().splitlines()[:2] == ["id,date,store,item", "0,2018-01-01,1,1"]
    assert len(body.splitlines()) == 7
    assert headers["Accept"] == "text/csv"


def test_a_ray_answer_is_read_in_row_order_whatever_order_its_csv_lines_came_in() -> None:
    assert ray_sales(b'{"predictions": [{"sales": 1.5}, {"sales": 2.0}]}', "json").tolist() == [1.5, 2.0]
    assert ray_sales(b"id,sales\n1,2.5\n0,1.25\n", "csv").tolist() == [1.25, 2.5]
    assert csv_columns(b"a,b\r\n1,x\r\n")["b"].tolist() == [b"x"]


def answer(form: Form, daily: np.ndarray, spoil: float = 0.0) -> bytes:
    """The service's answer to ``form`` for the daily values (series, days), as it writes it."""
    rows = grid(daily.shape[1], series=[(1, 1), (2, 5)][: daily.shape[0]])
    offsets, lengths = iso_weeks(rows.start, rows.days)
    values = expected_values(daily, form) + spoil
    dates = np.tile(rows.start + offsets, 2) if form.weekly else rows.dates()
    stores, items = (np.repeat(rows.stores, len(offsets)), np.repeat(rows.items, len(offsets))) if form.weekly else (
        rows.row_stores(), rows.row_items())  # fmt: skip
    forecasts = []
    for n, value in enumerate(values.tolist()):
        row: dict[str, Any] = {"date": str(dates[n])}
        if form.weekly:
            row["days"] = int(np.tile(lengths, 2)[n])
        row.update({"store": int(stores[n]), "item": int(items[n]), "sales": value})
        row.update({"lower": {"80": value * 0.8, "95": value * 0.6}, "upper": {"80": value * 1.2, "95": value * 1.5}})
        forecasts.append(row)
    if form.fmt == "json":
        return orjson.dumps({"model": "default", "forecasts": forecasts})
    names = ["date", "days"] if form.weekly else ["date"]
    names += ["store", "item", "sales", "lower_80", "upper_80", "lower_95", "upper_95"]
    lines = [",".join(names)]
    for row in forecasts:
        cells = [row["date"], *([str(row["days"])] if form.weekly else []), str(row["store"]), str(row["item"]),
                 repr(row["sales"]), repr(row["lower"]["80"]), repr(row["upper"]["80"]), repr(row["lower"]["95"]),
                 repr(row["upper"]["95"])]  # fmt: skip
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode()


DAILY = np.linspace(1.0, 30.0, 2 * 10).reshape(2, 10)


def test_a_right_answer_of_every_form_passes_the_check() -> None:
    for form in (Form(10, "day", "json"), Form(10, "day", "csv"), Form(10, "week", "json"), Form(10, "week", "csv")):
        table = read_forecast(answer(form, DAILY), form.fmt)
        assert len(table) == (4 if form.weekly else 20)
        assert table_problems(table, form, grid(10, series=[(1, 1), (2, 5)]), DAILY) == [], form


def test_the_check_names_wrong_values_rows_order_and_bands() -> None:
    rows, form = grid(10, series=[(1, 1), (2, 5)]), Form(10, "day", "json")
    spoiled = read_forecast(answer(form, DAILY, spoil=1e-12), "json")
    assert table_problems(spoiled, form, rows, DAILY) == ["values differ from /predict's by up to 1e-12"]
    csv = Form(10, "day", "csv")  # CSV's numbers are text: within 1e-9 is right
    assert table_problems(read_forecast(answer(csv, DAILY, spoil=1e-12), "csv"), csv, rows, DAILY) == []
    table = read_forecast(answer(form, DAILY), "json")
    swapped = Table(table.dates, table.stores[::-1], table.items, table.sales, None, table.lower, table.upper)
    assert "rows not in grid order (series by series, dates in order)" in table_problems(swapped, form, rows, DAILY)
    short = Table(table.dates[:5], table.stores[:5], table.items[:5], table.sales[:5], None)
    assert table_problems(short, form, rows, DAILY) == ["5 rows, not 20"]
    assert table_problems(Table(table.dates, table.stores, table.items, table.sales, None), form, rows, DAILY) == [
        "bands missing: lower [], upper []"]  # fmt: skip
    crossed = Table(table.dates, table.stores, table.items, table.sales, None, table.upper, table.lower)
    assert table_problems(crossed, form, rows, DAILY) == ["bands out of order in 80 places"]


def test_the_ray_configuration_is_the_fastest_at_45000_rows_json_and_csv_together() -> None:
    def batch(json_s: float | None, csv_s: float | None, **more: Any) -> dict[str, Any]:
        sizes = {"45000": {"json": {"median_seconds": json_s}, "csv": {"median_seconds": csv_s}}}
        return {"kind": "model", "batch": {"sizes": sizes}, **more}

    systems = {"uwsgi-mules": batch(0.05, 0.04), "ray-plain": batch(0.13, 0.13), "ray-plain-1": batch(0.14, 0.11),
               "ray-plain-1-lightgbm": batch(0.1, 0.1, only=["batch"]), "ray-tutorial": batch(0.2, None)}  # fmt: skip
    assert choose_ray(systems, inside_namespace=True) == "ray-plain-1"  # 0.25 s against 0.26
    assert choose_ray({}, inside_namespace=True) == "ray-plain"  # none timed: the published report's
    assert choose_ray(systems, inside_namespace=False) == "ray-tutorial"  # HAProxy's systems need the namespace


def form_record(form: Form, ours_s: float | None, ray_s: float, problems: list[str] | None = None) -> dict[str, Any]:
    def side(seconds: float | None, with_read: float | None) -> dict[str, Any]:
        run = {"status": 200, "seconds": seconds, "rows": 45_000, "problems": problems or [], "answer_mb": 7.8}
        return {"median_seconds": seconds, "median_with_read_s": with_read, "median_server_cpu_s": 0.09,
                "median_grid_s": 0.02, "median_post_s": 0.12, "median_read_s": 0.03, "median_weeks_s": 0.0003,
                "peak_pss_mb": 190.0, "peak_rss_mb": 390.0, "runs": [run]}  # fmt: skip

    return {"days": form.days, "granularity": form.granularity, "format": form.fmt, "goal_seconds": form.goal_seconds,
            "ours": side(ours_s, None if ours_s is None else ours_s * 2), "ray": side(ray_s, ray_s + 0.03)}  # fmt: skip


def record(forms: dict[str, Any]) -> dict[str, Any]:
    return {"ray_system": "ray-plain", "goal_times_faster": 3.0, "goal_seconds": 0.1, "goal_days": 90,
            "profile": {"repeats": 9}, "machine": {"date": "2026-12-07", "commit": "abc1234"},
            "systems": {"uwsgi-mules": {"description": "this"}, "ray-plain": {"description": "Ray"}},
            "forms": forms}  # fmt: skip


def test_the_report_states_each_forms_ratio_and_whether_the_goals_hold() -> None:
    day, week, year = Form(90, "day", "json"), Form(90, "week", "csv"), Form(366, "day", "csv")
    found = record({f.key: form_record(f, s, r) for f, s, r in ((day, 0.08, 0.2), (week, 0.03, 0.18),
                                                                (year, 0.4, 0.6))})  # fmt: skip
    lines = horizon_section(found)
    assert "| 90 days by day, JSON | 45,000 | 0.080 | 0.200 | 2.50x | no | yes | 0.160 | 0.230 | 1.44x |" in lines
    assert "| 90 days by week, CSV | 45,000 | 0.030 | 0.180 | 6.00x | yes | yes | 0.060 | 0.210 | 3.50x |" in lines
    assert "| 366 days by day, CSV | 45,000 | 0.400 | 0.600 | 1.50x | no | - | 0.800 | 0.630 | 0.79x |" in lines
    assert "Every answer checked: all right." in lines
    found["systems"]["ray-plain"]["memory_idle"] = {"pss_mb": 1000.0, "rss_mb": 1500.0}
    assert horizon_section(found)[-6] == ("Peak memory of the whole process tree over the scenario: uwsgi-mules 190 MB "
                                          "PSS, 390 MB RSS (idle before: - and - MB); ray-plain 190 MB PSS, 390 MB "
                                          "RSS (idle before: 1,000 and 1,500 MB).")  # fmt: skip
    goals = goals_section({}, horizon=found)
    assert ("| forecast horizon, 90 days by day, JSON: times faster than the Ray user's way | at least 3 | 2.500 "
            "| 0.200 s (ray-plain) / 0.080 s | no | - | - | - | - |") in goals  # fmt: skip
    seconds = "| forecast horizon, 90 days by week, CSV: seconds | under 0.1 | 0.030 | 0.030 s | yes |"
    assert f"{seconds} - | - | - | - |" in goals
    assert not any("366 days" in line for line in goals)
    assert horizon_section(None)[-2].startswith("Not run")


def test_a_failed_form_is_unmeasured_in_the_report_and_a_problem_for_the_check() -> None:
    day = Form(90, "day", "json")
    found = record({day.key: form_record(day, None, 0.2, ["45 rows, not 45000"])})
    found["forms"][day.key]["ours"]["runs"][0]["status"] = 200
    assert "| 90 days by day, JSON | 45,000 | - | 0.200 | - | - | - | - | 0.230 | - |" in horizon_section(found)
    assert any("WRONG" in line for line in horizon_section(found))
    problems = horizon_problems(found)
    assert problems == ["horizon: 90-day-json (ours) answered 200: ['45 rows, not 45000']",
                        "horizon: 90-day-json (ray) answered 200: ['45 rows, not 45000']"]  # fmt: skip
    assert horizon_gaps(found) == []
    assert horizon_gaps(None) == []
    assert horizon_gaps(record({})) == ["horizon: no forms measured"]
    del found["forms"][day.key]["ray"]["runs"][0]
    assert horizon_gaps(found) == ["horizon: 90-day-json (ray)"]


def test_the_forms_are_the_issues_four_at_90_days_and_a_year_by_day() -> None:
    assert [f.key for f in FORMS] == ["90-day-json", "90-day-csv", "90-week-json", "90-week-csv", "366-day-json",
                                      "366-day-csv"]  # fmt: skip
    assert [f.goal_seconds for f in FORMS] == [0.1] * 4 + [None] * 2
