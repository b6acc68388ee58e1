"""What a web worker knows of the mule pool: each mule's heartbeat, and the queue's depth.

Reads uWSGI's state cache and queue pointers (the ``uwsgi`` module is passed in, so a
unit test can pass a fake).  Whether a mule is fresh or serving is decided by
:class:`serving.messages.Heartbeat` alone; :class:`PoolView` applies that rule to the
whole pool for ``/status``, ``/``, the metrics and the admission of requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from serving.messages import (
    MLFLOW_KEY,
    ROUTES_KEY,
    STATE_CACHE,
    Heartbeat,
    MessageError,
    Routes,
    SyncState,
    heartbeat_key,
)
from serving.settings import Settings

logger = logging.getLogger(__name__)

Message = TypeVar("Message")


@dataclass(frozen=True)
class PoolView:
    """Every configured mule's last heartbeat (None: none yet), judged at ``now``."""

    beats: dict[int, Heartbeat | None]
    now: float
    stale_after_s: float

    # Judged once per view: the request path asks a cached view (app/service.py) on every request.
    @cached_property
    def serving(self) -> list[Heartbeat]:
        """The mules that will score jobs pushed now."""
        return [b for b in self.beats.values() if b is not None and b.serving(self.now, self.stale_after_s)]

    @property
    def all_serving(self) -> bool:
        """Ready for traffic: every mule serves (what ``/status`` and the readiness probe report)."""
        return len(self.serving) == len(self.beats)

    @property
    def any_serving(self) -> bool:
        """Some mule serves: a request may be admitted (its jobs wait in the queue for it)."""
        return bool(self.serving)

    @cached_property
    def versions(self) -> list[str]:
        """The model versions the serving mules hold, sorted (two during a rolling reload)."""
        return sorted({str(b.model_version) for b in self.serving})

    @cached_property
    def served_version(self) -> str | None:
        """The one version every serving mule holds; None when there are two, or none."""
        versions = self.versions
        return versions[0] if len(versions) == 1 else None

    def mule_states(self) -> list[dict[str, Any]]:
        """Each mule as ``/status`` shows it: its heartbeat, its age, and ``stale``/``unknown`` when not fresh."""
        return [self._state(mule_id, beat) for mule_id, beat in self.beats.items()]

    def holders(self, model: str) -> dict[str, list[int]]:
        """Version -> the serving mules that hold it, for one model (``GET /models``)."""
        found: dict[str, list[int]] = {}
        for beat in self.serving:
            for held_model, version in beat.held:
                if held_model == model:
                    found.setdefault(version, []).append(beat.mule_id)
        return found

    def _state(self, mule_id: int, beat: Heartbeat | None) -> dict[str, Any]:
        if beat is None:
            return {"id": mule_id, "state": "unknown", "heartbeat_age_s": None}
        fresh = beat.fresh(self.now, self.stale_after_s)
        return {
            "id": mule_id, "pid": beat.pid, "state": beat.state.value if fresh else "stale",
            "model_version": beat.model_version, "heartbeat": beat.sent_at, "started": beat.started_at,
            "jobs_done": beat.jobs_done, "error": beat.error, "heartbeat_age_s": round(beat.age_s(self.now), 3),
        }  # fmt: skip


class MulePool:
    """Reads the mules' heartbeats and the queue depth from uWSGI; thread-safe (uWSGI locks the cache)."""

    def __init__(self, settings: Settings, uwsgi: Any) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.mule_ids = list(range(1, settings.mules + 1))

    def heartbeats(self) -> dict[int, Heartbeat | None]:
        return {m: self._heartbeat(m) for m in self.mule_ids}

    def view(self) -> PoolView:
        return PoolView({m: self._heartbeat(m) for m in self.mule_ids}, time.time(), self.settings.mule_stale_after_s)

    def _heartbeat(self, mule_id: int) -> Heartbeat | None:
        data = self.uwsgi.cache_get(heartbeat_key(mule_id), STATE_CACHE)
        if data is None:
            return None
        try:
            return Heartbeat.decode(data)
        except MessageError as exc:  # a mule of another build: treat it as silent, and say so
            logger.warning("mule %d: unreadable heartbeat (%s)", mule_id, exc)
            return None

    def routes(self) -> Routes | None:
        """The routes the pod's last rollout published (None before the first)."""
        return self._read(ROUTES_KEY, Routes.decode, "routes")

    def publish(self, routes: Routes) -> None:
        """Make ``routes`` what every worker of the pod routes by (app/rollout.py, after a rollout)."""
        if not self.uwsgi.cache_update(ROUTES_KEY, routes.encode(), 0, STATE_CACHE):
            logger.error("the state cache refused the routes (%d models): too many for one block?", len(routes.models))

    def sync_state(self) -> SyncState | None:
        """How the pod's following of MLflow goes (None: it does not follow MLflow, or has not tried yet)."""
        return self._read(MLFLOW_KEY, SyncState.decode, "MLflow sync state")

    def _read(self, key: str, decode: Callable[[bytes], Message], what: str) -> Message | None:
        """A message of the state cache (None: not published yet, or unreadable: a build that differs, logged)."""
        data = self.uwsgi.cache_get(key, STATE_CACHE)
        if data is None:
            return None
        try:
            return decode(data)
        except MessageError as exc:
            logger.warning("unreadable %s (%s)", what, exc)
            return None

    def publish_sync(self, state: SyncState) -> None:
        """Make ``state`` what every worker of the pod reports (app/mlflow_follow.py, after each pass)."""
        if not self.uwsgi.cache_update(MLFLOW_KEY, state.encode(), 0, STATE_CACHE):
            logger.error("the state cache refused the MLflow sync state (%d refusals)", len(state.refused))

    def queue_depth(self) -> int:
        """Jobs pushed and not yet pulled (read without a lock: a gauge, not an invariant)."""
        return int((self.uwsgi.queue_slot() - self.uwsgi.queue_pull_slot()) % self.settings.queue_slots)
