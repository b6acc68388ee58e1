"""The scrape's housekeeping: live gauges of processes that died are dropped, the others kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.exposition import ProcessFilesCollector, forget_dead_processes


def test_live_gauge_files_of_dead_processes_are_dropped(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    files = {
        "mine": tmp_path / f"gauge_livesum_{os.getpid()}.db",
        "dead": tmp_path / f"gauge_livesum_{dead.pid}.db",
        "dead counter": tmp_path / f"counter_{dead.pid}.db",  # counters stay: a respawn never lowers them
    }
    for path in files.values():
        path.write_bytes(b"")
    forget_dead_processes(tmp_path)
    assert {name for name, path in files.items() if path.exists()} == {"mine", "dead counter"}


def test_a_file_a_process_has_created_but_not_sized_yet_is_left_out(tmp_path: Path) -> None:
    """A scrape between a new process creating its file and sizing it answered 500 (struct.error)."""
    script = "from prometheus_client import Counter; Counter('forecast_probe_total', 'probe').inc(3)"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    (tmp_path / "counter_999999.db").write_bytes(b"")  # created, not yet sized
    samples = {
        sample.name: sample.value for metric in ProcessFilesCollector(tmp_path).collect() for sample in metric.samples
    }
    assert samples["forecast_probe_total"] == 3.0
