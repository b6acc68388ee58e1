"""Plain helpers shared by both tiers (fixtures live in the conftest files)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from forecast.registry import METADATA_FILE, Registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kaggle_test_rows() -> list[tuple[str, int, int]]:
    """Every store x item for 2018-01-01..2018-03-31: the 45,000 rows of Kaggle's test set."""
    days = np.arange("2018-01-01", "2018-04-01", dtype="datetime64[D]")
    return [(str(d), s, i) for s in range(1, 11) for i in range(1, 51) for d in days]


def clone_version(registry: Registry, source: str, target: str) -> Path:
    """Copy a version under a new name (writable), to damage it in a test."""
    path = registry.versions_dir / target
    shutil.copytree(registry.versions_dir / source, path)
    for file in path.iterdir():
        file.chmod(0o644)
    metadata = json.loads((path / METADATA_FILE).read_text())
    metadata["version"] = target
    (path / METADATA_FILE).write_text(json.dumps(metadata))
    return path


def wait_for(condition: Callable[[], object], timeout_s: float = 30, explain: Callable[[], str] = lambda: "") -> None:
    """Return once ``condition()`` is true; fail after ``timeout_s`` with ``explain()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # polling interval of a wait-for-condition loop
    raise AssertionError(f"condition not met within {timeout_s} s\n{explain()}")
