"""What the endpoints do, apart from HTTP: validation against the model, prediction, status, reload.

One :class:`ForecastService` lives in each web worker process (on
``app.extensions["forecast"]``).  It reads registry metadata (plain JSON,
never LightGBM) to know the served model's stores, items and dates.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from app.errors import ReloadRefused, Unavailable
from app.mule_client import MuleClient, Prediction
from app.schemas import Columns, Domain, PredictRow, check_domain
from forecast.errors import ForecastError
from forecast.registry import Registry, check_compatible
from forecast.settings import Settings

logger = logging.getLogger(__name__)

MULE_VIEW_TTL_S = 0.25  # how long a worker trusts its last look at the mules' heartbeats


class ForecastService:
    """Per-process service object; thread-safe."""

    def __init__(self, settings: Settings, client: MuleClient, registry: Registry) -> None:
        self.settings = settings
        self.client = client
        self.registry = registry
        self._lock = threading.Lock()
        self._domains: dict[str, Domain] = {}
        self._view: tuple[bool, str | None] = (False, None)  # (some mule ready, the one version served)
        self._view_until = 0.0

    # -- predict -----------------------------------------------------------

    def domain(self) -> Domain:
        """The domain of the version the mules serve (production before they report)."""
        version = self._mule_view()[1] or self._production()
        with self._lock:
            if version not in self._domains:
                self._domains[version] = Domain.from_metadata(
                    self.registry.metadata(version), self.settings.max_horizon_days
                )
            return self._domains[version]

    def validate(self, rows: list[PredictRow], prefix: str | None) -> Columns:
        return check_domain(rows, self.domain(), prefix)

    def predict(self, columns: Columns, deadline: float) -> Prediction:
        self._require_ready()
        return self.client.predict(columns.days, columns.stores, columns.items, deadline)

    def _require_ready(self) -> None:
        if not self._mule_view()[0]:
            raise Unavailable("no mule has a model loaded yet", self.settings.retry_after_s, "not_ready")

    def _mule_view(self) -> tuple[bool, str | None]:
        """(some mule holds a model, the version if they all hold one), from the heartbeats.

        A mule that is loading a new version during /reload still holds the old one and
        serves again as soon as it has swapped, so it counts.  A positive view is trusted
        for ``MULE_VIEW_TTL_S`` (keeps the heartbeat reads off the per-request path); a
        negative one never is: a stale "no model" would turn a whole window of requests
        into 503s.
        """
        now = time.monotonic()
        if now >= self._view_until:
            held = [str(m["model_version"]) for m in self.client.mule_states() if m.get("model_version")]
            single = held[0] if held and len(set(held)) == 1 else None
            self._view = (bool(held), single)
            self._view_until = now + MULE_VIEW_TTL_S if held else now
        return self._view

    # -- status ------------------------------------------------------------

    def mules(self) -> list[dict[str, Any]]:
        """Each mule's last heartbeat with its age; a ready mule with an old heartbeat is "stale"."""
        now = time.time()
        mules = self.client.mule_states()
        for mule in mules:
            age = now - float(mule.get("heartbeat", 0))
            mule["heartbeat_age_s"] = round(age, 3)
            if mule.get("state") == "ready" and age > self.settings.mule_stale_after_s:
                mule["state"] = "stale"
        return mules

    def status(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): ready when every mule has a model and a fresh heartbeat."""
        mules = self.mules()
        ready = all(mule.get("state") == "ready" for mule in mules)
        versions = sorted({str(mule["model_version"]) for mule in mules if mule.get("model_version")})
        body = {"ready": ready, "model_version": versions[0] if len(versions) == 1 else versions, "mules": mules}
        return ready, body

    def served_version(self) -> str | None:
        versions = {m.get("model_version") for m in self.client.mule_states() if m.get("state") == "ready"}
        return str(next(iter(versions))) if len(versions) == 1 else None

    # -- reload ------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Roll the registry's production version through the mules, one at a time."""
        try:
            version = self.registry.resolve("production")
            check_compatible(self.registry.metadata(version))
        except ForecastError as exc:
            raise ReloadRefused(f"production cannot be loaded: {exc.message}") from exc
        logger.info("reload: rolling %s through %d mules", version, len(self.client.mule_ids))
        self.client.reload(version)
        return {"model_version": version, "mules": self.mules()}

    def _production(self) -> str:
        try:
            return self.registry.resolve("production")
        except ForecastError as exc:
            raise Unavailable(f"no model to serve: {exc.message}", self.settings.retry_after_s, "not_ready") from exc
