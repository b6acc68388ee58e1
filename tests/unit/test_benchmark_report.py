"""The benchmark report's logic: which Ray configuration is best per measure, ratios, outage windows."""

from __future__ import annotations

from typing import Any

from benchmarks.check import problems
from benchmarks.report import HEADLINE, best_ray, filled, goals_section, headline_section, ratio

RPS_64, P99_64 = HEADLINE[0], HEADLINE[1]


def system(rps: float, p99: float, kind: str = "model") -> dict[str, Any]:
    return {"kind": kind, "closed_loop": {"64": {"median": {"rps": rps, "p99_ms": p99}}}}


SYSTEMS = {
    "uwsgi-mules": system(3000, 40),
    "ray-tuned": system(150, 600),
    "ray-haproxy": system(1300, 120),
    "ray-haproxy-1": system(900, 90),
    "floor": system(9000, 10, "floor"),
    "ray-floor": system(5000, 20, "floor"),
}


def test_the_best_ray_configuration_is_chosen_per_measure_and_only_among_ray_systems() -> None:
    assert best_ray(SYSTEMS, RPS_64) == ("ray-haproxy", 1300)  # more is better
    assert best_ray(SYSTEMS, P99_64) == ("ray-haproxy-1", 90)  # less is better; no floor counts
    assert best_ray({"uwsgi-mules": system(1, 1)}, RPS_64) is None


def test_a_ratio_says_how_many_times_better_this_stack_is_whichever_way_is_better() -> None:
    assert ratio(3000, 1300, higher_is_better=True) == "2.31x"
    assert ratio(40, 90, higher_is_better=False) == "2.25x"
    assert ratio(200, 100, higher_is_better=False) == "0.50x"  # worse: below 1
    assert ratio(0, 5, higher_is_better=False) == "-"  # 0 failures against 5: no ratio
    assert ratio(None, 5, higher_is_better=True) == "-"


def test_the_headline_names_the_ray_configuration_of_each_row() -> None:
    lines = headline_section(SYSTEMS)
    assert "| single row, 64 connections: 2xx req/s | 3,000 | 1,300 | ray-haproxy | 2.31x |" in lines
    assert "| single row, 64 connections: p99 ms | 40.0 | 90.0 | ray-haproxy-1 | 2.25x |" in lines


def test_a_window_with_no_answer_at_all_is_an_explicit_outage_row() -> None:
    rows = [[0.0, 10, 0, 1.0, 2.0], [0.75, 3, 3, 0.0, 0.0]]
    assert filled(rows) == [rows[0], [0.25, 0, 0, 0.0, 0.0], [0.5, 0, 0, 0.0, 0.0], rows[1]]


def test_the_check_fails_a_batch_whose_values_differ_and_needs_haproxy_systems_only_in_a_namespace() -> None:
    def model(batch_error: float | None) -> dict[str, Any]:
        runs = [{"rows": 45_000, "max_abs_error": batch_error}]
        return {"kind": "model", "correctness": {"all_answered": True, "max_abs_error": 0.0},
                "batch": {"sizes": {"45000": {"json": {"runs": runs}, "csv": {"runs": runs}}}}}  # fmt: skip

    results: dict[str, Any] = {"machine": {"network": "the host's"}, "agreement": {"max_abs_difference": 0.0},
                               "systems": {"uwsgi-mules": model(0.0), "ray-tuned": model(0.5)}}  # fmt: skip
    found = problems(results, ["uwsgi-mules", "ray-tuned", "ray-plain"])
    assert any("ray-tuned: the 45000-row json batch differs" in problem for problem in found)
    assert not any("ray-tuned: the 45000-row csv" in problem for problem in found)  # FastAPI: JSON only
    assert not any("systems missing" in problem for problem in found)  # left out on the host's network
    results["machine"]["network"] = "own namespace, loopback only"
    assert any("systems missing: ['ray-plain']" in problem for problem in problems(results, ["ray-plain"]))


def test_each_goal_is_stated_with_its_measured_ratio_whether_it_is_met_and_its_bound() -> None:
    def batch(seconds: float) -> dict[str, Any]:
        record = {"median_seconds": seconds, "median_server_cpu_s": 0.15, "runs": [{"max_abs_error": 2e-15}]}
        return {"batch": {"median_seconds": seconds, "sizes": {"45000": {"json": record}}}}

    systems = {
        "uwsgi-mules": {**system(3000, 25), **batch(0.1), "memory_load": {"pss_mb": 100}},
        "ray-plain": {**system(900, 90), **batch(0.6), "memory_load": {"pss_mb": 1000}},
        "ray-slow": {**system(300, 200), **batch(1.2), "memory_load": {"pss_mb": 700}},
        "floor": system(8000, 10, "floor"),
        "mule-floor": system(4000, 16, "floor"),
    }
    alone = {"engine": "compiled", "parallel": 2, "seconds": {"45000": 0.3}}
    lines = goals_section(systems, alone, 2)
    assert (
        "| 45,000-row batch, JSON: times faster than the best Ray | at least 5 | 6.000 "
        "| 0.600 s (ray-plain) / 0.100 s | yes | 4.000 | 0.600 s / (0.300 s scoring alone / 2) "
        "| 8.000 | 0.600 s / (0.150 s of CPU / 2 cores) |"
    ) in lines
    assert "| 45,000-row batch, JSON: seconds | at most 0.15 | 0.100 | 0.1 s | yes | - | - | - | - |" in lines
    assert (
        "| single row, 64 connections: req/s over the floor's | at least 0.5 | 0.375 "
        "| 3,000.00 / 8,000.00 (floor) | no | - | - | - | - |"
    ) in lines
    assert (
        "| single row, 64 connections: req/s over the mule floor's | at least 0.8 | 0.750 "
        "| 3,000.00 / 4,000.00 (mule-floor) | no | - | - | - | - |"
    ) in lines
    assert any(line.startswith("| single row, 1 connection: p50 over the mule floor's | at most 1.5 | - |")
               for line in lines)  # fmt: skip  # no 1-connection figures in these systems
    assert (
        "| single row, 64 connections: req/s over the best Ray's | at least 3 | 3.333 "
        "| 3,000.00 / 900.00 (ray-plain) | yes | 8.889 | 8,000 (floor) / 900 (ray-plain) | - | - |"
    ) in lines
    assert (
        "| PSS under load over the leanest Ray's | at most 0.125 | 0.143 | 100 MB / 700 MB (ray-slow) | no "
        "| - | - | - | - |"
    ) in lines
    assert (
        "| batch: largest difference from LightGBM's own forecast | at most 1e-09 | 2.0e-15 | 2e-15 | yes "
        "| - | - | - | - |"
    ) in lines
    assert any(line.startswith("| 500,000-row batch, CSV") and line.endswith("| not measured | - | - | - | - | - |")
               for line in lines)  # fmt: skip
    without = goals_section(systems)  # no scoring-alone record, no core count (older results)
    assert not any("| 500,000-row batch, JSON" in line and "scoring alone" in line for line in without)
    assert not any(line.startswith("| 45,000") and "cores)" in line for line in goals_section(systems, alone))
