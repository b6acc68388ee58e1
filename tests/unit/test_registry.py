import json
import stat
import subprocess
import sys
import threading

import pytest

from forecast.errors import CorruptVersion, IncompatibleVersion, RegistryError, VersionNotFound
from forecast.registry import Alias, Registry, is_model_name
from forecast.train import TrainResult
from tests.helpers import clone_version


def test_register_writes_an_immutable_described_version(registry: Registry) -> None:
    assert registry.versions() == ["v1"]
    assert registry.aliases() == {"production": "v1"}
    metadata = registry.metadata("production")
    for key in ("version", "created_at", "lightgbm_version", "feature_names", "feature_version", "checksum"):
        assert key in metadata
    assert metadata["data"]["fingerprint"].startswith("sha256:")
    assert set(metadata["metrics"]["holdout"]) >= {"model", "baseline"}
    for file in (registry.model_path("v1"), registry.metadata_path("v1")):
        mode = file.stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_versions_number_up_and_promote_moves_the_alias(registry: Registry, small_model: TrainResult) -> None:
    assert registry.register(small_model.model_text, small_model.metadata) == "v2"
    assert registry.aliases() == {"production": "v1"}
    assert registry.promote("v2") == "v2"
    assert registry.promote("v1", alias="canary", weight=10) == "v1"
    assert registry.aliases() == {"production": "v2", "canary": "v1"}
    assert registry.alias_table()["canary"] == Alias("v1", 10)
    assert registry.resolve("canary") == "v1"
    with pytest.raises(RegistryError, match="weight"):
        registry.promote("v1", alias="shadow")  # a share is needed
    assert registry.rollback() == "v1"  # production back to the version it named before
    assert registry.rollback("canary") is None
    assert registry.aliases() == {"production": "v1"}
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()


def test_named_models_live_beside_the_default_one(registry: Registry, small_model: TrainResult) -> None:
    """The layout of a registry from before models had names is the default model's: nothing moves."""
    store_model = registry.named("store-3")
    version = store_model.register(small_model.model_text, small_model.metadata)
    store_model.set_alias("production", store_model.verify(version).version)
    assert registry.models() == ["default", "store-3"]
    assert (store_model.model_path("v1"), registry.model_path("v1")) == (
        registry.root / "models/store-3/versions/v1/model.txt", registry.root / "versions/v1/model.txt")  # fmt: skip
    assert (store_model.aliases(), registry.aliases()) == ({"production": "v1"}, {"production": "v1"})
    with pytest.raises(RegistryError, match="not a model name"):
        registry.named("../etc")


def test_concurrent_registers_get_distinct_versions(registry: Registry, small_model: TrainResult) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.register(small_model.model_text, small_model.metadata)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(f"v{n}" for n in range(2, 10))
    assert not [p for p in registry.model_path("v1").parent.parent.iterdir() if p.name.startswith(".")]


def test_alias_switch_is_atomic_under_a_concurrent_reader(registry: Registry, small_model: TrainResult) -> None:
    registry.register(small_model.model_text, small_model.metadata)
    seen: set[str] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        reader = Registry(registry.root)
        while not stop.is_set():
            try:
                seen.add(reader.resolve("production"))
            except Exception as exc:  # a torn or missing alias file would land here
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(60):  # the alias write itself (promote adds a verification in a child process)
            registry.set_alias("production", "v2" if n % 2 == 0 else "v1")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen == {"v1", "v2"}


def test_corrupt_model_is_refused_and_production_is_unchanged(registry: Registry) -> None:
    clone_version(registry, "v1", "v2")
    text = registry.model_path("v2").read_text()
    registry.model_path("v2").write_text(text.replace("Tree=0", "Tree=9", 1))
    with pytest.raises(CorruptVersion, match="checksum"):
        registry.verify("v2")
    with pytest.raises(CorruptVersion):
        registry.promote("v2")
    assert registry.aliases() == {"production": "v1"}


def test_unparseable_model_with_matching_checksum_is_refused(registry: Registry) -> None:
    registry.copy_version("v1", "v2", model_text="not a model\n")
    with pytest.raises(CorruptVersion, match="not a LightGBM model text"):  # found before LightGBM parses it
        registry.promote("v2")
    assert registry.resolve("production") == "v1"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("feature_version", "0", "feature version"),
        ("feature_names", ["store", "item"], "feature version"),
        ("lightgbm_version", "3.3.5", "LightGBM"),
    ],
)
def test_incompatible_version_is_refused(registry: Registry, field: str, value: object, message: str) -> None:
    clone_version(registry, "v1", "v2")
    metadata = json.loads(registry.metadata_path("v2").read_text())
    metadata[field] = value
    registry.metadata_path("v2").write_text(json.dumps(metadata))
    with pytest.raises(IncompatibleVersion, match=message):
        registry.promote("v2")
    assert registry.resolve("production") == "v1"


def test_a_version_whose_interval_calibration_would_cross_is_refused(registry: Registry) -> None:
    clone_version(registry, "v1", "v2")
    metadata = json.loads(registry.metadata_path("v2").read_text())
    row = metadata["intervals"]["cells"]["day/series/1"]["quantiles"][0][0]
    row[0] = row[1] + 1  # the 50% half-width above the 51%'s: those bands would cross
    registry.metadata_path("v2").write_text(json.dumps(metadata))
    with pytest.raises(CorruptVersion, match=r"interval calibration cannot be used: day/series/1: .* shrink"):
        registry.promote("v2")
    assert registry.resolve("production") == "v1"


def test_missing_and_unreadable_versions(registry: Registry) -> None:
    with pytest.raises(VersionNotFound):
        registry.resolve("v99")
    with pytest.raises(VersionNotFound):
        registry.resolve("canary")
    with pytest.raises(VersionNotFound):
        registry.resolve("../v1")
    clone_version(registry, "v1", "v2")
    registry.metadata_path("v2").write_text("{not json")
    with pytest.raises(CorruptVersion, match="unreadable"):
        registry.metadata("v2")


def run_cli(registry: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "forecast", "--registry", str(registry.root), "registry", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_cli_lists_shows_verifies_and_promotes(registry: Registry, small_model: TrainResult) -> None:
    registry.register(small_model.model_text, small_model.metadata)
    listing = run_cli(registry, "list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ["v1", "v2"]
    assert "production" in listing.stdout.splitlines()[1]
    shown = run_cli(registry, "show", "production")
    assert json.loads(shown.stdout)["version"] == "v1"
    verified = run_cli(registry, "verify", "v2")
    assert verified.returncode == 0
    assert "v2: ok" in verified.stdout
    promoted = run_cli(registry, "promote", "v2")
    assert promoted.returncode == 0
    assert registry.resolve("production") == "v2"


def test_cli_refuses_a_corrupt_version_with_a_clear_message(registry: Registry) -> None:
    clone_version(registry, "v1", "v2")
    registry.model_path("v2").write_text("garbage")
    result = run_cli(registry, "promote", "v2")
    assert result.returncode == 1
    assert "error: version v2: model.txt does not match its checksum" in result.stderr
    assert "Traceback" not in result.stderr
    assert registry.resolve("production") == "v1"


@pytest.mark.parametrize(
    ("name", "valid"),
    [("default", True), ("s01-f02", True), ("a_b", True), ("x" * 40, True), ("x" * 41, False), ("", False),
     ("Alpha", False), ("-a", False), ("alpha\n", False), ("al\rpha", False), ("a/b", False), ("ä", False)],
)  # fmt: skip
def test_a_model_name_is_lower_case_letters_digits_dash_underscore_and_nothing_else(name: str, valid: bool) -> None:
    assert is_model_name(name) is valid
