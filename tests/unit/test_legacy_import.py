"""Bringing the Ray Serve service's model along: import by path and by URL, refusals, forgeries, crashes.

The models are built here in the original's style (``tests/legacy_models.py``); the registry
file is served from 127.0.0.1 where a URL is needed.  Verification runs in a child process,
as it does on the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.domain import Domain
from app.legacy_answers import Guardrails, LegacyQuery
from forecast.data import SalesData
from forecast.errors import CorruptVersion, ImportRefused, IncompatibleVersion
from forecast.features import FEATURE_NAMES, LEGACY_FEATURE_VERSION
from forecast.legacy import import_legacy
from forecast.registry import Registry, sha256_text
from tests.helpers import crashing_model_text, forge_version, serving_directory
from tests.legacy_models import train_legacy_model, write_registry_file

# One xdist worker runs this module whole (make test: --dist loadgroup), so that
# its module fixture (the original's model, trained) is made once.
pytestmark = pytest.mark.xdist_group("test_legacy_import")


@pytest.fixture(scope="module")
def legacy_text(full_data: SalesData) -> str:
    return train_legacy_model(full_data)


@pytest.fixture
def source(tmp_path: Path, legacy_text: str) -> Path:
    """The original's registry file and model text on disk, the file naming the model by a relative path."""
    (tmp_path / "lgb_model.txt").write_text(legacy_text)
    return write_registry_file(tmp_path, "lgb_model.txt")


def test_import_by_path_registers_a_described_version_and_promotes_it(registry: Registry, source: Path) -> None:
    version, registered = import_legacy(registry, str(source), promote=True)
    assert (version, registered, registry.resolve("production")) == ("v2", True, "v2")
    metadata = registry.metadata(version)
    assert metadata["feature_version"] == LEGACY_FEATURE_VERSION
    assert metadata["feature_names"] == ["store", "item", "month", "day", "year"]
    assert metadata["source"] == {"registry_file": str(source), "model_file": str(source.parent / "lgb_model.txt")}
    assert registry.checksum(version) == sha256_text((source.parent / "lgb_model.txt").read_text())
    guardrails = {"min_date": "2018-01-01", "max_date": "2018-03-31", "store_id_min": 0, "store_id_max": 10,
                  "item_id_min": 0, "item_id_max": 50, "max_value": 200.0}  # fmt: skip
    assert metadata["guardrails"] == guardrails
    assert import_legacy(registry, str(source), promote=True) == ("v2", False)  # the same model: nothing new
    assert registry.versions() == ["v1", "v2"]


def test_import_by_url_from_the_command_line(registry: Registry, tmp_path: Path, legacy_text: str) -> None:
    (tmp_path / "lgb_model.txt").write_text(legacy_text)
    with serving_directory(tmp_path) as url:
        write_registry_file(tmp_path, f"{url}/lgb_model.txt")
        command = [sys.executable, "-m", "forecast", "--registry", str(registry.root), "import-legacy",
                   f"{url}/model_registry.json"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"registered v2 from {url}/model_registry.json (verified)"]
    assert registry.resolve("production") == "v1"  # no --promote
    assert registry.metadata("v2")["source"]["model_file"] == f"{url}/lgb_model.txt"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing model", "HTTP 404"),
        ("not a model", "not a LightGBM model text"),
        ("six features", "features store item month day year extra are not the feature set's 5"),
        ("not JSON", "is not JSON"),
        ("no guardrails", "guardrails are incomplete"),
        ("cut short", "cut short"),
    ],
)
def test_refused_imports_name_the_reason_and_change_nothing(
    registry: Registry, tmp_path: Path, full_data: SalesData, legacy_text: str, case: str, reason: str
) -> None:
    model = tmp_path / "lgb_model.txt"
    model.write_text(
        {
            "not a model": "<html>Not Found</html>",
            "six features": train_legacy_model(full_data, names=("store", "item", "month", "day", "year", "extra")),
            "cut short": legacy_text[: len(legacy_text) // 3],
        }.get(case, legacy_text)
    )
    with serving_directory(tmp_path) as url:
        registry_file = write_registry_file(tmp_path, f"{url}/{'gone.txt' if case == 'missing model' else model.name}")
        if case == "not JSON":
            registry_file.write_text("model_file: lgb_model.txt")
        if case == "no guardrails":
            registry_file.write_text(json.dumps({"model_type": "lightgbm", "model_file": f"{url}/{model.name}"}))
        with pytest.raises(ImportRefused, match=reason):
            import_legacy(registry, f"{url}/model_registry.json", promote=True)
    assert (registry.versions(), registry.resolve("production")) == (["v1"], "v1")


def test_a_model_over_other_features_under_copied_metadata_is_refused(registry: Registry, legacy_text: str) -> None:
    """The forgery: metadata copied from a valid version, checksum recomputed; verify reads the model itself."""
    forge_version(registry, "v1", "v2", legacy_text)
    with pytest.raises(IncompatibleVersion, match="the model's 5 features store item month day year are not"):
        registry.verify("v2")
    with pytest.raises(IncompatibleVersion, match=" ".join(FEATURE_NAMES)):
        registry.promote("v2")
    assert registry.resolve("production") == "v1"


def test_a_model_that_crashes_lightgbm_crashes_only_the_verifying_child(registry: Registry) -> None:
    forge_version(registry, "v1", "v2", crashing_model_text(registry.model_path("v1").read_text()))
    with pytest.raises(CorruptVersion, match=r"version v2: verifying it crashed \(killed by signal 6"):
        registry.check("v2")
    with pytest.raises(CorruptVersion, match="crashed"):
        registry.promote("v2")
    assert registry.resolve("production") == "v1"


def test_a_truncated_model_is_refused_before_lightgbm_parses_it(registry: Registry) -> None:
    """In this very process: LightGBM would abort it (the truncated download of the issue)."""
    text = registry.model_path("v1").read_text()
    forge_version(registry, "v1", "v2", text[: len(text) // 3])
    with pytest.raises(CorruptVersion, match="cut short"):
        registry.verify("v2")


@pytest.fixture
def original() -> Guardrails:
    return Guardrails("2018-01-01", "2018-03-31", 0, 10, 0, 50, 200.0)


@pytest.mark.parametrize(
    ("date", "store", "item", "answer"),
    [
        ("2018-01-21", 10, 23, None),
        ("2018-01-21", 0, 0, None),  # ids from 0, as the original checks them
        ("2017-12-31", 99, 99, -1.0),  # the date first
        ("2018-04-01", 1, 1, -1.0),
        ("2018-1-5", 1, 1, -1.0),  # compared as text: "2018-1" > "2018-0"
        ("2018-02-30", 1, 1, None),  # inside as text: the date parse refuses it later (our 422)
        ("2018-01-21", 11, 51, -2.0),  # then the store
        ("2018-01-21", -1, 1, -2.0),
        ("2018-01-21", 10, 51, -3.0),
    ],
)
def test_guardrails_answer_as_the_original_in_its_order(
    original: Guardrails, date: str, store: int, item: int, answer: float | None
) -> None:
    query: LegacyQuery = {"date": date, "store": store, "item": item}
    assert original.sentinel(query) == answer


def test_the_cap_and_guardrails_drawn_from_our_own_models(original: Guardrails, registry: Registry) -> None:
    assert (original.cap(200.0), original.cap(200.5)) == (200.0, 200.0)
    assert original.cap(31.7) == 31.7
    ours = Guardrails.of(registry.metadata("v1"), Domain.from_metadata(registry.metadata("v1"), 731))
    assert (ours.store_min, ours.store_max, ours.item_min, ours.item_max, ours.max_value) == (1, 3, 1, 4, None)
    assert ours.cap(1e6) == 1e6
