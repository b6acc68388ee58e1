"""Pure logic of the web app, without uWSGI: process boundaries, field paths, reload access."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from flask import Flask

from app import errors, views
from app.schemas import field_path
from app.service import ForecastService
from forecast.settings import Settings


def test_web_worker_code_imports_neither_lightgbm_nor_pandas() -> None:
    code = (
        "import sys, app, app.views, app.service, app.mule_client, app.schemas, forecast.messages;"
        "bad = [m for m in ('lightgbm', 'pandas', 'scipy') if m in sys.modules];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_mule_loop_module_does_not_import_flask() -> None:
    code = "import sys, mules.loop; assert 'flask' not in sys.modules and 'app' not in sys.modules"
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
    app.extensions["forecast"] = SimpleNamespace(settings=settings, reload=lambda: {"model_version": "v9"})
    errors.init_app(app)
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


class FakeHeartbeats:
    """Pure-logic stand-in for MuleClient.mule_states (the real ones need uWSGI)."""

    def __init__(self, *states: list[dict[str, object]]) -> None:
        self.states = list(states)
        self.reads = 0

    def mule_states(self) -> list[dict[str, object]]:
        self.reads += 1
        return self.states[min(self.reads, len(self.states)) - 1]


def make_service(heartbeats: FakeHeartbeats) -> ForecastService:
    return ForecastService(Settings(), heartbeats, None)


def test_a_mule_reloading_still_holds_a_model() -> None:
    svc = make_service(
        FakeHeartbeats(
            [
                {"id": 1, "state": "loading", "model_version": "v1"},  # mid-/reload: old model kept
                {"id": 2, "state": "loading", "model_version": None},  # first load after a respawn
            ]
        )
    )
    svc._require_ready()
    assert svc._mule_view() == (True, "v1")


def test_no_model_is_503_and_never_trusted_for_later_requests() -> None:
    starting = [{"id": 1, "state": "loading", "model_version": None}]
    ready = [{"id": 1, "state": "ready", "model_version": "v2"}]
    heartbeats = FakeHeartbeats(starting, ready)
    svc = make_service(heartbeats)
    with pytest.raises(errors.Unavailable) as refused:
        svc._require_ready()
    assert refused.value.code == "not_ready"
    svc._require_ready()  # the very next request reads the heartbeats again
    assert heartbeats.reads == 2
    svc._require_ready()  # a positive view is reused
    assert heartbeats.reads == 2
