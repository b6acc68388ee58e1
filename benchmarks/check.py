"""Check that a results JSON is a complete, correct report: every system, every scenario, agreement.

    .venv/bin/python -m benchmarks.check benchmarks/results/smoke.json

Asserts no speed: only that every system ran every scenario, every model system answered every
correctness request exactly as the offline model, the systems agree, every batch size was answered
in full as LightGBM forecasts it, every answer of the "Forecast horizon" scenario (both sides, every
form) came back whole and right, every answer of "Actuals and accuracy" (when it ran) counted right,
both systems of the "Many models" scenario passed its verification pass and were timed, and nothing
listened beyond loopback.  Exit 1 with the list of problems otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.netns import NEEDS_NAMESPACE
from benchmarks.report import MANY_MODELS_SYSTEMS, missing
from benchmarks.run import ALL_SYSTEMS

TOLERANCE = 1e-9


def problems(results: dict[str, Any], expected_systems: list[str]) -> list[str]:
    found = []
    if results["machine"].get("network") != "own namespace, loopback only":  # run.py leaves these out then
        expected_systems = [name for name in expected_systems if name not in NEEDS_NAMESPACE]
    absent = sorted(set(expected_systems) - set(results["systems"]))
    if absent:
        found.append(f"systems missing: {absent}")
    found += [f"scenario missing: {gap}" for gap in missing(results)]
    for name, system in results["systems"].items():
        if system.get("non_loopback_listeners"):
            found.append(f"{name} listened beyond loopback: {system['non_loopback_listeners']}")
        if system["kind"] != "model":
            continue
        correctness = system.get("correctness", {})
        if not correctness.get("all_answered") or correctness.get("max_abs_error", 1) > TOLERANCE:
            found.append(f"{name}: predictions differ from the offline model ({correctness.get('max_abs_error')})")
        found += batch_problems(name, system.get("batch", {}))
    if results.get("agreement", {}).get("max_abs_difference", 1) > TOLERANCE:
        found.append(f"systems disagree: {results.get('agreement')}")
    if "horizon" in results:  # absent: run with --skip-horizon
        found += horizon_problems(results["horizon"])
    if "accuracy" in results:  # absent: the smoke version, or --skip-accuracy
        found += accuracy_problems(results["accuracy"])
    if "many_models" not in results:  # run with --skip-many-models
        return found
    return found + many_models_problems(results["many_models"].get("systems", {}))


CSV_EXEMPT = frozenset({"ray-tutorial", "ray-tuned"})  # FastAPI targets: JSON only, as the original service


def batch_problems(name: str, batch: dict[str, Any]) -> list[str]:
    """Every batch size answered in full and as LightGBM forecasts it, in JSON and (but FastAPI's) in CSV."""
    sizes = batch.get("sizes", {})
    if not sizes:
        return [f"{name}: no batch record"]
    found = []
    for size, formats in sizes.items():
        for fmt_name, record in formats.items():
            if fmt_name == "csv" and name in CSV_EXEMPT:
                continue
            for run in record["runs"]:
                if run["rows"] != int(size):
                    found.append(f"{name}: the {size}-row {fmt_name} batch was not answered in full ({run})")
                elif run.get("max_abs_error") is None or run["max_abs_error"] > TOLERANCE:
                    found.append(f"{name}: the {size}-row {fmt_name} batch differs from LightGBM's forecast ({run})")
    return found


def horizon_problems(record: dict[str, Any]) -> list[str]:
    """A horizon answer that failed or was wrong (its run's ``problems``: rows, order, values, bands), or a
    system of the scenario that listened beyond loopback. Forms missing are :func:`missing`'s."""
    found = []
    for key, form in record.get("forms", {}).items():
        for side in ("ours", "ray"):
            for run in form.get(side, {}).get("runs", []):
                if run["status"] != 200 or run["problems"]:
                    found.append(f"horizon: {key} ({side}) answered {run['status']}: {run['problems'][:3]}")
    for name, system in record.get("systems", {}).items():
        if system.get("non_loopback_listeners"):
            found.append(f"horizon: {name} listened beyond loopback: {system['non_loopback_listeners']}")
    return found


def accuracy_problems(record: dict[str, Any]) -> list[str]:
    """The accuracy scenario's wrong answers (its record's ``problems``: a load's counts, an accuracy answer without
    three versions of 14,000 rows), or its system listening beyond loopback. Parts missing are :func:`missing`'s."""
    found = [f"accuracy: {problem}" for problem in record.get("problems", [])]
    if record.get("non_loopback_listeners"):
        found.append(f"accuracy: listened beyond loopback: {record['non_loopback_listeners']}")
    return found


def many_models_problems(systems: dict[str, Any]) -> list[str]:
    """A many-models system that answered a verification row wrongly (or not at all), or listened beyond loopback."""
    found = []
    for name in MANY_MODELS_SYSTEMS:
        system = systems.get(name, {})
        verification = system.get("verification", {})
        if not verification.get("ok") or verification.get("max_abs_error", 1) > TOLERANCE:
            found.append(f"many_models: {name}'s answers differ from the offline models ({verification})")
        if system.get("non_loopback_listeners"):
            found.append(f"many_models: {name} listened beyond loopback: {system['non_loopback_listeners']}")
    return found


def main() -> int:
    results = json.loads(Path(sys.argv[1]).read_text())
    expected = sys.argv[2].split(",") if len(sys.argv) > 2 else ALL_SYSTEMS
    found = problems(results, expected)
    for problem in found:
        print(f"FAIL {problem}")
    print("benchmark report complete and correct" if not found else f"{len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
