"""Compiled trees: made once beside the model text, the same forecasts as LightGBM, refused or bypassed when wrong."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forecast.data import SalesData
from forecast.errors import CorruptVersion
from forecast.registry import COMPILED_TOLERANCE, Registry, domain_rows
from forecast.train import TrainResult, train
from tests.conftest import SMALL_ROUNDS


@pytest.fixture
def compiled(registry: Registry) -> Registry:
    """``registry`` with v1's trees compiled."""
    registry.compile("v1")
    return registry


def _artefact(registry: Registry, version: str = "v1") -> tuple[Path, Path]:
    return registry.compiled_paths(version)


def _rewrite(path: Path, change: dict[str, object]) -> None:
    info = json.loads(path.read_text())
    path.chmod(0o644)
    path.write_text(json.dumps({**info, **change}))


def test_compiled_trees_forecast_what_lightgbm_does_over_the_whole_domain(compiled: Registry) -> None:
    predictor = compiled.verify("v1")
    assert predictor.engine == "compiled"
    assert predictor.booster is None  # loaded without LightGBM
    assert predictor.compiled is not None
    assert predictor.output("contributions", domain_rows(compiled.metadata("v1"))) is None  # LightGBM's job (Scorer)
    rows = domain_rows(compiled.metadata("v1"))
    assert len(rows) == 3 * 4 * 8  # every store and item of the small model, on 8 dates
    reference = predictor.compiled.reference  # what loading checked them against
    assert np.array_equal(reference.rows.dates, rows.dates)
    assert np.array_equal(reference.rows.items, rows.items)
    lightgbm = compiled.load("v1", compiled=False)
    assert lightgbm.engine == "lightgbm"
    assert np.array_equal(reference.sales, lightgbm.predict(rows))  # recorded exactly
    # and predict() uses them, for one row as for many
    np.testing.assert_allclose(predictor.predict(rows), lightgbm.predict(rows), rtol=0, atol=COMPILED_TOLERANCE)
    single = predictor.predict(rows.__class__(rows.dates[:1], rows.stores[:1], rows.items[:1]))
    assert abs(single[0] - lightgbm.predict(rows)[0]) <= COMPILED_TOLERANCE


def test_the_artefact_is_read_only_and_names_what_it_was_made_from(compiled: Registry) -> None:
    library_path, info_path = _artefact(compiled)
    info = json.loads(info_path.read_text())
    assert info["model_sha256"] == compiled.checksum("v1")
    assert info["library_sha256"].startswith("sha256:")
    assert info["target_cpu"] == "generic"
    for path in (library_path, info_path):
        assert not path.stat().st_mode & 0o222
    assert not [p.name for p in library_path.parent.iterdir() if p.name.startswith(".")]  # no scratch left


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("info", "compiled for another model_sha256"),
        ("object", "does not match its checksum"),
        ("missing", "not compiled"),
    ],
)
def test_a_stale_damaged_or_missing_artefact_is_bypassed_for_lightgbm(
    compiled: Registry, damage: str, reason: str
) -> None:
    library_path, info_path = _artefact(compiled)
    if damage == "info":
        _rewrite(info_path, {"model_sha256": "sha256:" + "0" * 64})
    elif damage == "object":
        library_path.chmod(0o644)
        library_path.write_bytes(library_path.read_bytes()[:-16] + b"\0" * 16)
    else:
        info_path.unlink()
    assert reason in compiled.compiled_state("v1")
    assert compiled.verify("v1").engine == "lightgbm"


def test_a_library_that_does_not_load_is_bypassed_for_lightgbm(compiled: Registry) -> None:
    """Damage the checksum cannot see (rewritten to match) still leaves the version served, by LightGBM."""
    library_path, info_path = _artefact(compiled)
    library_path.chmod(0o644)
    library_path.write_bytes(b"not a shared library")
    _rewrite(info_path, {"library_sha256": "sha256:" + hashlib.sha256(b"not a shared library").hexdigest()})
    assert f"{library_path.name} does not load (OSError" in compiled.compiled_state("v1")
    assert compiled.verify("v1").engine == "lightgbm"


def test_without_a_linker_compiling_says_so_and_lightgbm_scores(registry: Registry, tmp_path: Path) -> None:
    done = _cli(registry, "verify", "v1", "--compile", PATH=str(tmp_path))  # no ld on this PATH
    assert done.returncode == 0, done.stderr
    assert "version v1: no linker to make compiled trees a shared library (install binutils)" in done.stderr
    assert "no compiled trees: LightGBM scores" in done.stdout
    assert not _artefact(registry)[1].exists()


def test_compiled_trees_of_another_model_are_refused_even_with_consistent_checksums(
    compiled: Registry, small_data: SalesData, tmp_path: Path
) -> None:
    """An artefact whose description was rewritten to match (as a careless copy would) forecasts other numbers."""
    other = Registry(tmp_path / "other")
    longer = train(small_data, rounds=SMALL_ROUNDS + 20, log=lambda _: None, backtest_origins=0)
    version = other.register(longer.model_text, longer.metadata)
    other.compile(version)
    library_path, info_path = _artefact(compiled)
    library_path.chmod(0o644)
    library_path.write_bytes(_artefact(other, version)[0].read_bytes())
    _rewrite(info_path, {"library_sha256": "sha256:" + hashlib.sha256(library_path.read_bytes()).hexdigest()})
    with pytest.raises(CorruptVersion, match=r"compiled trees forecast up to .* away from LightGBM"):
        compiled.verify("v1")


def _cli(registry: Registry, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecast", "--registry", str(registry.root), "registry", *args],
        capture_output=True, text=True, check=False, env={**os.environ, **env},
    )  # fmt: skip


def test_a_process_scoring_compiled_trees_never_loads_lightgbm(compiled: Registry) -> None:
    """As a mule does: the trees are checked against the forecasts recorded when they were compiled."""
    script = (
        "import sys; sys.modules['lightgbm'] = None  # importing it would raise\n"
        "from forecast.registry import Registry\n"
        f"predictor = Registry({str(compiled.root)!r}).verify('v1')\n"
        "print(predictor.engine, 'llvmlite' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["compiled", "False"]


def test_an_artefact_copied_whole_from_another_model_passes_a_mule_but_not_registry_verify(
    compiled: Registry, small_data: SalesData, tmp_path: Path
) -> None:
    """Library and reference agree with each other, not with this version's LightGBM: the check before an alias
    names the version (``registry verify``) compares the reference with LightGBM."""
    other = Registry(tmp_path / "other")
    longer = train(small_data, rounds=SMALL_ROUNDS + 20, log=lambda _: None, backtest_origins=0)
    version = other.register(longer.model_text, longer.metadata)
    other.compile(version)
    library_path, info_path = _artefact(compiled)
    theirs_library, theirs_info = _artefact(other, version)
    library_path.chmod(0o644)
    library_path.write_bytes(theirs_library.read_bytes())
    _rewrite(
        info_path,
        {**json.loads(theirs_info.read_text()), "model_sha256": compiled.checksum("v1")},
    )
    assert compiled.verify("v1").engine == "compiled"  # self-consistent: what a mule checks holds
    done = _cli(compiled, "verify", "v1", "--json")
    assert done.returncode == 1
    refusal = json.loads(done.stdout.strip().splitlines()[-1])
    assert refusal["code"] == "corrupt_version"
    assert "the forecasts recorded with its compiled trees are up to" in refusal["message"]


def test_verify_with_compile_makes_the_artefact_once_and_promote_runs_it(
    registry: Registry, small_model: TrainResult
) -> None:
    done = _cli(registry, "verify", "v1", "--compile", FORECAST_COMPILED_TREES="false")
    assert done.returncode == 0
    assert "no compiled trees: LightGBM scores" in done.stdout
    assert not _artefact(registry)[1].exists()
    done = _cli(registry, "verify", "v1", "--compile")
    assert done.returncode == 0, done.stderr
    assert "compiled v1 (not compiled before)" in done.stderr
    assert "compiled trees agree with LightGBM" in done.stdout
    again = _cli(registry, "verify", "v1", "--compile")
    assert "compiled v1" not in again.stderr  # once
    version = registry.register(small_model.model_text, small_model.metadata)
    registry.promote(version)  # verified in a child process, which compiles
    assert registry.compiled_state(version) == ""
