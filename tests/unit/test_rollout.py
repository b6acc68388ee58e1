"""The rolling reload's policy: one mule at a time, and a refusal undoes the mules already switched."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from app.errors import Reason, ReloadRefused, Unavailable
from app.rollout import Rollout, roll_out
from forecast.registry import Registry
from serving.messages import Heartbeat, ModelRoute, MuleState, Result, Routes
from serving.settings import Settings


class StandInMules:
    """Mules that load what they are told, except that ``refusing`` ones refuse ``bad``."""

    def __init__(self, held: dict[int, str | None], refusing: set[int], bad: str = "v2") -> None:
        self.mule_ids = sorted(held)
        self.held = dict(held)
        self.refusing, self.bad = refusing, bad
        self.calls: list[tuple[int, str]] = []

    def load(self, mule_id: int, version: str, pid: int | None, model: str = "default") -> Result:
        assert pid == 100 + mule_id  # the pid of its heartbeat: a mule that dies loading is noticed
        self.calls.append((mule_id, version))
        if mule_id in self.refusing and version == self.bad:
            return Result(b"i" * 16, mule_id, 1, version, error=f"version {version}: model.txt does not match")
        self.held[mule_id] = version
        return Result(b"i" * 16, mule_id, 1, version)


def beats(held: dict[int, str | None]) -> dict[int, Heartbeat | None]:
    return {m: Heartbeat(m, 100 + m, MuleState.READY, v, 0.0, 0.0, 0) for m, v in held.items()}


def test_every_mule_in_turn() -> None:
    mules = StandInMules({1: "v1", 2: "v1", 3: "v1"}, refusing=set())
    roll_out(mules, "v2", beats(mules.held))
    assert mules.calls == [(1, "v2"), (2, "v2"), (3, "v2")]
    assert set(mules.held.values()) == {"v2"}


def test_a_refusal_rolls_back_the_mules_already_switched() -> None:
    before = {1: "v1", 2: "v1", 3: "v1"}
    mules = StandInMules(before, refusing={3})
    with pytest.raises(ReloadRefused, match=r"mule 3 refused version v2: version v2: model.txt does not match"):
        roll_out(mules, "v2", beats(before))
    assert mules.held == before
    assert mules.calls == [(1, "v2"), (2, "v2"), (3, "v2"), (1, "v1"), (2, "v1")]


def test_a_mule_that_held_nothing_keeps_the_new_version_on_rollback() -> None:
    mules = StandInMules({1: None, 2: "v1"}, refusing={2})
    with pytest.raises(ReloadRefused):
        roll_out(mules, "v2", beats({1: None, 2: "v1"}))
    assert mules.held == {1: "v2", 2: "v1"}  # better a model than none


class FailingMules(StandInMules):
    """Mules where ``unreachable`` cannot take messages (its socket full, uWSGI going down)."""

    def __init__(self, held: dict[int, str | None], unreachable: int) -> None:
        super().__init__(held, refusing=set())
        self.unreachable = unreachable

    def load(self, mule_id: int, version: str, pid: int | None, model: str = "default") -> Result:
        if mule_id == self.unreachable:
            raise Unavailable(f"mule {mule_id} cannot take messages", Reason.UNAVAILABLE)
        return super().load(mule_id, version, pid, model)


def test_a_load_that_raises_rolls_back_the_mules_already_switched_and_raises() -> None:
    before = {1: "v1", 2: "v1", 3: "v1"}
    mules = FailingMules(before, unreachable=3)
    with pytest.raises(Unavailable, match="mule 3 cannot take messages"):
        roll_out(mules, "v2", beats(before))
    assert mules.held == before


# -- the pod's follower of the registry, on a real registry ----------------------------------


class StandInPool:
    """The pod's routes and heartbeats as the state cache would hold them."""

    def __init__(self, mules: StandInMules, routes: Routes | None) -> None:
        self.mules = mules
        self.published: Routes | None = routes
        self.history: list[Routes] = []

    def heartbeats(self) -> dict[int, Heartbeat | None]:
        return dict(beats(self.mules.held))

    def routes(self) -> Routes | None:
        return self.published

    def publish(self, routes: Routes) -> None:
        self.published = routes
        self.history.append(routes)


@pytest.fixture
def promoted(registry: Registry) -> Registry:
    """``registry`` with v2 (the same model) made production behind the pod's back."""
    text = registry.model_path("v1").read_text()
    version = registry.register(text, registry.metadata("v1"))
    registry.set_alias("production", version)
    return registry


def follower(
    registry: Registry, tmp_path: Path, lease_dir: Path, reload_timeout_s: int = 60
) -> tuple[Rollout, StandInMules, StandInPool]:
    """A pod's follower; the verifying child gets a deadline a busy CI machine meets (it imports LightGBM)."""
    settings = Settings(
        registry_dir=registry.root,
        rollout_lease_dir=lease_dir,
        reload_timeout_s=reload_timeout_s,
        metrics_dir=tmp_path / "metrics",
    )
    mules = StandInMules({1: "v1", 2: "v1"}, refusing=set())
    pool = StandInPool(mules, Routes({"default": ModelRoute("v1")}, generation=1))
    return Rollout(settings, registry, mules, pool), mules, pool


def test_a_promote_is_rolled_through_the_mules_and_published(promoted: Registry, tmp_path: Path) -> None:
    rollout, mules, pool = follower(promoted, tmp_path, tmp_path / "leases")
    routes = rollout.apply()
    assert routes.models["default"].production == "v2"
    assert routes.generation == 2
    assert pool.published == routes
    assert mules.calls == [(1, "v2"), (2, "v2")]
    assert list((tmp_path / "leases").iterdir()) == []  # the lease is given back
    # while the mules loaded, /status could see it: the old routes, with the rollout in progress
    assert [r.rolling for r in pool.history] == ["default v2 through mules [1, 2]", None, None]
    assert pool.history[0].models["default"].production == "v1"


@pytest.mark.parametrize("started_with", ["v1", "v2"])
def test_a_pod_without_routes_rolls_a_production_its_mules_did_not_start_with(
    promoted: Registry, tmp_path: Path, started_with: str
) -> None:
    """With the poller off, the first routes come from the first /reload, perhaps long after the start."""
    rollout, mules, pool = follower(promoted, tmp_path, tmp_path / "leases")
    mules.held = {1: started_with, 2: started_with}
    pool.published = None  # no routes yet: nothing followed the registry
    routes = rollout.apply()
    assert routes.models["default"].production == "v2"
    assert mules.held == {1: "v2", 2: "v2"}
    assert mules.calls == ([(1, "v2"), (2, "v2")] if started_with == "v1" else [])


def test_a_lease_directory_that_cannot_be_written_rolls_out_unstaggered(
    promoted: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")  # as a read-only registry: mkdir fails
    rollout, mules, _ = follower(promoted, tmp_path, tmp_path / "a-file" / "leases")
    assert rollout.apply().models["default"].production == "v2"
    assert set(mules.held.values()) == {"v2"}
    assert "rolling out unstaggered" in caplog.text


def test_while_another_pod_holds_the_lease_the_version_waits_and_is_not_refused(
    promoted: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 1 s deadline here is the lease wait's; the verifying child (tested on its own) would not meet it
    # on a busy machine, so this test passes verification without it.
    monkeypatch.setattr(Registry, "check", lambda self, ref, timeout_s=120: self.resolve(ref))
    monkeypatch.setattr(Registry, "check_many", lambda self, wanted, timeout_s=120: dict.fromkeys(wanted))
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "slot-0").write_text(f"other-pod:1 {time.time() + 600:.0f}\n")
    rollout, mules, pool = follower(promoted, tmp_path, leases, reload_timeout_s=1)
    with pytest.raises(Unavailable, match="no rollout slot came free"):
        rollout.apply()
    assert pool.published == Routes({"default": ModelRoute("v1")}, generation=1)  # unchanged, nothing refused
    assert mules.calls == []
    (leases / "slot-0").unlink()  # the other pod is done: the next pass rolls out
    assert rollout.apply().models["default"].production == "v2"


def test_a_lease_its_pod_let_expire_is_taken_over(promoted: Registry, tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "slot-0").write_text(f"dead-pod:1 {time.time() - 1:.0f}\n")
    rollout, _, _ = follower(promoted, tmp_path, leases)
    assert rollout.apply().models["default"].production == "v2"  # removed, then taken at the next look


def test_a_pass_checks_every_new_version_of_every_model_in_one_child(
    promoted: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("north", "south"):
        named = promoted.named(name)
        named.set_alias("production", named.register(promoted.model_path("v1").read_text(), promoted.metadata("v1")))
    promoted.set_alias("canary", "v1", weight=10)
    asked: list[list[tuple[str, str]]] = []
    check_many = Registry.check_many

    def noted(self: Registry, wanted: list[tuple[str, str]], timeout_s: float = 120) -> dict[Any, Any]:
        asked.append(list(wanted))
        return check_many(self, wanted, timeout_s)

    monkeypatch.setattr(Registry, "check_many", noted)
    monkeypatch.setattr(Registry, "check", lambda *_: pytest.fail("a version checked in a child of its own"))
    rollout, _, _ = follower(promoted, tmp_path, tmp_path / "leases")
    routes = rollout.apply()
    assert sorted(map(tuple, asked[0])) == [("default", "v1"), ("default", "v2"), ("north", "v1"), ("south", "v1")]
    assert len(asked) == 1
    assert (routes.models["default"].production, routes.models["north"].production) == ("v2", "v1")
    rollout.apply()
    assert len(asked) == 1  # verified once per process


def test_each_publish_logs_what_the_pod_now_serves(
    promoted: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    promoted.set_alias("canary", "v1", weight=10)
    rollout, _, _ = follower(promoted, tmp_path, tmp_path / "leases")
    with caplog.at_level("INFO", logger="app.rollout"):
        rollout.apply()
        rollout.apply()  # nothing changed: nothing published, nothing logged
    published = [r.getMessage() for r in caplog.records if r.getMessage().startswith("routes published")]
    assert published == ["routes published (generation 2): default v2 canary v1 10%"]
