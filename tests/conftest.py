"""Shared fixtures: a small real data slice, a small real model, a registry.

Models here are real LightGBM models trained on a slice of the generated data
(3 stores x 4 items x 2 years), small enough to train in about a second.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pytest

from forecast.data import SalesData, generate
from forecast.registry import Registry
from forecast.train import TrainResult, train
from launcher.stack import Stack

SMALL_ROUNDS = 40


@pytest.fixture(autouse=True)
def _clean_forecast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; no FORECAST_* leaks in from the shell."""
    for name in list(os.environ):
        if name.startswith("FORECAST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def full_data() -> SalesData:
    return generate(seed=0)


@pytest.fixture(scope="session")
def small_data(full_data: SalesData) -> SalesData:
    rows = full_data.rows
    mask = (rows.stores <= 3) & (rows.items <= 4) & (rows.dates < np.datetime64("2015-01-01"))
    return full_data.select(mask)


@pytest.fixture(scope="session")
def small_model(small_data: SalesData) -> TrainResult:
    return train(small_data, rounds=SMALL_ROUNDS, log=lambda _: None)


@pytest.fixture
def registry(tmp_path: Path, small_model: TrainResult) -> Registry:
    """A registry holding one version, ``v1``, promoted to production."""
    registry = Registry(tmp_path / "registry")
    registry.promote(registry.register(small_model.model_text, small_model.metadata))
    return registry


# -- the real stack: nginx + uWSGI + mules ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory: pytest.TempPathFactory, full_data: SalesData) -> Registry:
    """A registry with v1 (production) and v2, trained on all stores and items of 2015-2016."""
    rows = full_data.rows
    data = full_data.select(rows.dates >= np.datetime64("2015-01-01"))
    data = data.select(data.rows.dates < np.datetime64("2017-01-01"))
    registry = Registry(tmp_path_factory.mktemp("serving") / "registry")
    for rounds in (SMALL_ROUNDS, SMALL_ROUNDS + 10):
        result = train(data, rounds=rounds, refit=False, log=lambda _: None)
        registry.register(result.model_text, result.metadata)
    registry.promote("v1")
    return registry


@pytest.fixture(scope="session")
def heavy_registry(tmp_path_factory: pytest.TempPathFactory, full_data: SalesData) -> Registry:
    """A 1,000-tree model: scoring 45,000 rows takes seconds (a mule can be killed inside the call)."""
    sample = full_data.select(np.random.default_rng(0).random(len(full_data)) < 0.05)
    result = train(sample, rounds=1000, refit=False, log=lambda _: None)
    registry = Registry(tmp_path_factory.mktemp("heavy") / "registry")
    registry.promote(registry.register(result.model_text, result.metadata))
    return registry


def kaggle_test_rows() -> list[tuple[str, int, int]]:
    """Every store x item for 2018-01-01..2018-03-31: the 45,000 rows of Kaggle's test set."""
    days = np.arange("2018-01-01", "2018-04-01", dtype="datetime64[D]")
    return [(str(d), s, i) for s in range(1, 11) for i in range(1, 51) for d in days]


def start_stack(run_dir: Path, registry: Registry, **env: str) -> Stack:
    stack = Stack(run_dir, free_port(), {"FORECAST_REGISTRY_DIR": str(registry.root), **env})
    stack.start()
    try:
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry) -> Iterator[Stack]:
    """One shared stack for tests that leave it as they found it."""
    stack = start_stack(tmp_path_factory.mktemp("stack"), serving_registry)
    yield stack
    stack.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test against a real stack reports the stack's log tail (uWSGI and nginx): CI keeps no files."""
    report: pytest.TestReport = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Stack):
                report.sections.append((f"stack logs ({name})", value.log_tail(120)))
                if value.access_log.exists():
                    failed = [line for line in value.access_log.read_text().splitlines() if "status=200" not in line]
                    report.sections.append((f"non-200 access lines ({name})", "\n".join(failed[-80:])))
    return report
