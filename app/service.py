"""What the endpoints do, apart from HTTP: readiness, the served model's domain, prediction, status, reload.

One :class:`ForecastService` lives in each web worker process (on
``app.extensions["forecast"]``).  It reads registry metadata (plain JSON, never
LightGBM) to know the served model's stores, items and dates, judges the mule
pool by its heartbeats (:class:`app.pool.PoolView`), submits through the mule
client and rolls reloads through the mules (:mod:`app.rollout`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from app.domain import Columns, Domain, check_domain
from app.errors import NotReady, Reason, ReloadRefused, Unavailable
from app.legacy import Guardrails
from app.mule_client import Prediction
from app.pool import PoolView
from app.rollout import Loader, roll_out
from app.schemas import PredictRow, Shape
from forecast.errors import ForecastError
from forecast.legacy import import_legacy
from forecast.registry import Registry, check_compatible
from serving.settings import Settings

logger = logging.getLogger(__name__)

POOL_VIEW_TTL_S = 0.25  # how long a worker trusts a look at the mules that found one serving


class Mules(Loader, Protocol):
    """The mule client as the service uses it (:class:`app.mule_client.MuleClient`)."""

    def predict(self, columns: Columns, deadline: float) -> Prediction: ...


class Pool(Protocol):
    """The mules' heartbeats (:class:`app.pool.MulePool`)."""

    def view(self) -> PoolView: ...


@dataclass(frozen=True)
class ServedModel:
    """What the web worker knows of a served version, from its registry metadata."""

    version: str
    domain: Domain
    guardrails: Guardrails


class ForecastService:
    """Per-process service object; thread-safe."""

    def __init__(self, settings: Settings, mules: Mules, pool: Pool, registry: Registry) -> None:
        self.settings = settings
        self.mules = mules
        self.pool = pool
        self.registry = registry
        self._lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._view: PoolView | None = None
        self._view_until = 0.0

    # -- predict -----------------------------------------------------------

    def predict(self, rows: list[PredictRow], shape: Shape, deadline: float) -> Prediction:
        """Check the rows against the served model and score them before ``deadline``.

        Raises :class:`app.errors.InvalidInput` (a value the model does not know),
        :class:`Unavailable` (no mule serves, at capacity, a mule failed) or
        :class:`app.errors.DeadlineExceeded`.
        """
        view = self._admission_view()
        columns = check_domain(rows, self.served_model(view).domain, shape)
        if not view.any_serving:
            raise Unavailable("no mule has a model loaded yet", Reason.NOT_READY)
        return self.mules.predict(columns, deadline)

    def served_model(self, view: PoolView | None = None) -> ServedModel:
        """The version the mules serve (production while they hold several, or none): its domain, guardrails.

        Raises :class:`Unavailable` when its metadata cannot be read.
        """
        return self.model((view or self._admission_view()).served_version or self._production())

    def model(self, version: str) -> ServedModel:
        """What the registry says of ``version`` (cached); raises :class:`Unavailable` when it cannot be read."""
        with self._lock:
            if version not in self._models:
                try:
                    metadata = self.registry.metadata(version)
                except ForecastError as exc:
                    raise Unavailable(f"the served model cannot be read: {exc.message}", Reason.NOT_READY) from exc
                domain = Domain.from_metadata(metadata, self.settings.max_horizon_days)
                self._models[version] = ServedModel(version, domain, Guardrails.of(metadata, domain))
            return self._models[version]

    def _admission_view(self) -> PoolView:
        """The pool as the request path sees it.

        A view in which some mule serves is trusted for ``POOL_VIEW_TTL_S`` (keeps the
        heartbeat reads off the per-request path); one in which none does never is: a stale
        "no model" would turn a whole window of requests into 503s.
        """
        now = time.monotonic()
        view = self._view
        if view is None or now >= self._view_until:
            view = self._view = self.pool.view()
            self._view_until = now + POOL_VIEW_TTL_S if view.any_serving else now
        return view

    def _production(self) -> str:
        try:
            return self.registry.resolve("production")
        except ForecastError as exc:
            raise Unavailable(f"no model to serve: {exc.message}", Reason.NOT_READY) from exc

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``/status``'s body when every mule serves; raises :class:`NotReady` (with the same body) if not."""
        view = self.pool.view()
        versions = view.versions
        body = {
            "ready": view.all_serving,
            "model_version": versions[0] if len(versions) == 1 else versions,
            "mules": view.mule_states(),
        }
        if not view.all_serving:
            raise NotReady("not every mule has a model loaded", body)
        return body

    def served_version(self) -> str | None:
        return self.pool.view().served_version

    # -- reload ------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Roll the registry's production version through the mules, one at a time.

        With ``FORECAST_LEGACY_REGISTRY_URL`` set, the model that file names is imported first
        when it changed (by checksum) and becomes production.  Production is verified in a
        child process before any mule loads it (a model that crashes LightGBM crashes that
        child).  Raises :class:`ReloadRefused` naming why (a download, a model that does not
        verify, a mule that refused or died); the mules keep what they served.
        """
        try:
            version = self._release()
        except ForecastError as exc:
            raise ReloadRefused(f"production cannot be loaded: {exc.message}") from exc
        logger.info("reload: rolling %s through %d mules", version, len(self.mules.mule_ids))
        roll_out(self.mules, version, self.pool.view().beats)
        return {"model_version": version, "mules": self.pool.view().mule_states()}

    def _release(self) -> str:
        """The version to roll out, imported and verified; raises :class:`ForecastError`."""
        source = self.settings.legacy_registry_url
        if source:
            version, registered = import_legacy(self.registry, source, promote=True)
            logger.info("reload: %s from %s is %s", "imported" if registered else "unchanged", source, version)
            return version
        version = self.registry.resolve("production")
        check_compatible(self.registry.metadata(version))
        return self.registry.check(version, timeout_s=self.settings.reload_timeout_s)
