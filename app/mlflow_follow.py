"""The pod's follower of an MLflow registry: a pass before each rollout pass, its state for /status and metrics.

With ``FORECAST_MLFLOW_TRACKING_URI`` and ``FORECAST_MLFLOW_MODELS`` set, the registry follower
(:meth:`app.rollout.Rollout.follow_forever`, worker 1) calls :meth:`MlflowSync.run_pass` before
each of its passes: :class:`forecast.mlflow_sync.MlflowFollower` brings the local aliases to
MLflow's, and the rollout then rolls them out as any promote.  Each pass publishes a
:class:`serving.messages.SyncState` in the state cache, which ``/status`` (``mlflow``), ``GET
/models`` (``refused``) and the ``forecast_mlflow_sync_age_seconds`` gauge read from any worker.
MLflow down or slow (each call within ``FORECAST_MLFLOW_TIMEOUT_S``) fails the pass only: the
pod serves what it has, and the state says since when and why.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

from app import metrics
from forecast.errors import ForecastError
from forecast.mlflow_api import MlflowApi
from forecast.mlflow_sync import MlflowFollower, parse_followed
from forecast.registry import Registry
from serving.messages import SyncState
from serving.settings import Settings

logger = logging.getLogger(__name__)


class SyncBoard(Protocol):
    """Where the state is published, for every worker of the pod (:class:`app.pool.MulePool`)."""

    def sync_state(self) -> SyncState | None: ...

    def publish_sync(self, state: SyncState) -> None: ...


class MlflowSync:
    """One pod's MLflow follower and the state it publishes (build it only when MLflow is set)."""

    def __init__(self, settings: Settings, registry: Registry, pool: SyncBoard) -> None:
        uri = str(settings.mlflow_tracking_uri)
        api = MlflowApi(uri, settings.mlflow_timeout_s)
        self.follower = MlflowFollower(registry, api, parse_followed(settings.mlflow_models or ""))
        self.pool = pool
        self.tracking_uri = uri

    def run_pass(self) -> SyncState:
        """Pull MLflow's aliases into the registry; publish and return the state (a failure is counted, not raised).

        The failures are counted on the pod's published state, not this process's: ``/reload`` runs a pass in
        whichever worker answers it, between the follower's passes in worker 1.
        """
        started = time.time()
        before = self.pool.sync_state() or SyncState(self.tracking_uri)
        try:
            refused = self.follower.pull()
        except ForecastError as exc:  # MLflow unreachable, or a registry that cannot be written: next pass
            metrics.MLFLOW_SYNC_FAILURES.inc()
            logger.warning("following MLflow at %s: %s", self.tracking_uri, exc.message)
            state = dataclasses.replace(before, last_attempt=started, failures=before.failures + 1,
                                        last_error=exc.message)  # fmt: skip
        else:
            state = SyncState(self.tracking_uri, time.time(), started, 0, None, refused)
        self.pool.publish_sync(state)
        return state


def state_body(state: SyncState | None, now: float) -> dict[str, object] | None:
    """``/status``'s ``mlflow``: the state, and the seconds since the last pass that reached MLflow."""
    if state is None:
        return None
    age = None if state.last_success is None else round(now - state.last_success, 3)
    return {"tracking_uri": state.tracking_uri, "last_success": state.last_success, "age_s": age,
            "failures": state.failures, "last_error": state.last_error, "refused": state.refused}  # fmt: skip
