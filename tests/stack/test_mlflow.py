"""Serving models from a real MLflow registry, and recording ours there (docs/mlflow.md).

A real tracking server (PyPI's ``mlflow``, its own virtualenv, SQLite and a local artifact root on
127.0.0.1: tests/mlflow/server.py) for the module; models trained and logged by MLflow's own API
(tests/mlflow/log_models.py) as an MLflow user logs them; a real stack following it, its poller
every second.  Our model ``sales`` is MLflow's registered model ``sales``; the stack's default
model comes from the local registry as always.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from forecast.data import SalesData, write_csv
from forecast.mlflow_api import MlflowApi
from forecast.mlflow_models import ModelVersion, fetch
from forecast.mlflow_record import CHECKSUM_TAG, VERSION_TAG, flat_metrics, set_alias
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import wait_for
from tests.mlflow.server import PYTHON, MlflowServer
from tests.stack.scrape import scrape
from tests.stack.stacks import start_stack
from tests.stack.test_monitoring import alert_queries, dashboard_queries

pytestmark = pytest.mark.xdist_group("mlflow")  # one tracking server and one stack for the module, on one worker

ROOT = Path(__file__).resolve().parents[2]
ROWS = [["2018-01-21", 3, 7], ["2018-02-03", 10, 50], ["2018-03-30", 1, 1], ["2018-06-14", 7, 23]]
# What MLflow holds, in the order it registers them: versions 1 to 4 of "sales".
MODELS = [
    {"kind": "booster", "features": "weekday", "seed": 1},  # a Booster over the Ray service's features
    {"kind": "regressor", "features": "weekday", "seed": 2},  # an LGBMRegressor, logged by MLflow 3 with skops
    {"kind": "booster", "features": "day", "seed": 3},  # its artifact damaged below
    {"kind": "booster", "features": "price", "seed": 4},  # features this service does not know
]
OUTAGE_S = 60  # how long MLflow is away: half of it hung (slow), half of it stopped (down)


# Session-scoped: pytest-xdist may run other modules' tests between these on the same worker, which tears the
# module's fixtures down and up again; the stack is cheap to start again, MLflow and its models are not.
@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def logged(mlflow: MlflowServer) -> list[dict[str, Any]]:
    """MODELS logged and registered as ``sales`` 1-4 by MLflow's API; each with its Booster's predictions of ROWS."""
    specs = [{**spec, "name": "sales", "tags": {}, "rows": ROWS} for spec in MODELS]
    output = mlflow.directory / "logged.json"
    subprocess.run([str(PYTHON), str(ROOT / "tests" / "mlflow" / "log_models.py"), str(output)],
                   input=json.dumps(specs).encode(), check=True, capture_output=True, cwd=mlflow.directory,
                   env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.url})  # fmt: skip
    found: list[dict[str, Any]] = json.loads(output.read_text())
    assert [entry["version"] for entry in found] == ["1", "2", "3", "4"]
    return found


@pytest.fixture(scope="module")
def following(
    tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry, mlflow: MlflowServer,
    logged: list[dict[str, Any]],
) -> Iterator[Stack]:  # fmt: skip
    """A stack following MLflow's ``sales`` as our ``sales``, its production alias set to version 1 first."""
    set_alias(MlflowApi(mlflow.url), "sales", "production", "1")
    base = tmp_path_factory.mktemp("following")
    shutil.copytree(serving_registry.root, base / "registry")
    stack = start_stack(base / "run", Registry(base / "registry"), FORECAST_MLFLOW_TRACKING_URI=mlflow.url,
                        FORECAST_MLFLOW_MODELS="sales=sales", FORECAST_REGISTRY_POLL_S="1",
                        FORECAST_MLFLOW_TIMEOUT_S="2", FORECAST_DEADLINE_MS="20000")  # fmt: skip
    yield stack
    stack.stop()


def sales(stack: Stack) -> list[float] | None:
    """What ``sales`` forecasts for ROWS (None: it is not served yet)."""
    body = [{"date": d, "store": s, "item": i} for d, s, i in ROWS]
    answer = requests.post(f"{stack.url}/models/sales/predict", json=body, timeout=30)
    return [row["sales"] for row in answer.json()["predictions"]] if answer.status_code == 200 else None


def serves(stack: Stack, mlflow: MlflowServer, version: str, predictions: list[float]) -> None:
    """Point MLflow's production at ``version`` and wait until the stack answers with its ``predictions``."""
    set_alias(MlflowApi(mlflow.url), "sales", "production", version)
    wait_for(lambda: sales(stack) == predictions, timeout_s=120, explain=lambda: str(mlflow_state(stack)))


def production(stack: Stack) -> str | None:
    model = requests.get(f"{stack.url}/models", timeout=5).json()["models"].get("sales")
    return model["routes"]["production"] if model and model["routes"] else None


def mlflow_state(stack: Stack) -> dict[str, Any]:
    """``/status``'s ``mlflow`` (an empty state before the follower's first pass)."""
    state: dict[str, Any] | None = requests.get(f"{stack.url}/status", timeout=5).json()["mlflow"]
    return state or {"failures": None, "refused": None, "last_error": None, "age_s": None}


class Traffic:
    """Threads predicting ``sales`` until stopped; every status counted (a failed request is any but 200)."""

    def __init__(self, stack: Stack, threads: int = 4) -> None:
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(stack,)) for _ in range(threads)]

    def _run(self, stack: Stack) -> None:
        session = requests.Session()
        body = [{"date": d, "store": s, "item": i} for d, s, i in ROWS]
        while not self._stop.is_set():
            self.statuses[session.post(f"{stack.url}/models/sales/predict", json=body, timeout=30).status_code] += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_lightgbm_flavor_model_aliased_production_in_mlflow_is_served(
    following: Stack, logged: list[dict[str, Any]]
) -> None:
    wait_for(lambda: production(following) is not None, timeout_s=120, explain=lambda: str(mlflow_state(following)))
    assert sales(following) == logged[0]["predictions"]  # the Booster's own doubles, to the last bit
    state = mlflow_state(following)
    assert (state["failures"], state["refused"], state["last_error"]) == (0, {}, None)
    exported = {sample.name for sample in scrape(following.url).samples}
    queries = alert_queries() + dashboard_queries()
    watched = {name for query in queries for name in re.findall(r"forecast_mlflow_\w+", query)}
    assert watched
    assert watched <= exported  # the alerts and the dashboard's panel on MLflow read what a following pod exports
    version = production(following)
    local = Registry(Path(following.env["FORECAST_REGISTRY_DIR"]), "sales")
    source = local.metadata(str(version))["source"]["mlflow"]
    assert (source["name"], source["version"], source["run_id"]) == ("sales", "1", logged[0]["run_id"])


def test_moving_the_alias_rolls_the_new_version_out_with_no_failed_request(
    following: Stack, mlflow: MlflowServer, logged: list[dict[str, Any]]
) -> None:
    serves(following, mlflow, "1", logged[0]["predictions"])
    with Traffic(following) as traffic:
        set_alias(MlflowApi(mlflow.url), "sales", "production", "2")  # the LGBMRegressor, from its skops file
        wait_for(lambda: sales(following) == logged[1]["predictions"], timeout_s=120,
                 explain=lambda: str(mlflow_state(following)))  # fmt: skip
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert traffic.statuses[200] > 20


def test_a_damaged_or_foreign_version_is_refused_saying_why_and_the_old_one_keeps_serving(
    following: Stack, mlflow: MlflowServer, logged: list[dict[str, Any]]
) -> None:
    api = MlflowApi(mlflow.url)
    serves(following, mlflow, "2", logged[1]["predictions"])
    uri = api.get("model-versions/get-download-uri", name="sales", version="3")["artifact_uri"]
    damaged = mlflow.artifacts / uri.removeprefix("mlflow-artifacts:/") / "model.lgb"
    damaged.write_text(damaged.read_text()[: damaged.stat().st_size // 2])  # a download cut short
    for version, reason in (("3", "cut short"), ("4", "not a feature set this service knows")):
        set_alias(api, "sales", "production", version)
        key = f"sales/mlflow:sales/{version}"
        wait_for(lambda: key in mlflow_state(following)["refused"], timeout_s=60,  # noqa: B023
                 explain=lambda: str(mlflow_state(following)))  # fmt: skip
        assert reason in mlflow_state(following)["refused"][key]
        assert reason in requests.get(f"{following.url}/models", timeout=5).json()["refused"][key]
        assert sales(following) == logged[1]["predictions"]  # the last good version serves on
    set_alias(api, "sales", "production", "2")
    wait_for(lambda: mlflow_state(following)["refused"] == {}, timeout_s=60)


@pytest.mark.timeout(OUTAGE_S * 6)  # the outage itself lasts OUTAGE_S; the mutants' runs give a test 120 s
def test_mlflow_hung_then_down_for_a_minute_changes_nothing_for_clients_and_is_reported(
    following: Stack, mlflow: MlflowServer, logged: list[dict[str, Any]]
) -> None:
    serves(following, mlflow, "2", logged[1]["predictions"])
    wait_for(lambda: mlflow_state(following)["refused"] == {}, timeout_s=60)
    assert mlflow.pid is not None
    with Traffic(following) as traffic:
        os.killpg(mlflow.pid, signal.SIGSTOP)  # hung: it accepts connections and never answers
        try:
            wait_for(lambda: mlflow_state(following)["age_s"] >= OUTAGE_S / 2, timeout_s=OUTAGE_S * 2)
        finally:
            os.killpg(mlflow.pid, signal.SIGCONT)
        hung = mlflow_state(following)
        mlflow.stop()  # down: connections refused
        wait_for(lambda: mlflow_state(following)["age_s"] >= OUTAGE_S, timeout_s=OUTAGE_S * 2)
        down = mlflow_state(following)
        age = scrape(following.url).value("forecast_mlflow_sync_age_seconds")
        assert sales(following) == logged[1]["predictions"]
        mlflow.start()
        wait_for(lambda: mlflow_state(following)["failures"] == 0, timeout_s=120)
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert traffic.statuses[200] > 100
    assert hung["failures"] >= 3, hung
    assert "timed out" in hung["last_error"]
    assert down["failures"] > hung["failures"], down
    assert "cannot be reached" in down["last_error"]
    assert age >= OUTAGE_S
    assert mlflow_state(following)["age_s"] < OUTAGE_S / 2


def test_train_with_mlflow_records_a_run_whose_metrics_are_the_model_cards_and_promote_moves_its_alias(
    tmp_path: Path, small_data: SalesData, mlflow: MlflowServer
) -> None:
    write_csv(small_data, tmp_path / "train.csv")
    env = {**os.environ, "FORECAST_MLFLOW_TRACKING_URI": mlflow.url, "FORECAST_MLFLOW_MODELS": "ours=default"}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "forecast", "--registry", str(tmp_path / "registry"), *args],
                              capture_output=True, text=True, env=env, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("train", "--mlflow", "--data", str(tmp_path / "train.csv"), "--rounds", "20", "--backtest-origins", "2")
    api = MlflowApi(mlflow.url)
    registry = Registry(tmp_path / "registry")
    card = registry.metadata("v1")
    version = api.get("model-versions/get", name="ours", version="1")["model_version"]
    tags = {tag["key"]: tag["value"] for tag in version["tags"]}
    assert (tags[VERSION_TAG], tags[CHECKSUM_TAG]) == ("v1", registry.checksum("v1"))
    run = api.get("runs/get", run_id=version["run_id"])["run"]
    logged = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
    assert logged == flat_metrics(card)
    assert {"holdout.model.smape", "coverage.day.series.1.80"} <= logged.keys()
    assert run["info"]["status"] == "FINISHED"
    assert aliases(api, "ours") == {"production": "1"}
    load = "import mlflow; print(mlflow.lightgbm.load_model('models:/ours@production').num_trees())"
    loaded = subprocess.run([str(PYTHON), "-c", load], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.url})  # fmt: skip
    assert loaded.stdout.split()[-1] == str(registry.model_path("v1").read_text().count("\nTree=")), loaded.stderr

    back = fetch(api, ModelVersion.get(api, "ours", "1"))  # what a pod following "ours" would add
    assert back.model_text == registry.model_path("v1").read_text()
    assert (back.metadata["intervals"], back.metadata["trend"]) == (card["intervals"], card["trend"])

    assert "version 1 is default v1" in cli("registry", "export", "--mlflow")  # already there: not again
    assert len(api.get("model-versions/search", filter="name = 'ours'")["model_versions"]) == 1
    cli("registry", "promote", "v1", "--alias", "canary", "--weight", "10")
    assert aliases(api, "ours") == {"production": "1", "canary": "1"}
    weight = api.get("model-versions/get", name="ours", version="1")["model_version"]["tags"]
    assert {"key": "forecast.canary_weight", "value": "10"} in weight
    cli("registry", "rollback", "--alias", "canary")
    assert aliases(api, "ours") == {"production": "1"}


def aliases(api: MlflowApi, name: str) -> dict[str, str]:
    found = api.get("registered-models/get", name=name)["registered_model"].get("aliases", [])
    return {entry["alias"]: entry["version"] for entry in found}
