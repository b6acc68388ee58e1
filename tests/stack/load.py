"""Helpers for the load tests: distinct rows, concurrent callers, collected outcomes, stopped mules."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests


@dataclass
class Outcome:
    row: tuple[str, int, int]
    status: int
    seconds: float
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def distinct_rows(count: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """``count`` distinct (date, store, item) rows in 2017-01-01..2018-06-30."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(546 * 500, size=count, replace=False)
    start = np.datetime64("2017-01-01")
    return [(str(start + int(k // 500)), int(k % 500 // 50) + 1, int(k % 50) + 1) for k in keys]


def hammer(
    url: str, rows: list[tuple[str, int, int]], threads: int, timeout_s: float = 30, done: list[Outcome] | None = None
) -> list[Outcome]:
    """POST each row once from ``threads`` keep-alive clients; return every outcome.

    ``done``, if given, gets each outcome as it arrives, so another thread can wait for progress.
    """
    local = threading.local()

    def call(row: tuple[str, int, int]) -> Outcome:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        try:
            response = session.post(
                f"{url}/predict", json={"date": row[0], "store": row[1], "item": row[2]}, timeout=timeout_s
            )
        except requests.RequestException as exc:
            outcome = Outcome(row, 0, time.perf_counter() - started, repr(exc))
        else:
            seconds = time.perf_counter() - started
            outcome = Outcome(row, response.status_code, seconds, response.json(), dict(response.headers))
        if done is not None:
            done.append(outcome)  # list.append is atomic
        return outcome

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, rows))


def mule_pids(url: str) -> dict[int, int]:
    """Mule id -> pid, from /status."""
    return {mule["id"]: mule["pid"] for mule in requests.get(f"{url}/status", timeout=5).json()["mules"]}


@contextlib.contextmanager
def mules_stopped(url: str) -> Iterator[dict[int, int]]:
    """SIGSTOP every mule for the block (jobs wait in the queue, nothing is lost), then SIGCONT."""
    pids = mule_pids(url)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)
