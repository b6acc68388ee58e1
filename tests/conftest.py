"""Fixtures of every tier: a small real data slice, small real models, a registry.

The tier of a test is its folder: ``tests/unit/`` (pure logic, no processes; fakes only
for the uWSGI module), ``tests/stack/`` (real nginx + uWSGI + mules) and ``tests/docker/``
(the image in a real Docker engine; ``make docker-test``, not ``make test``); each gets its
marker here, so ``pytest -m unit`` runs the fast tier alone.  Models are real LightGBM
models trained on a slice of the generated data (3 stores x 4 items x 2 years), small
enough to train in about a second.
"""

from __future__ import annotations

import os

# One OpenMP thread per LightGBM fit, set before lightgbm loads: the tests run in one worker per core
# beside stacks, and OpenMP's spinning threads on a busy machine once made a 1-second fit outlast
# the 300-second test timeout in CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forecast.backtest import DEFAULT_ORIGINS
from forecast.data import SalesData, generate
from forecast.registry import Registry
from forecast.train import TrainResult, train
from tests.postgres import postgres_server

SMALL_ROUNDS = 40
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from its folder."""
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier in ("unit", "stack", "docker", "swarm", "kube"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _clean_forecast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; no FORECAST_* leaks in from the shell."""
    for name in list(os.environ):
        if name.startswith("FORECAST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server for the session (tests/postgres.py); its URL."""
    with postgres_server() as url:
        yield url


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
    version = registry.register(small_model.model_text, small_model.metadata)
    registry.set_alias("production", registry.verify(version).version)  # verified here: no child process
    return registry


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory: pytest.TempPathFactory, full_data: SalesData) -> Registry:
    """A registry with v1 (production, with its interval calibration) and v2 (without: as a version trained
    before calibrations), trained on all stores and items of 2015-2016."""
    rows = full_data.rows
    data = full_data.select(rows.dates >= np.datetime64("2015-01-01"))
    data = data.select(data.rows.dates < np.datetime64("2017-01-01"))
    registry = Registry(tmp_path_factory.mktemp("serving") / "registry")
    for rounds, origins in ((SMALL_ROUNDS, DEFAULT_ORIGINS), (SMALL_ROUNDS + 10, 0)):
        result = train(data, rounds=rounds, refit=False, log=lambda _: None, backtest_origins=origins)
        registry.register(result.model_text, result.metadata)
    registry.promote("v1")
    # v2's compiled trees too, once: every test that copies this registry and promotes v2 would compile it again
    # (seconds each, on a loaded machine; what compiling does is tests/unit/test_compiled.py's).
    registry.check("v2")
    return registry
