"""``registry promote VERSION --if-better``: a version takes the alias only if it beat production on real actuals.

Real models (30 series) and a real SQLite store.  From 2016-07-01 the series sell 30% more than the
generated data; production (v1) was trained before that, a shadow (v2) on data through 2017-02 that
has the uplift, a worse one (v3) on data in which sales fell by 30% instead.  March 2017's actuals,
with the uplift, judge them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecast.actuals import Actuals, ActualsStore
from forecast.cli import main
from forecast.data import SalesData
from forecast.registry import Registry
from forecast.train import train

UPLIFT_FROM = np.datetime64("2016-07-01")


def shifted(data: SalesData, factor: float) -> SalesData:
    after = data.rows.dates >= UPLIFT_FROM
    sales = np.where(after, np.rint(data.sales * factor), data.sales).astype(np.int64)
    return SalesData(data.rows, sales, data.fingerprint)


@pytest.fixture(scope="module")
def thirty_series(full_data: SalesData) -> SalesData:
    rows = full_data.rows
    return full_data.select((rows.stores <= 3) & (rows.items <= 10) & (rows.dates >= np.datetime64("2015-01-01")))


@pytest.fixture
def judged(tmp_path: Path, thirty_series: SalesData) -> Registry:
    """v1 production (before the uplift), v2 shadow (with it), v3 (with a fall), and March 2017's actuals."""
    registry = Registry(tmp_path / "registry")
    up, down = shifted(thirty_series, 1.3), shifted(thirty_series, 0.7)
    for data, through in ((thirty_series, "2016-07-01"), (up, "2017-03-01"), (down, "2017-03-01")):
        part = data.select(data.rows.dates < np.datetime64(through))
        result = train(part, rounds=30, refit=False, log=lambda _: None, backtest_origins=0)
        registry.register(result.model_text, result.metadata)
    registry.promote("v1")
    registry.promote("v2", "shadow", 10)
    march = up.select((up.rows.dates >= np.datetime64("2017-03-01")) & (up.rows.dates <= np.datetime64("2017-03-28")))
    store = ActualsStore.beside(registry.root)
    store.load(Actuals(march.rows.dates.astype(np.int64), march.rows.stores, march.rows.items, march.sales))
    return registry


def promote(registry: Registry, *args: str) -> int:
    return main(["--registry", str(registry.root), "registry", "promote", *args])


def test_the_shadow_trained_on_the_uplift_beats_production_and_is_promoted(
    judged: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert promote(judged, "v2", "--if-better", "--min-rows", "500") == 0
    said = capsys.readouterr().out
    assert "on 840 actuals of 2017-03-01..2017-03-28: v2 SMAPE" in said, said
    assert "production v1 SMAPE" in said
    assert judged.resolve("production") == "v2"


def test_a_worse_version_is_refused_and_production_stays(judged: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert promote(judged, "v3", "--if-better", "--min-rows", "500") == 1
    said = capsys.readouterr().err
    assert "v3 is not better than production v1: on 840 actuals" in said, said
    assert judged.resolve("production") == "v1"


def test_too_few_actuals_are_no_evidence(judged: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert promote(judged, "v2", "--if-better", "--days", "7") == 1
    assert "too few actuals to judge v2: 210 in the last 7 days, fewer than --min-rows 1000" in capsys.readouterr().err
    assert judged.resolve("production") == "v1"
    assert promote(judged, "v2", "--if-better", "--days", "7", "--min-rows", "200") == 0
    assert judged.resolve("production") == "v2"
