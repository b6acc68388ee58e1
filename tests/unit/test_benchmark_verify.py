"""The Ray target's verification script: its reload check always has a version to switch to."""

from __future__ import annotations

from forecast.registry import Registry
from forecast.train import TrainResult


def test_with_one_version_the_reload_check_registers_production_again_and_says_so(registry: Registry) -> None:
    from benchmarks.ray_serve.verify import version_to_reload_to

    other, source = version_to_reload_to(registry, "v1")
    assert other == "v2"
    assert registry.versions() == ["v1", "v2"]
    assert registry.model_path("v2").read_text() == registry.model_path("v1").read_text()
    assert "registered now" in source


def test_with_another_version_the_reload_check_uses_it_and_registers_nothing(
    registry: Registry, small_model: TrainResult
) -> None:
    from benchmarks.ray_serve.verify import version_to_reload_to

    registry.register(small_model.model_text, small_model.metadata)
    assert version_to_reload_to(registry, "v1") == ("v2", "another version of the registry")
    assert registry.versions() == ["v1", "v2"]
