"""The pod's MLflow sync state (app/mlflow_follow.py): counted on what the pod published, whichever worker passes."""

from __future__ import annotations

from pathlib import Path

from app.mlflow_follow import MlflowSync, state_body
from forecast.mlflow_api import MlflowUnreachable
from forecast.registry import Registry
from serving.messages import SyncState
from serving.settings import Settings


class Board:
    """The state cache every worker of a pod reads and writes (one dict here)."""

    def __init__(self) -> None:
        self.state: SyncState | None = None

    def sync_state(self) -> SyncState | None:
        return None if self.state is None else SyncState.decode(self.state.encode())

    def publish_sync(self, state: SyncState) -> None:
        self.state = state


class Follower:
    """MLflow down (``refusals`` None) or answering with ``refusals``."""

    def __init__(self) -> None:
        self.refusals: dict[str, str] | None = None

    def pull(self) -> dict[str, str]:
        if self.refusals is None:
            raise MlflowUnreachable("MLflow at http://mlflow.test cannot be reached (timed out)")
        return self.refusals


def test_failures_count_on_the_pods_state_whichever_worker_passes_and_a_good_pass_clears_them(tmp_path: Path) -> None:
    settings = Settings(mlflow_tracking_uri="http://mlflow.test", mlflow_models="sales=sales")
    board, follower = Board(), Follower()
    workers = [MlflowSync(settings, Registry(tmp_path / "registry"), board) for _ in range(2)]
    for worker in workers:
        worker.follower = follower  # type: ignore[assignment]  # the logic here; a real follower: test_mlflow.py
    assert [worker.run_pass().failures for worker in (*workers, workers[0])] == [1, 2, 3]  # the poller, a /reload
    down = board.state
    assert down is not None
    assert (down.last_success, down.last_error) == (None, "MLflow at http://mlflow.test cannot be reached (timed out)")
    assert state_body(down, 100.0) == {"tracking_uri": "http://mlflow.test", "last_success": None, "age_s": None,
                                       "failures": 3, "last_error": down.last_error, "refused": {}}  # fmt: skip
    follower.refusals = {"sales/mlflow:sales/4": "not a feature set this service knows"}
    up = workers[1].run_pass()
    assert (up.failures, up.last_error, up.refused) == (0, None, follower.refusals)
    assert up.last_success is not None
    follower.refusals = None
    again = workers[0].run_pass()
    assert (again.failures, again.last_success, again.refused) == (1, up.last_success, up.refused)
    body = state_body(again, up.last_success + 12.5)
    assert body is not None
    assert body["age_s"] == 12.5
