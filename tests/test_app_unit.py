"""Pure logic of the web app, without uWSGI: process boundaries, field paths, reload access."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from flask import Flask

from app import errors, views
from app.schemas import field_path
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
