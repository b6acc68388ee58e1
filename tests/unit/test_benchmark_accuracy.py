"""The actuals and accuracy scenario's own logic: the bodies it posts, how it checks answers, the latency phases'
summaries, and the report's section and the check on its record."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from benchmarks.accuracy import (
    SMOKE,
    Profile,
    Year,
    accuracy_problems,
    load_problems,
    phase_summary,
    ratios,
)
from benchmarks.check import accuracy_problems as check_accuracy
from benchmarks.report import accuracy_gaps, accuracy_section
from forecast.data import SalesData
from forecast.features import Rows


def sales_data() -> SalesData:
    """Two series over 2016-12-31..2017-01-02."""
    dates = np.array(["2016-12-31", "2017-01-01", "2017-01-02"] * 2, dtype="datetime64[D]")
    rows = Rows(dates, np.array([1, 1, 1, 2, 2, 2]), np.array([7, 7, 7, 3, 3, 3]))
    return SalesData(rows, np.array([5, 6, 7, 8, 9, 10]), "sha256:test")


def test_a_year_is_its_rows_as_csv_and_a_day_of_it_with_sales_moved() -> None:
    year = Year.of(sales_data(), 2017)
    assert year.rows == 4
    assert year.csv().decode().splitlines() == ["date,store,item,sales", "2017-01-01,1,7,6", "2017-01-02,1,7,7",
                                                "2017-01-01,2,3,9", "2017-01-02,2,3,10"]  # fmt: skip
    assert year.csv(1, day="2017-01-02").decode().splitlines() == ["date,store,item,sales", "2017-01-02,1,7,8",
                                                                   "2017-01-02,2,3,11"]  # fmt: skip


def entry(version: str, alias: str, rows: int = 14_000, baseline: int = 14_000) -> dict[str, Any]:
    return {"version": version, "aliases": [alias], "rows": rows, "smape": 12.5, "baseline": {"rows": baseline}}


RIGHT = {"versions": [entry("v1", "production"), entry("v2", "canary"), entry("v3", "shadow")]}


def test_an_accuracy_answer_needs_production_canary_and_shadow_each_with_14000_rows_and_baselines() -> None:
    assert accuracy_problems(RIGHT) == []
    two = {"versions": RIGHT["versions"][:2]}
    assert accuracy_problems(two) == ["2 versions named ['canary', 'production'], not 3: production, canary, shadow"]
    short = {"versions": [entry("v1", "production"), entry("v2", "canary", 13_999), entry("v3", "shadow")]}
    assert accuracy_problems(short) == ["v2: 13999 rows, 14000 baseline rows, not 14000"]
    no_baseline = {"versions": [entry("v1", "production", baseline=0), *RIGHT["versions"][1:]]}
    assert accuracy_problems(no_baseline) == ["v1: 14000 rows, 0 baseline rows, not 14000"]
    assert accuracy_problems({"error": "x"})[0].startswith("not an accuracy answer")


def test_a_load_answer_must_count_exactly_what_was_expected() -> None:
    expected = {"added": 182_500, "replaced": 0, "unchanged": 0}
    assert load_problems(dict(expected), expected) == []
    assert load_problems({"added": 182_499, "replaced": 1, "unchanged": 0}, expected)
    assert load_problems(b"oops", expected)


def test_the_profile_loads_the_windows_year_and_replaces_another_in_the_load_phase() -> None:
    assert SMOKE.years[0] != 2017
    with pytest.raises(ValueError, match="years"):
        Profile(years=(2017, 2013), accuracy_repeats=1, rounds=1, phase_s=1, rate=1)
    with pytest.raises(ValueError, match="years"):
        Profile(years=(2013,), accuracy_repeats=1, rounds=1, phase_s=1, rate=1)


def openloop_run(p50: float, p99: float, statuses: dict[str, int], errors: int = 0) -> dict[str, Any]:
    return {"requests": sum(statuses.values()) + errors, "latency_ms": {"p50": p50, "p99": p99},
            "statuses": statuses, "errors": errors}  # fmt: skip


def test_a_phase_is_the_median_of_its_runs_percentiles_with_failures_and_background_calls() -> None:
    runs = [{"load": openloop_run(2.0, 9.0, {"200": 100}), "background": [{"seconds": 0.5, "problems": []}]},
            {"load": openloop_run(3.0, 11.0, {"200": 98, "504": 1}, errors=1),
             "background": [{"seconds": 0.7, "problems": ["wrong"]}, {"seconds": 0.6, "problems": []}]},
            {"load": openloop_run(4.0, 10.0, {"200": 100}), "background": []}]  # fmt: skip
    phase = phase_summary(runs)
    assert (phase["p50_ms"], phase["p99_ms"], phase["requests"], phase["failed"]) == (3.0, 10.0, 300, 2)
    background = (phase["background_calls"], phase["background_median_s"], phase["background_problems"])
    assert background == (3, 0.6, ["wrong"])
    alone = {"p50_ms": 2.0, "p99_ms": 8.0}
    assert ratios({"alone": alone, "during_load": {"p50_ms": 3.0, "p99_ms": 20.0}}) == {
        "during_load": {"p50_ms": 1.5, "p99_ms": 2.5}}  # fmt: skip


def run(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"status": 200, "seconds": seconds, "server_cpu_s": seconds * 1.5, "mules_cpu_s": seconds / 2,
            "pss_before_mb": 180.0,
            "peak_pss_mb": 260.0, "peak_rss_mb": 400.0, "problems": [], **extra}  # fmt: skip


def part(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    return {"median_seconds": sorted(seconds)[len(seconds) // 2], "min_seconds": min(seconds),
            "max_seconds": max(seconds), "median_server_cpu_s": runs[0]["server_cpu_s"],
            "median_mules_cpu_s": runs[0]["mules_cpu_s"],
            "median_pss_before_mb": 180.0, "peak_pss_mb": 260.0, "peak_rss_mb": 400.0, "ok": True,
            "runs": runs}  # fmt: skip


VERSIONS = [{"version": v, "aliases": [a], "rows": 14_000, "smape": 12.5}
            for v, a in (("v1", "production"), ("v2", "canary"), ("v3", "shadow"))]  # fmt: skip


def phase(p50: float, p99: float, calls: int = 0, median: float | None = None) -> dict[str, Any]:
    return {"p50_ms": p50, "p99_ms": p99, "requests": 6_000, "failed": 0, "background_calls": calls,
            "background_median_s": median, "background_problems": [], "runs": [{}, {}, {}]}  # fmt: skip


RECORD: dict[str, Any] = {
    "machine": {"date": "2026-12-07T16:45:00+00:00", "commit": "abc1234"},
    "description": "this project: nginx + uWSGI 2 workers x 16 threads + 2 mules (default settings)",
    "versions": {"production": "v1", "canary": "v2", "shadow": "v3"}, "weight": 10,
    "env": {"FORECAST_ACCURACY_REFRESH_S": "0"},
    "profile": {"years": [2013, 2014, 2015, 2017], "accuracy_repeats": 5, "rounds": 3},
    "rows_per_year": {"2016": 183_000, "2013": 182_500},
    "load_new": part([run(2.0, rows=182_500, body_mb=3.6), run(2.5, rows=182_500, body_mb=3.6),
                      run(3.0, rows=182_500, body_mb=3.6)]),
    "load_again": part([run(1.0, rows=182_500), run(1.2, rows=182_500), run(1.1, rows=182_500)]),
    "accuracy_first": run(0.9, versions=VERSIONS),
    "accuracy_cold": part([run(0.5, versions=VERSIONS), run(0.6, versions=VERSIONS), run(0.55, versions=VERSIONS)]),
    "accuracy_cached": part([run(0.01, versions=VERSIONS), run(0.012, versions=VERSIONS)]),
    "predict": {"rate": 200, "phase_s": 10,
                "phases": {"alone": phase(2.0, 8.0), "during_accuracy": phase(2.4, 16.0, 12, 0.62),
                           "during_load": phase(2.2, 40.0, 4, 2.75)},
                "ratios": {"during_accuracy": {"p50_ms": 1.2, "p99_ms": 2.0},
                           "during_load": {"p50_ms": 1.1, "p99_ms": 5.0}}},
    "problems": [],
}  # fmt: skip


def test_the_report_gives_each_request_its_times_cpu_and_memory_and_predict_each_phase_against_alone() -> None:
    lines = accuracy_section(RECORD)
    assert lines[1].startswith("## 9. Actuals and accuracy")
    assert ("| `POST /actuals`, a year new to the store (3.6 MB) | 182,500 | 2.500 (2.000-3.000) | 3.00 | 1.00 | 180 "
            "| 260 | 400 | 3 |") in lines  # fmt: skip
    assert ("| `POST /actuals`, the same year again (all unchanged) | 182,500 | 1.100 (1.000-1.200) | 1.50 | 0.50 "
            "| 180 | 260 | 400 | 3 |") in lines  # fmt: skip
    assert ("| `GET /accuracy`, 28 days x 3 versions, cold | 3 x 14,000 | 0.550 (0.500-0.600) | 0.75 | 0.25 | 180 "
            "| 260 | 400 | 3 |") in lines  # fmt: skip
    assert any(line.startswith("| `GET /accuracy`, the first after start (not in the medians above) | 3 x 14,000 "
                               "| 0.900 | ") for line in lines)  # fmt: skip
    assert "| alone | 2.00 | 8.00 | - | - | 6,000 | 0 | nothing |" in lines
    assert ("| during cold accuracy | 2.40 | 16.00 | 1.20x | 2.00x | 6,000 | 0 | 12 cold `GET /accuracy` calls, "
            "median 0.62 s |") in lines  # fmt: skip
    assert ("| during loads | 2.20 | 40.00 | 1.10x | 5.00x | 6,000 | 0 | 4 loads of a year (182,500 rows replaced), "
            "median 2.75 s |") in lines  # fmt: skip
    assert any(line.endswith("all right.") for line in lines)
    assert "production v1, canary v2, shadow v3 (canary and shadow at 10% of rows)" in lines[3]
    assert "`FORECAST_ACCURACY_REFRESH_S=0`" in lines[3]
    assert any("commit `abc1234`" in line and "--only accuracy" in line for line in lines)


def test_a_missing_record_says_how_to_add_it_and_a_wrong_answer_shows_and_fails_the_check() -> None:
    absent = accuracy_section(None)
    assert absent[-2] == "Not run: `.venv/bin/python -m benchmarks.run --only accuracy` adds it."
    assert accuracy_gaps(None) == []
    assert accuracy_gaps(RECORD) == []
    assert check_accuracy(RECORD) == []
    wrong = copy.deepcopy(RECORD)
    wrong["problems"] = ["2017: answered {'added': 0}"]
    wrong["accuracy_cold"]["runs"][0]["status"] = 504
    wrong["accuracy_cold"]["median_seconds"] = None
    lines = accuracy_section(wrong)
    assert any("WRONG" in line for line in lines)
    assert any(line.startswith("| `GET /accuracy`, 28 days x 3 versions, cold | 3 x 14,000 | - |") for line in lines)
    assert check_accuracy(wrong) == ["accuracy: 2017: answered {'added': 0}"]
    del wrong["predict"]
    assert accuracy_gaps(wrong) == ["accuracy: predict"]
