"""An imported Ray Serve model forecasts LightGBM's own doubles, to the last digit, with compiled trees.

The original answered ``Booster.predict`` on its row, which adds the trees one after the
other; compiled trees summed in lleaves' blocks change the last bits of most sums.  The
model here (trained in the original's style, ``tests/legacy_models.py``) has more trees
than one block, and each test first shows that the difference is there to be seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from forecast.compiled import EXACT_TREE_BLOCK, TREE_BLOCK
from forecast.data import SalesData
from forecast.errors import CorruptVersion
from forecast.features import Rows
from forecast.legacy import import_legacy
from forecast.registry import Registry
from tests.helpers import kaggle_test_rows
from tests.legacy_models import (
    DIGITS_ROUNDS,
    compiled_prediction,
    original_prediction,
    train_legacy_model,
    write_registry_file,
)

ROWS = kaggle_test_rows()  # every store and item of 2018-Q1: 45,000 rows


@pytest.fixture(scope="module")
def digits_text(full_data: SalesData) -> str:
    return train_legacy_model(full_data, rounds=DIGITS_ROUNDS)


@pytest.fixture(scope="module")
def expected(digits_text: str) -> list[float]:
    """What the original computed for every row: ``Booster.predict`` on its integer row."""
    return original_prediction(digits_text, ROWS)


@pytest.fixture(scope="module")
def blocked(digits_text: str, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """What compiled trees summed in lleaves' blocks forecast (how imported versions were compiled before)."""
    return compiled_prediction(digits_text, ROWS, tmp_path_factory.mktemp("blocked") / "v", exact_sum=False)


@pytest.fixture
def imported(tmp_path: Path, digits_text: str) -> Registry:
    """``digits_text`` imported from a registry file and promoted (verified, and compiled, in a child process)."""
    (tmp_path / "lgb_model.txt").write_text(digits_text)
    registry = Registry(tmp_path / "registry")
    assert import_legacy(registry, str(write_registry_file(tmp_path, "lgb_model.txt")), promote=True) == ("v1", True)
    return registry


def differing(forecasts: list[float] | np.ndarray, expected: list[float]) -> int:
    return sum(a != b for a, b in zip(list(forecasts), expected, strict=True))


def test_the_fixture_shows_the_difference_in_the_last_digits(blocked: list[float], expected: list[float]) -> None:
    """Without this, the tests below would pass for any way of summing."""
    assert differing(blocked, expected) > len(ROWS) // 2
    assert max(abs(a - b) for a, b in zip(blocked, expected, strict=True)) < 1e-9  # rounding, not another model


def test_an_imported_versions_compiled_trees_forecast_what_the_original_computed(
    imported: Registry, expected: list[float]
) -> None:
    predictor = imported.load("production")
    assert predictor.engine == "compiled"
    served = predictor.predict(Rows.from_columns(*zip(*ROWS, strict=True)))
    assert differing(served, expected) == 0
    assert [repr(float(a)) for a in served[:50]] == [repr(b) for b in expected[:50]]  # the digits FastAPI wrote
    info = json.loads(imported.compiled_paths("v1")[1].read_text())
    assert info["tree_block"] == EXACT_TREE_BLOCK


def test_our_own_versions_keep_lleaves_blocks_and_their_artefacts_made_before(registry: Registry) -> None:
    registry.compile("v1")
    assert json.loads(registry.compiled_paths("v1")[1].read_text())["tree_block"] == TREE_BLOCK
    _rewrite_description(registry, {}, drop="tree_block")  # made before the block size was recorded: still ours
    assert registry.compiled_state("v1") == ""
    assert registry.load("v1").engine == "compiled"


def _rewrite_description(registry: Registry, change: dict[str, object], drop: str = "") -> None:
    info_path = registry.compiled_paths("v1")[1]
    info = {key: value for key, value in json.loads(info_path.read_text()).items() if key != drop}
    info_path.chmod(0o644)
    info_path.write_text(json.dumps({**info, **change}))


def test_a_blocked_artefact_of_an_imported_version_is_stale_and_lightgbm_scores(
    imported: Registry, expected: list[float]
) -> None:
    """An artefact compiled before imported versions were compiled one tree per block does not record it."""
    _rewrite_description(imported, {}, drop="tree_block")
    assert imported.compiled_state("v1") == "compiled for another tree_block"
    predictor = imported.verify("v1")
    assert predictor.engine == "lightgbm"
    assert differing(predictor.predict(Rows.from_columns(*zip(*ROWS[:500], strict=True))), expected[:500]) == 0


def test_compiled_trees_one_bit_off_the_reference_refuse_an_imported_version(imported: Registry) -> None:
    """Tolerance 0 for the original's models (ours keep 1e-9: the same change passes for them)."""
    info = json.loads(imported.compiled_paths("v1")[1].read_text())
    sales = info["reference"]["sales"]
    sales[0] = float(np.nextafter(sales[0], np.inf))
    _rewrite_description(imported, {"reference": {**info["reference"], "sales": sales}})
    with pytest.raises(CorruptVersion, match=r"compiled trees forecast up to .* away from LightGBM"):
        imported.verify("v1")


def test_one_bit_off_the_reference_passes_for_our_own_versions(registry: Registry) -> None:
    registry.compile("v1")
    info = json.loads(registry.compiled_paths("v1")[1].read_text())
    sales = info["reference"]["sales"]
    sales[0] = float(np.nextafter(sales[0], np.inf))
    _rewrite_description(registry, {"reference": {**info["reference"], "sales": sales}})
    assert registry.verify("v1").engine == "compiled"
