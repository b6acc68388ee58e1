"""What the endpoints do, apart from HTTP: routes, the served models' domains, prediction, status, reload.

One :class:`ForecastService` lives in each web worker process (in its
:class:`app.services.Services`).  It reads registry metadata (plain JSON, never
LightGBM) to know each served version's stores, items and dates, routes every
row to its model's production or canary version by the routes the pod's last
rollout published (:mod:`app.routing`, :mod:`app.rollout`), judges the mule pool
by its heartbeats (:class:`app.pool.PoolView`), submits through the mule client,
and hands a sample of answered rows to a ``shadow`` version.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from app.domain import Domain, FieldNames, check_domain
from app.errors import ModelNotFound, NotReady, Reason, ReloadRefused, Unavailable
from app.legacy_answers import Guardrails
from app.mlflow_follow import MlflowSync, SyncBoard, state_body
from app.pool import PoolView
from app.prediction import Part, Prediction
from app.rollout import Loader, PoolState, Rollout
from app.routing import parts, shadow_job
from forecast.errors import ForecastError
from forecast.features import FEATURE_SETS
from forecast.intervals import Calibration
from forecast.legacy import import_legacy
from forecast.registry import DEFAULT_MODEL, Registry
from forecast.trend import Trend
from serving.columns import Columns
from serving.messages import ModelRoute, Routes, ShadowJob, SyncState
from serving.settings import Settings

logger = logging.getLogger(__name__)

POOL_VIEW_TTL_S = 0.25  # how long a worker trusts a look at the mules that found one serving
ROUTES_TTL_S = 0.25  # how long a worker trusts the routes it read (a rollout publishes new ones)


class Mules(Loader, Protocol):
    """The mule client as the service uses it (:class:`app.mule_client.MuleClient`)."""

    def predict(self, model: str, parts: list[Part], deadline: float, outputs: tuple[str, ...] = (),
                spare: bool = False) -> Prediction: ...  # fmt: skip

    def submit_shadow(self, job: ShadowJob) -> bool: ...


class Pool(PoolState, SyncBoard, Protocol):
    """The mules' heartbeats, the pod's routes, its MLflow sync state (:class:`app.pool.MulePool`)."""

    def view(self) -> PoolView: ...

    def sync_state(self) -> SyncState | None: ...


@dataclass(frozen=True)
class ServedModel:
    """What the web worker knows of a served version, from its registry metadata."""

    model: str
    version: str
    domain: Domain
    guardrails: Guardrails
    trained_through: dt.date  # the last day of its training data: forecasts are so many days ahead of it
    calibration: Calibration | None  # its interval calibration; None: trained without one, or imported
    feature_names: tuple[str, ...]  # its trees' features, in order (explanations name them)
    trend: Trend | None  # its trend (our feature set: the trees predict log1p(sales) around it); None: legacy
    recent: dict[str, Any] | None = None  # its training data's last weeks (forecast.train.recent_sales); None: none

    @classmethod
    def of(cls, model: str, version: str, metadata: dict[str, Any], horizon_days: int) -> ServedModel:
        """From the version's registry metadata; :class:`Unavailable` when it lacks what serving needs."""
        domain = Domain.from_metadata(metadata, horizon_days)
        try:  # what a mule refuses to load (registry_checks): this worker may only be reading it first
            calibration = Calibration.of_version(metadata)
            trained_through = dt.date.fromisoformat(metadata["data"]["trained_through"])
            feature_set = FEATURE_SETS[str(metadata["feature_version"])]
            trend = Trend.from_dict(metadata["trend"]) if feature_set.log_target else None
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"model {model!r} {version} cannot be served: {exc}", Reason.NOT_READY) from exc
        return cls(model, version, domain, Guardrails.of(metadata, domain), trained_through, calibration,
                   feature_set.names, trend, metadata.get("recent"))  # fmt: skip

    def serves(self) -> dict[str, Any]:
        """What it forecasts, as ``GET /models`` says (:class:`app.schemas.ServedDomain`)."""
        return {"stores": sorted(self.domain.stores), "items": sorted(self.domain.items),
                "first_date": self.domain.first_date.isoformat(), "last_date": self.domain.last_date.isoformat(),
                "trained_through": self.trained_through.isoformat()}  # fmt: skip


class ForecastService:
    """Per-process service object; thread-safe."""

    def __init__(self, settings: Settings, mules: Mules, pool: Pool, registry: Registry) -> None:
        self.settings = settings
        self.mules = mules
        self.pool = pool
        self.registry = registry
        following = settings.mlflow_tracking_uri and settings.mlflow_models
        self.mlflow = MlflowSync(settings, registry, pool) if following else None
        self.rollout = Rollout(settings, registry, mules, pool, self.mlflow.run_pass if self.mlflow else None)
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._view: PoolView | None = None
        self._view_until = 0.0
        self._routes: Routes | None = None
        self._routes_until = 0.0

    # -- predict -----------------------------------------------------------

    def predict(
        self, model: str, columns: Columns, names: FieldNames, deadline: float, outputs: tuple[str, ...] = ()
    ) -> Prediction:
        """Check the rows against the model's production version and score them before ``deadline`` (with each
        row's ``outputs`` too: :class:`Prediction`).

        ``names`` names a row's field in an error as the client sent it.  Raises
        :class:`ModelNotFound`, :class:`app.errors.InvalidInput` (a value the model does not
        know), :class:`Unavailable` (no mule serves, at capacity, a mule failed, the model does
        not load) or :class:`app.errors.DeadlineExceeded`.
        """
        route = self.route(model)
        view = self._admission_view()
        check_domain(columns, self.model(model, route.production).domain, names)
        if not view.any_serving:
            raise Unavailable("no mule has a model loaded yet", Reason.NOT_READY)
        prediction = self.mules.predict(model, parts(model, route, columns), deadline, outputs)
        shadow = shadow_job(model, route, columns, prediction)
        if shadow is not None:
            self.mules.submit_shadow(shadow)  # scored in a mule's spare time, after this answer
        return prediction

    def score(self, model: str, version: str, columns: Columns, deadline: float) -> np.ndarray:
        """``version``'s forecasts for ``columns`` (rows it knows), scored in the mules' spare time (after every
        live request's jobs) before ``deadline``: what realised accuracy compares with actuals; raises as predict."""
        if not self._admission_view().any_serving:
            raise Unavailable("no mule has a model loaded yet", Reason.NOT_READY)
        return self.mules.predict(model, [Part(version, columns)], deadline, spare=True).sales

    def route(self, model: str) -> ModelRoute:
        """Where ``model``'s rows go; raises :class:`ModelNotFound`, or :class:`Unavailable` before its rollout."""
        route = self.routes().models.get(model)
        if route is not None:
            return route
        if model not in self.registry.models():
            raise ModelNotFound(f"there is no model {model!r}", field="model")
        raise Unavailable(f"model {model!r} is not rolled out on this server yet", Reason.NOT_READY)

    def routes(self) -> Routes:
        """The routes of the pod's last rollout (before its first: each model's production, read here)."""
        now = time.monotonic()
        if self._routes is None or now >= self._routes_until:
            self._routes = self.pool.routes() or self._registry_routes()
            self._routes_until = now + ROUTES_TTL_S
        return self._routes

    def _registry_routes(self) -> Routes:
        found = {}
        for model in self.registry.models():
            production = self.registry.named(model).alias("production")
            if production is not None:
                found[model] = ModelRoute(production.version)
        return Routes(found)

    def served_model(self, model: str = DEFAULT_MODEL) -> ServedModel:
        """``model``'s production version as this pod serves it: its domain and guardrails."""
        return self.model(model, self.route(model).production)

    def served_domains(self) -> dict[str, Domain]:
        """Each model this pod routes rows to, and what its production version knows (the readable ones)."""
        found = {}
        for model, route in self.routes().models.items():
            try:
                found[model] = self.model(model, route.production).domain
            except Unavailable:
                continue  # its metadata cannot be read: its requests are answered 503
        return found

    def model(self, model: str, version: str) -> ServedModel:
        """What the registry says of ``model``'s ``version`` (cached); raises :class:`Unavailable` if unreadable."""
        with self._lock:
            if (model, version) not in self._models:
                try:
                    metadata = self.registry.named(model).metadata(version)
                except ForecastError as exc:
                    raise Unavailable(f"model {model!r} cannot be read: {exc.message}", Reason.NOT_READY) from exc
                self._models[model, version] = ServedModel.of(model, version, metadata, self.settings.max_horizon_days)
            return self._models[model, version]

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

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``/status``'s body when every mule serves; raises :class:`NotReady` (with the same body) if not."""
        view = self.pool.view()
        versions = view.versions
        routes = self.pool.routes()
        body = {
            "ready": view.all_serving,
            "model_version": versions[0] if len(versions) == 1 else versions,
            "mules": view.mule_states(),
            "rollout": _rollout_state(routes),
            "mlflow": state_body(self.pool.sync_state(), time.time()),
        }
        if not view.all_serving:
            raise NotReady("not every mule has a model loaded", body)
        return body

    def served_version(self) -> str | None:
        return self.pool.view().served_version

    def models(self) -> dict[str, Any]:
        """``GET /models``: each model, its versions and aliases, what this pod routes, which mules hold what."""
        routes, view = self.routes(), self.pool.view()
        found = {}
        for model in self.registry.models():
            registry = self.registry.named(model)
            route = routes.models.get(model)
            found[model] = {
                "versions": registry.versions(),
                "aliases": {name: vars(alias) for name, alias in registry.alias_table().items()},
                "routes": vars(route) if route else None,
                "mules": view.holders(model),
                "serves": self.model(model, route.production).serves() if route else None,
            }
        sync = self.pool.sync_state()
        return {"models": found, "refused": (routes.refused or {}) | (sync.refused if sync else {})}

    # -- reload ------------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Roll every model's aliases through this pod's mules now (what the poller does every interval).

        Following MLflow, its aliases are pulled first (:mod:`app.mlflow_follow`).  With
        ``FORECAST_LEGACY_REGISTRY_URL`` set, the model that file names is imported first
        when it changed (by checksum) and becomes the default model's production.  Raises
        :class:`ReloadRefused` naming why the default model's production is not served (a
        download, a version that does not verify, a mule that refused or died); the mules keep
        what they served.
        """
        source = self.settings.legacy_registry_url
        if self.mlflow is not None:
            self.mlflow.run_pass()
        try:
            if source:
                version, registered = import_legacy(self.registry, source, promote=True)
                logger.info("reload: %s from %s is %s", "imported" if registered else "unchanged", source, version)
            wanted = self.registry.resolve("production")
        except ForecastError as exc:
            raise ReloadRefused(f"production cannot be loaded: {exc.message}") from exc
        routes = self.rollout.apply()
        self._routes = None  # this worker routes by them at once
        reason = (routes.refused or {}).get(f"{DEFAULT_MODEL}/{wanted}")
        if reason is not None:
            raise ReloadRefused(reason)
        return {"model_version": wanted, "mules": self.pool.view().mule_states()}


def _rollout_state(routes: Routes | None) -> dict[str, Any] | None:
    """``/status``'s ``rollout``: the pod's routes generation, the one in progress, the versions it refused."""
    if routes is None:
        return None
    return {"generation": routes.generation, "in_progress": routes.rolling, "refused": routes.refused or {}}
