"""Pure logic of the web app, without uWSGI: process boundaries, field paths, reload access."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flask import Flask

from app import create_app, errors, views
from app.pool import PoolView
from app.prediction import Prediction
from app.schemas import Shape, field_path
from app.service import ForecastService
from app.services import EXTENSION
from forecast.registry import Registry
from serving.columns import Columns
from serving.messages import Heartbeat, MuleState
from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_web_worker_code_imports_neither_lightgbm_nor_pandas() -> None:
    code = (
        "import sys, app, app.views, app.service, app.mule_client, app.schemas, serving.messages;"
        "bad = [m for m in ('lightgbm', 'pandas', 'scipy') if m in sys.modules];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("modules", "never"),
    [
        # the mule process: no web framework, nothing of the web app
        ("mules.loop", ("flask", "werkzeug", "app")),
        # the model package: nothing of uWSGI, HTTP, the serving kernel or either process
        ("forecast.cli, forecast.registry, forecast.model, forecast.train, forecast.data",
         ("flask", "werkzeug", "uwsgi", "serving", "app", "mules")),
        # the serving kernel: shared by both processes, so neither's framework nor the model runtime
        ("serving.settings, serving.messages, serving.logs, serving.histograms, serving.processes, "
         "serving.nginx_conf", ("flask", "werkzeug", "lightgbm", "pandas", "app", "mules")),
    ],
)  # fmt: skip
def test_each_package_keeps_to_its_process(modules: str, never: tuple[str, ...]) -> None:
    code = f"import sys, {modules}; bad = [m for m in {never!r} if m in sys.modules]; assert not bad, bad"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("prefix", "loc", "expected"),
    [("", ("store",), "store"), ("", (3, "date"), "[3].date"), ("instances", (3, "item"), "instances[3].item")],
)
def test_field_path(prefix: str, loc: tuple[int | str, ...], expected: str) -> None:
    assert field_path(prefix, loc) == expected


def reload_app(settings: Settings) -> Flask:
    """The real blueprint and error handlers around a stand-in service (no mules needed)."""
    app = Flask(__name__)
    service = SimpleNamespace(settings=settings, reload=lambda: {"model_version": "v9"})
    app.extensions[EXTENSION] = SimpleNamespace(forecast=service, settings=settings)
    errors.init_app(app, settings.retry_after_s)
    app.register_blueprint(views.bp)
    return app


@pytest.mark.parametrize(("address", "status"), [("127.0.0.1", 200), ("::1", 200), ("203.0.113.9", 403)])
def test_reload_without_a_token_is_loopback_only(address: str, status: int) -> None:
    client = reload_app(Settings()).test_client()
    response = client.get("/reload", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status
    if status == 403:
        assert response.get_json()["code"] == "forbidden"


def test_reload_with_a_token_ignores_the_address() -> None:
    client = reload_app(Settings(admin_token="t0k")).test_client()
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.post("/reload", environ_base=remote).status_code == 401
    assert client.post("/reload", environ_base=remote, headers={"Authorization": "Bearer t0k"}).status_code == 200


class StandInPool:
    """Hands out the views a test queues, the last one again when they run out; counts reads."""

    def __init__(self, *views: PoolView) -> None:
        self.views = list(views)
        self.reads = 0

    def view(self) -> PoolView:
        self.reads += 1
        return self.views[min(self.reads, len(self.views)) - 1]

    def routes(self) -> None:
        return None  # before the pod's first rollout: the service reads production from the registry

    def sync_state(self) -> None:
        return None  # not following MLflow


def view(*states: tuple[MuleState, str | None, float]) -> PoolView:
    """Mules 1, 2, ... in the given (state, model version, heartbeat age) at a fixed now."""
    now = 1_000.0
    beats = {
        i: Heartbeat(i, 100 + i, state, version, now - age, 0.0, 0) for i, (state, version, age) in enumerate(states, 1)
    }
    return PoolView(beats, now, 10)


READY, LOADING, FAILED = MuleState.READY, MuleState.LOADING, MuleState.FAILED


def make_service(pool: StandInPool, registry: Registry, mules: object = None) -> ForecastService:
    return ForecastService(Settings(registry_dir=registry.root), mules, pool, registry)


def test_a_mule_reloading_still_holds_a_model(registry: Registry) -> None:
    """Mid-/reload one mule loads the new version and keeps the old; a respawned one has none yet."""
    svc = make_service(StandInPool(view((LOADING, "v1", 0.5), (LOADING, None, 0.5))), registry)
    assert svc._admission_view().any_serving
    assert svc.served_model().domain.stores == frozenset({1, 2, 3})  # production's, v1


def test_no_model_is_503_and_never_trusted_for_later_requests(registry: Registry) -> None:
    pool = StandInPool(view((LOADING, None, 0.5)), view((READY, "v1", 0.5)))
    scored = Prediction(np.array([1.0]), ("v1",))
    svc = make_service(pool, registry, mules=SimpleNamespace(predict=lambda model, parts, deadline, outputs: scored))
    row = Columns.one(dt.date(2014, 3, 1), 1, 1)
    with pytest.raises(errors.Unavailable) as refused:
        svc.predict("default", row, Shape.ROW, time.time() + 5)
    assert refused.value.code == "not_ready"
    assert svc.predict("default", row, Shape.ROW, time.time() + 5) is scored  # the next request reads them again
    reads = pool.reads
    svc.predict("default", row, Shape.ROW, time.time() + 5)  # a view with a serving mule is reused
    assert pool.reads == reads


def status_app(pool: StandInPool, registry: Registry) -> Flask:
    """The real app around a stand-in pool: /status judges the heartbeats it is given."""
    settings = Settings(registry_dir=registry.root, metrics_enabled=False)
    return create_app(settings, SimpleNamespace(admission=None), pool)


@pytest.mark.parametrize(
    ("states", "status", "shown"),
    [
        ([(READY, "v1", 0.5), (READY, "v1", 0.5)], 200, ["ready", "ready"]),
        ([(READY, "v1", 0.5), (LOADING, "v1", 0.5)], 200, ["ready", "loading"]),  # a rolling reload
        ([(READY, "v1", 0.5), (READY, "v1", 11.0)], 503, ["ready", "stale"]),  # a hung or stopped mule
        ([(READY, "v1", 0.5), (FAILED, None, 0.5)], 503, ["ready", "failed"]),  # no model
        ([(READY, "v1", 0.5), (LOADING, None, 0.5)], 503, ["ready", "loading"]),  # its first load
    ],
)
def test_status_is_ready_only_when_every_mule_serves(
    registry: Registry, states: list[tuple[MuleState, str | None, float]], status: int, shown: list[str]
) -> None:
    """The readiness probe: 503 with Retry-After while a mule is stale or has no model."""
    response = status_app(StandInPool(view(*states)), registry).test_client().get("/status")
    body = response.get_json()
    assert response.status_code == status
    assert [mule["state"] for mule in body["mules"]] == shown
    assert body["ready"] is (status == 200)
    if status == 503:
        assert (body["code"], response.headers["Retry-After"]) == ("not_ready", "1")
        assert response.headers["X-Forecast-Error"] == "not_ready"


def test_a_mule_that_never_reported_is_unknown_and_not_ready(registry: Registry) -> None:
    pool = StandInPool(PoolView({1: view((READY, "v1", 0.5)).beats[1], 2: None}, 1_000.0, 10))
    response = status_app(pool, registry).test_client().get("/status")
    assert response.status_code == 503
    assert response.get_json()["mules"][1] == {"id": 2, "state": "unknown", "heartbeat_age_s": None}


def modules_importing(*names: str) -> set[str]:
    """The project modules whose source imports any of ``names`` (at any depth, deferred imports included)."""
    found = set()
    paths = [
        path
        for package in ("app", "mules", "serving", "forecast", "launcher")
        for path in (ROOT / package).rglob("*.py")
    ]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module]
            if any(name.split(".")[0] in names for name in imported):
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_the_claims_of_who_imports_what_hold() -> None:
    """README and docstrings: LightGBM only in the model runtime and training; uwsgi only in the two entry points."""
    assert modules_importing("lightgbm") == {"forecast.model", "forecast.train"}
    assert modules_importing("uwsgi", "uwsgidecorators") == {"app.main", "mules.loop"}


def imports_of(module: str) -> set[str]:
    """The modules ``module``'s source imports directly (``app.schemas``, ``pydantic``, ...)."""
    tree = ast.parse((ROOT / module.replace(".", "/")).with_suffix(".py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_types_routing_service_and_transport_share_have_homes_of_their_own() -> None:
    """Rows and predictions are numpy only; the transport takes no wire schemas; the service no wire shapes."""
    stdlib = {"__future__", "datetime", "collections.abc", "dataclasses", "typing"}
    assert imports_of("serving.columns") - stdlib == {"numpy"}
    assert imports_of("app.prediction") - stdlib == {"numpy", "serving.columns"}
    for transport in ("app.mule_client", "app.mule_control", "app.mule_channel"):
        assert not imports_of(transport) & {"pydantic", "app.schemas", "app.rows", "flask"}, transport
    assert not imports_of("app.service") & {"pydantic", "app.schemas", "app.rows"}


MAX_CLASS_LINES = 180  # past it, a class does two jobs: split it along them (the mule client's data and control)


def test_no_class_of_the_service_is_longer_than_the_limit() -> None:
    long = {
        f"{path.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
        for package in ("app", "mules", "serving", "forecast", "launcher")
        for path in (ROOT / package).glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    }
    assert long == {}
