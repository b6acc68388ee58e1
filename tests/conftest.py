"""Shared fixtures: a small real data slice, a small real model, a registry.

Models here are real LightGBM models trained on a slice of the generated data
(3 stores x 4 items x 2 years), small enough to train in about a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forecast.data import SalesData, generate
from forecast.registry import Registry
from forecast.train import TrainResult, train

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
def registry(tmp_path: Path, small_model: TrainResult) -> Iterator[Registry]:
    """A registry holding one version, ``v1``, promoted to production."""
    registry = Registry(tmp_path / "registry")
    registry.promote(registry.register(small_model.model_text, small_model.metadata))
    return registry
