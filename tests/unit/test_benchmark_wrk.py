"""wrk_single_row's bookkeeping: process roles, paired ratios (floors the other way up), its output file; the
floors' stacks."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from benchmarks import wrk_single_row as wrk
from benchmarks.floors import FLOORS, ConstantStack
from launcher.stack import Stack


def run(rps: float, p50: float = 1.0, cpu_us: float = 100.0) -> wrk.Run:
    return {"rps": rps, "p50": p50, "p99": 2 * p50, "non2xx": 0.0, "cpu_us": cpu_us, "pss_mb": 90.0}


def test_server_processes_are_split_by_role_and_workers_told_from_mules_by_their_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = {1: [10, 20], 10: [11, 12, 13, 14], 20: [21]}  # launcher 1: uWSGI master 10, nginx 20
    threads = {11: 17, 12: 16, 13: 1, 14: 2}
    monkeypatch.setattr(wrk, "children_of", lambda pid: tree.get(pid, []))
    monkeypatch.setattr(wrk, "descendants", lambda roots: [roots[0], *(p for r in roots for p in tree.get(r, []))])
    monkeypatch.setattr(wrk, "command_line", lambda pid: b"nginx: master process" if pid == 20 else b"uwsgi\0--ini")
    monkeypatch.setattr(wrk, "thread_count", lambda pid: threads.get(pid, 1))
    assert wrk.split_roles(1, 16) == {"nginx": [20, 21], "master": [10], "workers": [11, 12], "mules": [13, 14]}


def test_pairs_read_variants_over_the_default_and_the_default_over_floors(capsys: pytest.CaptureFixture[str]) -> None:
    runs = {
        "default": {64: [run(3000, 20), run(2000, 30)]},
        "aa": {64: [run(3300, 20), run(1800, 30)]},
        "mule-floor": {64: [run(4000, 10), run(4000, 15)]},
    }
    wrk.print_pairs(runs, floors=("mule-floor",))
    out = capsys.readouterr().out
    assert "paired aa / default, throughput at 64 connections: median 100.0%, range 90.0%-110.0% (2 pairs)" in out
    assert "paired default / mule-floor, throughput at 64 connections: median 62.5%, range 50.0%-75.0%" in out
    assert "paired default / mule-floor, p50 at 64 connections: median 200.0%, range 200.0%-200.0%" in out


def test_a_pair_whose_second_run_reads_zero_has_no_ratio() -> None:
    assert wrk.paired_ratios([(run(10), run(5)), (run(10), run(0))], "rps") == [2.0]


def test_the_output_file_gets_everything_printed(tmp_path: Path) -> None:
    screen, path = io.StringIO(), tmp_path / "out.txt"
    with path.open("w") as copy:
        tee = wrk.Tee(screen, copy)
        tee.write("line\n")
        tee.flush()
    assert screen.getvalue() == path.read_text() == "line\n"


def test_the_header_names_the_date_the_commit_and_the_command() -> None:
    stack = wrk.LauncherStack("default", wrk.ROOT, wrk.ROOT / "registry", {"FORECAST_UWSGI_THREADS": "8"})
    text = wrk.header(["benchmarks/wrk_single_row.py", "--repeats", "6"], {"default": stack})
    assert text.startswith("# wrk_single_row 20")
    assert f"# command: {Path(sys.executable).name} benchmarks/wrk_single_row.py --repeats 6" in text
    assert f"at {wrk.commit_of(wrk.ROOT)}" in text
    assert "# stack default: launcher in" in text
    assert "'FORECAST_UWSGI_THREADS': '8'" in text


def test_each_floor_starts_its_own_ini_and_the_mule_floor_the_mules_it_declares(tmp_path: Path) -> None:
    plain = FLOORS["floor"].stack(tmp_path / "a", 8000)
    mules = FLOORS["mule-floor"].stack(tmp_path / "b", 8001, {"FORECAST_LOG_LEVEL": "DEBUG"})
    assert type(plain) is ConstantStack
    assert plain.ini.parent.name == "floor"
    assert type(mules) is Stack
    assert mules.ini.parent.name == "mule_floor"
    assert mules.env["FORECAST_METRICS_ENABLED"] == "false"
    assert mules.env["FORECAST_LOG_LEVEL"] == "DEBUG"
    mules.check_config()  # its uwsgi.ini starts FORECAST_MULES mules, as the product's must
