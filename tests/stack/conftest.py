"""Fixtures of the stack tier: real nginx + uWSGI + mules on a free port, and what a failure reports."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pytest

from forecast.data import SalesData
from forecast.registry import Registry
from forecast.train import train
from launcher.stack import Stack
from tests.stack.stacks import start_stack


@pytest.fixture(scope="session")
def heavy_registry(tmp_path_factory: pytest.TempPathFactory, full_data: SalesData) -> Registry:
    """A 1,000-tree model that LightGBM scores: 45,000 rows take seconds (a mule can be caught inside the call).

    Verified here without compiling its trees: compiled, it would score too fast to catch.
    """
    sample = full_data.select(np.random.default_rng(0).random(len(full_data)) < 0.05)
    result = train(sample, rounds=1000, refit=False, log=lambda _: None, backtest_origins=0)
    registry = Registry(tmp_path_factory.mktemp("heavy") / "registry")
    version = registry.register(result.model_text, result.metadata)
    registry.set_alias("production", registry.verify(version, compiled=False).version)
    return registry


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry) -> Iterator[Stack]:
    """One shared stack for tests that leave it as they found it."""
    stack = start_stack(tmp_path_factory.mktemp("stack"), serving_registry)
    yield stack
    stack.stop()


@pytest.fixture
def own_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    """A stack of the test's own, for tests that kill or stop its processes."""
    stack = start_stack(tmp_path, serving_registry)
    yield stack
    stack.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test (a timeout included) reports its stacks' log tails (uWSGI and nginx): CI keeps no files."""
    report: pytest.TestReport = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Stack):
                report.sections.append((f"stack logs ({name})", value.log_tail(120)))
                if value.access_log.exists():
                    failed = [line for line in value.access_log.read_text().splitlines() if "status=200" not in line]
                    report.sections.append((f"non-200 access lines ({name})", "\n".join(failed[-80:])))
    return report
