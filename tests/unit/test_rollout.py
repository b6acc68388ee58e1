"""The rolling reload's policy: one mule at a time, and a refusal undoes the mules already switched."""

from __future__ import annotations

import pytest

from app.errors import ReloadRefused
from app.rollout import roll_out
from serving.messages import Heartbeat, MuleState, Result


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
