"""Rolling a pod onto what the registry's aliases say: verify, load through the mules one at a time, publish.

Each pod follows the shared registry itself.  :meth:`Rollout.apply` reads every model's
aliases and, for what changed since the routes the pod last published:

* verifies each new version in a child process (a model that crashes LightGBM crashes it);
* for a new ``production``, has the mules that hold the model load it, **one at a time**,
  the others serving meanwhile (:func:`roll_out`; for the default model every mule, which
  serves it pinned); if one refuses, or dies, the ones already switched go back;
* then publishes the routes (:class:`serving.messages.Routes`) every worker routes by.

A version that fails is refused on this pod and not tried again (``Routes.refused``, which
``/status`` shows) until the alias names another.  A poller thread in one web worker
calls :meth:`Rollout.apply` every ``FORECAST_REGISTRY_POLL_S``; ``/reload`` calls it at once.
A file lock serialises them within the pod, and lease files in the shared registry
(``.rollouts/``) let at most ``FORECAST_ROLLOUT_MAX_PODS`` pods load at the same time, so a
fleet that sees a promote together does not lose more capacity together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.errors import ApiError, DeadlineExceeded, Reason, ReloadRefused, Unavailable
from forecast.errors import ForecastError
from forecast.registry import DEFAULT_MODEL, Alias, Registry
from serving.messages import Heartbeat, ModelRoute, Result, Routes
from serving.settings import Settings

logger = logging.getLogger(__name__)

LEASE_WAIT_S = 0.5  # how often a pod waiting for a rollout lease looks again


class Loader(Protocol):
    """What a rollout needs of the mules: their ids, and a way to have one load a version."""

    mule_ids: list[int]

    def load(self, mule_id: int, version: str, pid: int | None, model: str = DEFAULT_MODEL) -> Result: ...


class PoolState(Protocol):
    """What a rollout needs of the pool (:class:`app.pool.MulePool`)."""

    def heartbeats(self) -> dict[int, Heartbeat | None]: ...

    def routes(self) -> Routes | None: ...

    def publish(self, routes: Routes) -> None: ...


def roll_out(
    mules: Loader, version: str, before: dict[int, Heartbeat | None], model: str = DEFAULT_MODEL,
    mule_ids: list[int] | None = None,
) -> None:  # fmt: skip
    """Have each mule in turn (``mule_ids``, default all) load ``model``'s ``version``; the others serve meanwhile.

    ``before`` is each mule's heartbeat before the rollout (its pid and version; None: it
    never reported).  If a mule refuses (or dies loading), the mules already switched go back
    to their previous version, and :class:`ReloadRefused` names the mule and its reason; so
    they do when a load raises (:class:`Unavailable`, :class:`DeadlineExceeded`), re-raised.
    """
    switched: list[int] = []
    for mule_id in mules.mule_ids if mule_ids is None else mule_ids:
        try:
            result = mules.load(mule_id, version, _pid(before, mule_id), model)
        except ApiError:
            _roll_back(mules, switched, before, model)
            raise
        if not result.ok:
            _roll_back(mules, switched, before, model)
            raise ReloadRefused(f"mule {mule_id} refused version {version}: {result.error}")
        switched.append(mule_id)


def _pid(before: dict[int, Heartbeat | None], mule_id: int) -> int | None:
    beat = before.get(mule_id)
    return beat.pid if beat is not None else None


def _roll_back(mules: Loader, switched: list[int], before: dict[int, Heartbeat | None], model: str) -> None:
    for mule_id in switched:
        beat = before.get(mule_id)
        version = _held_version(beat, model)
        if version is None:
            continue  # it held nothing before: the new version is better than none
        try:
            result = mules.load(mule_id, version, beat.pid if beat is not None else None, model)
        except ApiError as exc:
            logger.error("mule %d: rollback of %s to %s failed: %s", mule_id, model, version, exc.message)
            continue
        if not result.ok:
            logger.error("mule %d: rollback of %s to %s refused: %s", mule_id, model, version, result.error)


def _held_version(beat: Heartbeat | None, model: str) -> str | None:
    """The version of ``model`` a mule served before: the default model's pinned one, another's held one."""
    if beat is None:
        return None
    if model == DEFAULT_MODEL:
        return beat.model_version
    return next((version for held_model, version in beat.held if held_model == model), None)


@dataclass
class Rollout:
    """This pod's follower of the registry (one per web worker process; see the module docstring)."""

    settings: Settings
    registry: Registry
    mules: Loader
    pool: PoolState
    before_pass: Callable[[], object] | None = None  # the poller's first step each pass (app/mlflow_follow.py)

    def __post_init__(self) -> None:
        self._verified: set[str] = set()  # "model/version" verified by this process
        self._refusals: dict[str, ForecastError] = {}  # "model/version" refused by a pass's check, not yet acted on

    def apply(self) -> Routes:
        """Bring the pod to the registry's aliases; return the routes published (see the module docstring)."""
        with self._pod_lock():
            current = self.pool.routes() or Routes({})
            refused = dict(current.refused or {})
            models: dict[str, ModelRoute] = {}
            tables = {model: self.registry.named(model).alias_table() for model in self.registry.models()}
            self._check_new(tables, refused)
            for model, table in tables.items():
                route = self._route(model, table, current.models.get(model), refused)
                if route is not None:
                    models[model] = route
            routes = Routes(models, current.generation + 1, _still_named(refused, self.registry))
            if routes.models != current.models or routes.refused != current.refused or current.generation == 0:
                self.pool.publish(routes)
                logger.info("routes published (generation %d): %s", routes.generation, _summary(routes))
            return routes

    def follow_forever(self) -> None:
        """The poller: ``before_pass`` and :meth:`apply` at once, then every ``FORECAST_REGISTRY_POLL_S`` (a failure is
        logged)."""
        interval = self.settings.registry_poll_s
        while True:
            try:
                if self.before_pass is not None:
                    self.before_pass()
                self.apply()
            except Unavailable as exc:  # passing: a busy mule, other pods rolling out
                logger.warning("following the registry: %s; trying again in %d s", exc.message, interval)
            except Exception:  # the poller must outlive any one pass (a registry on a flaky volume)
                logger.exception("following the registry failed; trying again in %d s", interval)
            time.sleep(interval)

    def start(self) -> None:
        threading.Thread(target=self.follow_forever, name="registry-follower", daemon=True).start()

    def _check_new(self, tables: dict[str, dict[str, Alias]], refused: dict[str, str]) -> None:
        """Every version an alias names that this process has not verified nor the pod refused, checked in one
        child process (:meth:`Registry.check_many`): a child per version cost a pod following 100 models
        minutes before its first routes.  :meth:`_verify` then knows each outcome."""
        wanted = [(model, alias.version) for model, table in tables.items() for alias in table.values()
                  if f"{model}/{alias.version}" not in self._verified | refused.keys()]  # fmt: skip
        if not wanted:
            return
        for (model, version), refusal in self.registry.check_many(wanted, self.settings.reload_timeout_s).items():
            if refusal is None:
                self._verified.add(f"{model}/{version}")
            else:
                self._refusals[f"{model}/{version}"] = refusal

    def _route(
        self, model: str, table: dict[str, Alias], old: ModelRoute | None, refused: dict[str, str]
    ) -> ModelRoute | None:
        production = self._production(model, table.get("production"), old, refused)
        if production is None:
            return None
        canary = self._checked(model, table.get("canary"), refused)
        shadow = self._checked(model, table.get("shadow"), refused)
        return ModelRoute(
            production,
            canary.version if canary else None,
            (canary.weight or 0) if canary else 0,
            shadow.version if shadow else None,
            (shadow.weight or 0) if shadow else 0,
        )

    def _production(
        self, model: str, alias: Alias | None, old: ModelRoute | None, refused: dict[str, str]
    ) -> str | None:
        """The production this pod serves: the alias's, once verified and rolled out; else the old one."""
        kept = old.production if old is not None else self._started_with(model)
        if alias is None or alias.version == kept or f"{model}/{alias.version}" in refused:
            return kept
        try:
            self._verify(model, alias.version)
            if kept is not None:  # else no mule holds the model yet: they load it on first use
                with self._fleet_lease():
                    self._roll(model, alias.version, kept)
        except (ForecastError, ReloadRefused, DeadlineExceeded) as exc:  # it does not load: not tried again
            refused[f"{model}/{alias.version}"] = _reason(model, exc)
            logger.error("rollout of %s %s refused: %s", model, alias.version, exc.message)
            return kept
        logger.info("rollout of %s %s done", model, alias.version)
        return alias.version

    def _started_with(self, model: str) -> str | None:
        """Before the pod's first routes: the version its mules loaded as they started (the default model's
        production then, which the alias may have left since), or None (another model, or no heartbeat yet).
        """
        if model != DEFAULT_MODEL:
            return None
        versions = {beat.model_version for beat in self.pool.heartbeats().values() if beat is not None}
        return versions.pop() if len(versions) == 1 else None

    def _checked(self, model: str, alias: Alias | None, refused: dict[str, str]) -> Alias | None:
        """A canary or shadow alias whose version verifies (it is loaded on first use), else None."""
        if alias is None or f"{model}/{alias.version}" in refused:
            return None
        try:
            self._verify(model, alias.version)
        except ForecastError as exc:
            refused[f"{model}/{alias.version}"] = _reason(model, exc)
            return None
        return alias

    def _verify(self, model: str, version: str) -> None:
        """Raise what the pass's check found wrong with ``version``; check it now if the pass did not."""
        key = f"{model}/{version}"
        refusal = self._refusals.pop(key, None)
        if refusal is not None:
            raise refusal
        if key not in self._verified:
            self.registry.named(model).check(version, timeout_s=self.settings.reload_timeout_s)
            self._verified.add(key)

    def _roll(self, model: str, version: str, old: str | None) -> None:
        """Load ``version`` into the mules that serve ``model`` now (for the default model, every mule)."""
        beats = self.pool.heartbeats()
        if model == DEFAULT_MODEL:
            mule_ids = list(beats)
        else:
            mule_ids = [m for m, beat in beats.items() if beat is not None and (model, old) in beat.held]
        logger.info("rollout of %s %s through mules %s", model, version, mule_ids)
        before = self.pool.routes() or Routes({})
        self.pool.publish(dataclasses.replace(before, rolling=f"{model} {version} through mules {mule_ids}"))
        try:
            roll_out(self.mules, version, beats, model, mule_ids)
        finally:  # /status shows the rollout until it ends (apply then publishes the new routes)
            self.pool.publish(before)

    @contextlib.contextmanager
    def _pod_lock(self) -> Iterator[None]:
        """One rollout at a time in this pod (the poller and /reload run in different workers)."""
        self.settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        with (self.settings.metrics_dir / ".rollout.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _fleet_lease(self) -> Iterator[None]:
        """A rollout slot shared by the fleet: at most ``FORECAST_ROLLOUT_MAX_PODS`` pods load at once.

        Raises :class:`Unavailable` when no slot comes free within ``FORECAST_RELOAD_TIMEOUT_S``.
        A lease directory that cannot be written (a read-only registry) does not stop the
        rollout: it goes ahead unstaggered, with a warning, as serving the promote matters more.
        """
        leases = self.settings.lease_dir
        try:
            leases.mkdir(parents=True, exist_ok=True)
            slot = self._wait_for_slot(leases)
        except OSError as exc:
            logger.warning("rolling out unstaggered: no lease in %s (%s); see FORECAST_ROLLOUT_LEASE_DIR", leases, exc)
            yield
            return
        try:
            yield
        finally:
            slot.unlink(missing_ok=True)

    def _wait_for_slot(self, leases: Path) -> Path:
        """A slot once one comes free; raises :class:`Unavailable` after ``FORECAST_RELOAD_TIMEOUT_S``."""
        deadline = time.monotonic() + self.settings.reload_timeout_s
        while (slot := _take_slot(leases, self.settings)) is None:
            if time.monotonic() >= deadline:  # passing: the next pass tries again
                raise Unavailable("no rollout slot came free: other pods are rolling out", Reason.UNAVAILABLE)
            time.sleep(LEASE_WAIT_S)  # a lease held by another pod: its rollout takes seconds
        return slot


def _take_slot(leases: Path, settings: Settings) -> Path | None:
    """Create one of the lease files (atomic: O_EXCL), or take over one whose holder let it expire."""
    mine = f"{socket.gethostname()}:{os.getpid()} {time.time() + settings.reload_timeout_s * 2:.0f}\n"
    for number in range(settings.rollout_max_pods):
        slot = leases / f"slot-{number}"
        try:
            fd = os.open(slot, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _expired(slot):
                slot.unlink(missing_ok=True)  # its pod died mid-rollout; the next look takes it
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(mine)
        return slot
    return None


def _expired(slot: Path) -> bool:
    try:
        return float(slot.read_text().split()[1]) < time.time()
    except (OSError, IndexError, ValueError):
        return False


def _reason(model: str, exc: ForecastError | ApiError) -> str:
    prefix = "production cannot be loaded: " if model == DEFAULT_MODEL else f"model {model!r}: "
    return exc.message if isinstance(exc, ReloadRefused) else prefix + exc.message


def _still_named(refused: dict[str, str], registry: Registry) -> dict[str, str]:
    """The refusals of versions an alias still names (the others are history)."""
    named = {f"{m}/{v}" for m in registry.models() for v in registry.named(m).aliases().values()}
    return {key: reason for key, reason in refused.items() if key in named}


def _summary(routes: Routes) -> str:
    """``model production [canary c w%] [shadow s w%]`` per model, and the refused versions: one log line."""
    parts = []
    for model, route in sorted(routes.models.items()):
        text = f"{model} {route.production}"
        if route.canary:
            text += f" canary {route.canary} {route.canary_weight}%"
        if route.shadow:
            text += f" shadow {route.shadow} {route.shadow_weight}%"
        parts.append(text)
    refused = f"; refused {', '.join(sorted(routes.refused))}" if routes.refused else ""
    return (", ".join(parts) or "no model") + refused
