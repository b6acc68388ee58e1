"""Run the benchmark suite: every system, every scenario, into one JSON file, then the report.

    .venv/bin/python -m benchmarks.run            # full suite (make bench)
    .venv/bin/python -m benchmarks.run --smoke    # a few minutes (make bench-smoke)
    .venv/bin/python -m benchmarks.run --only many-models   # that scenario alone, merged into latest.json
    .venv/bin/python -m benchmarks.run --only horizon [--smoke] [--out FILE]   # the forecast horizon alone
    .venv/bin/python -m benchmarks.run --only accuracy [--smoke] [--out FILE]  # actuals and accuracy alone

Systems run one after the other on the same machine with the same load; each gets its own copy of
the registry (the reload scenario registers and promotes a version). The "Forecast horizon"
(``benchmarks/horizon.py``) and "Many models" (``benchmarks/many_models.py``) scenarios start their
own two systems last, then "Actuals and accuracy" (``benchmarks/accuracy.py``) starts this stack once more
(full suite only: the smoke version leaves it out, CI's time budget); ``--only`` runs one alone: its record
replaces its key (``horizon``, ``many_models``, ``accuracy``) of the results file (a new one if there is none),
and the report is written again, beside ``--out`` when it is given (``REPORT.md`` or ``results/REPORT-smoke.md``
otherwise).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import accuracy, horizon, many_models, netns, scenarios
from benchmarks.report import report_path, write_report
from benchmarks.systems import DEFAULT_MULES, System, make_systems, memory_mb
from forecast.backtest import DEFAULT_ORIGINS
from forecast.registry import Registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALL_SYSTEMS = ["uwsgi-mules", "uwsgi-mules-lightgbm", "ray-plain", "ray-plain-1", "ray-plain-1-lightgbm",
               "ray-plain-nobatch", "ray-tutorial", "floor", "mule-floor", "ray-floor"]  # fmt: skip
# ray-tuned (FastAPI through Serve's Python proxy) is in the sweep (benchmarks/ray_serve/tune.py), far behind these


def machine() -> dict[str, Any]:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "cores": len(re.findall(r"^processor", Path("/proc/cpuinfo").read_text(), re.M)),
        "memory_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit.stdout.strip() + ("-dirty" if dirty else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "network": "own namespace, loopback only" if netns.inside() else "the host's",
    }


def non_loopback_listeners(pids: list[int]) -> list[str]:
    """Listening sockets of these processes reachable beyond loopback (should be none).

    None in the suite's own network namespace, whose only interface is ``lo`` (:mod:`benchmarks.netns`).
    """
    if netns.inside():
        return []
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    bad = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3] if len(fields) > 3 else ""
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & set(pids) and not re.match(r"^(127\.|\[::1\]|\[::ffff:127\.)", local):
            bad.append(line.strip())
    return bad


def registry_copy(scratch: Path, name: str) -> Path:
    """A copy of the benchmark's registry (``registry/``), trained first if it has no production version, or one
    without an interval calibration (trained with ``--backtest-origins 0``, or before calibrations): the
    horizon scenario asks for bands."""
    source = ROOT / "registry"
    if not calibrated(source):
        log(f"training the benchmark's model into {source} (no calibrated production version)")
        # The default calibration whatever FORECAST_BACKTEST_ORIGINS says (0 would leave the model without bands).
        command = ["train", "--backtest-origins", str(DEFAULT_ORIGINS)]
        subprocess.run([sys.executable, "-m", "forecast", "--registry", str(source), *command], check=True, cwd=ROOT)
    target = scratch / f"registry-{name}"
    shutil.copytree(source, target)
    return target


def calibrated(registry: Path) -> bool:
    """Whether the registry has a production version with an interval calibration."""
    reg = Registry(registry)
    production = reg.alias("production") if registry.exists() else None
    return production is not None and bool(reg.metadata(production.version).get("intervals"))


def run_system(system: System, profile: scenarios.Profile, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": system.description, "kind": system.kind, "only": list(system.only)}
    log(f"[{system.name}] cold start")
    try:
        out["cold_start_s"] = scenarios.cold_start(system)
        system.wait_ready()
        time.sleep(1)
        out["memory_idle"] = memory_mb(system.tree_pids())
        # its background work, before any traffic
        out["idle_cpu_cores"] = scenarios.idle_cpu(system, profile.idle_seconds)
        out["non_loopback_listeners"] = non_loopback_listeners(system.tree_pids())
        if system.kind == "model":
            log(f"[{system.name}] correctness")
            out["correctness"] = scenarios.correctness(system, system.registry)
        out["settled_s"] = {}
        settle = scenarios.Settler(
            system, out["idle_cpu_cores"], out["settled_s"], log, profile.settle_limit_s, profile.settle_for_quiet
        )
        settle("closed_loop")
        log(f"[{system.name}] closed loop")
        out["closed_loop"] = scenarios.closed_loop(system, profile)
        out["memory_load"] = scenarios.memory_under_load(system, profile.memory_seconds)
        if system.kind != "model":
            return out
        if system.only:  # a variant: its own scenarios, no more
            if system.runs("batch"):
                settle("batch")
                log(f"[{system.name}] batch")
                out["batch"] = scenarios.batch(system, profile, system.registry)
            return out
        settle("open_loop")
        log(f"[{system.name}] open loop")
        out["open_loop"] = scenarios.open_loop(system, profile)
        settle("batch")
        log(f"[{system.name}] batch")
        out["batch"] = scenarios.batch(system, profile, system.registry)
        settle("overload")
        log(f"[{system.name}] overload")
        capacity = max(level["median"]["rps"] for level in out["closed_loop"].values())
        out["overload"] = scenarios.overload(system, profile, 2 * capacity)
        settle("overload_common")
        log(f"[{system.name}] overload at {scenarios.COMMON_OVERLOAD_RPS} req/s")
        out["overload_common"] = scenarios.overload(system, profile, scenarios.COMMON_OVERLOAD_RPS)
        settle("fault")
        log(f"[{system.name}] fault")
        out["fault"] = scenarios.fault(system, profile)
        settle("reload")
        log(f"[{system.name}] reload")
        out["reload"] = scenarios.reload_under_load(system, profile, system.registry)
        out["non_loopback_listeners"] += non_loopback_listeners(system.tree_pids())
    finally:
        system.stop()
    return out


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def run_many_models(scratch: Path, smoke: bool) -> dict[str, Any]:
    """The "Many models" scenario's record, with the machine and commit it ran on."""
    profile = many_models.SMOKE if smoke else many_models.FULL
    registry = registry_copy(scratch, "many-models")
    return {"machine": machine(), **many_models.run(scratch, registry, profile, non_loopback_listeners, log)}


def run_horizon(scratch: Path, smoke: bool, ray: str | None, systems: dict[str, Any]) -> dict[str, Any]:
    """The "Forecast horizon" scenario's record against ``ray`` (None: :func:`horizon.choose_ray` of ``systems``,
    the run's results), with the machine and commit it ran on."""
    name = ray or horizon.choose_ray(systems, netns.inside())
    log(f"[horizon] this stack against {name}")
    pair = make_systems([horizon.OURS, name], HERE, scratch)
    profile = horizon.SMOKE if smoke else horizon.FULL
    record = horizon.run(lambda copy: registry_copy(scratch, copy), pair, profile, non_loopback_listeners, log)
    return {"machine": machine(), **record}


def run_accuracy(scratch: Path, smoke: bool) -> dict[str, Any]:
    """The "Actuals and accuracy" scenario's record, with the machine and commit it ran on. Its registry copy in a
    directory of its own: the SQLite actuals store it gets beside it starts empty."""
    (system,) = make_systems([accuracy.OURS], HERE, scratch)
    registry = registry_copy(scratch / "accuracy", "accuracy")
    profile = accuracy.SMOKE if smoke else accuracy.FULL
    return {"machine": machine(), **accuracy.run(registry, system, profile, non_loopback_listeners, log)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short version of every scenario")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--only", choices=["many-models", "horizon", "accuracy"],
                        help="run this scenario alone, merged into --out")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/)")
    parser.add_argument("--skip-many-models", action="store_true", help="leave the many-models scenario out")
    parser.add_argument("--skip-horizon", action="store_true", help="leave the forecast horizon scenario out")
    parser.add_argument("--skip-accuracy", action="store_true", help="leave the actuals and accuracy scenario out")
    parser.add_argument("--horizon-ray", default=None, help="the Ray system of the horizon scenario (default: the "
                        "run's fastest 45,000-row batch, else ray-plain)")  # fmt: skip
    parser.add_argument("--netns", choices=["auto", "on", "off"], default="auto",
                        help="run in a loopback-only network namespace (auto: when root)")  # fmt: skip
    args = parser.parse_args()
    isolate = args.netns == "on" or (args.netns == "auto" and netns.can_isolate())
    if isolate and not netns.inside():
        netns.reexec_isolated("benchmarks.run", sys.argv[1:])
    if netns.inside():
        netns.bring_loopback_up()
    default_out = HERE / "results" / ("smoke.json" if args.smoke else "latest.json")
    out = args.out or default_out
    scratch = HERE / "scratch" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    scratch.mkdir(parents=True)
    if args.only:
        results = json.loads(out.read_text()) if out.exists() else empty_results(args.smoke)
        if args.only == "horizon":
            results["horizon"] = run_horizon(scratch, args.smoke, args.horizon_ray, results["systems"])
        elif args.only == "accuracy":
            results["accuracy"] = run_accuracy(scratch, args.smoke)
        else:
            results["many_models"] = run_many_models(scratch, args.smoke)
    else:
        skip = {"many-models"} if args.skip_many_models else set()
        skip |= {"horizon"} if args.skip_horizon else set()
        skip |= {"accuracy"} if args.skip_accuracy or args.smoke else set()  # smoke: CI's time budget
        results = run_suite(args.systems.split(","), args.smoke, scratch, skip, args.horizon_ray)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    # A results file of its own (--out) gets its report beside it: a trial run never rewrites REPORT.md.
    mine = out.resolve() == default_out.resolve()
    report = write_report(results, report_path(args.smoke) if mine else out.with_suffix(".md"), out.parent)
    log(f"results: {out}; report: {report}")
    return 0


def empty_results(smoke: bool) -> dict[str, Any]:
    """A results record with no system yet, for a scenario run alone (``--only``) into a new file."""
    profile = scenarios.SMOKE if smoke else scenarios.FULL
    return {"machine": machine(), "profile": profile.__dict__, "smoke": smoke, "systems": {},
            "agreement": agreement({})}  # fmt: skip


def run_suite(
    names: list[str], smoke: bool, scratch: Path, skip: set[str] | None = None, horizon_ray: str | None = None
) -> dict[str, Any]:
    """Every scenario of every system named, then the "Forecast horizon", "Many models" and "Actuals and accuracy"
    scenarios (but those in ``skip``): the results record."""
    profile = scenarios.SMOKE if smoke else scenarios.FULL
    results: dict[str, Any] = {"machine": machine(), "profile": profile.__dict__, "smoke": smoke, "systems": {}}
    if not netns.inside():
        left_out = [name for name in names if name in netns.NEEDS_NAMESPACE]
        names = [name for name in names if name not in netns.NEEDS_NAMESPACE]
        if left_out:
            log(f"left out {left_out}: they bind every interface; run as root for a loopback-only namespace")
    # Before any system starts, the machine at its quietest. In parallel: the mules, a core each at most.
    parallel = min(results["machine"]["cores"], DEFAULT_MULES)
    repeats = 1 if smoke else 5  # the smoke run checks that it runs, not its figure
    results["scoring_alone"] = scenarios.scoring_alone(registry_copy(scratch, "scoring-alone"), repeats, parallel)
    for system in make_systems(names, HERE, scratch):
        system.registry = registry_copy(scratch, system.name)
        results["systems"][system.name] = run_system(system, profile, log)
    results["agreement"] = agreement(results["systems"])
    if "horizon" not in (skip or set()):
        results["horizon"] = run_horizon(scratch, smoke, horizon_ray, results["systems"])
    if "many-models" not in (skip or set()):
        results["many_models"] = run_many_models(scratch, smoke)
    if "accuracy" not in (skip or set()):
        results["accuracy"] = run_accuracy(scratch, smoke)
    return results


def agreement(systems: dict[str, Any]) -> dict[str, Any]:
    """Largest difference between any two systems' predictions for the same 100 requests."""
    answers = {name: s["correctness"]["predictions"] for name, s in systems.items() if "correctness" in s}
    names = sorted(answers)
    worst = 0.0
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            worst = max(worst, max(abs(x - y) for x, y in zip(answers[a], answers[b], strict=True)))
    return {"systems": names, "max_abs_difference": worst}


if __name__ == "__main__":
    sys.exit(main())
