"""The scrape's housekeeping: live gauges of processes that died are dropped, the others kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.exposition import forget_dead_processes


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
