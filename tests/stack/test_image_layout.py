"""The Docker image without a Docker engine: stage its file layout, run it (make docker-test builds it for real).

The staged-layout test reads the Dockerfile's own ``COPY`` and ``ENV`` lines, copies what
they name into a temporary root the way ``docker build`` would (``.dockerignore`` included),
adds the base image's global uWSGI ini and environment (from its stand-in,
``tests/docker/standin/``), sources the image's ``prestart.sh`` and starts uWSGI and nginx
the way the image's supervisord does, from that root.  A wrong path in the Dockerfile leaves
a file out or misplaced, and the stack does not become ready.  Paths are moved under the
root; the base image's ``RUN`` steps are not replayed (its model training is replaced by a
copy of a test registry).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from forecast.registry import Registry
from launcher.stack import find_nginx
from serving.settings import Settings
from tests.helpers import free_port, wait_for
from tests.unit.test_dockerfile import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parents[1] / "docker" / "standin"  # the base image, as make docker-test builds it
VENV_BIN = Path(sys.executable).parent


def allowed_by_dockerignore(name: str) -> bool:
    allowed = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(name, pattern.lstrip("!").rstrip("/")):
            allowed = negated
    return allowed


def stage(root: Path) -> dict[str, str]:
    """Copy what the Dockerfile copies into ``root``; return the image's environment (paths moved)."""
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions(STANDIN / "Dockerfile"):  # the base image's environment
        if instruction == "ENV":
            env.update(arg.split("=", 1) for arg in args)  # type: ignore[misc]
    for instruction, args in dockerfile_instructions(ROOT / "Dockerfile"):
        if instruction == "ENV":
            env.update(arg.split("=", 1) for arg in args)  # type: ignore[misc]
        elif instruction == "COPY":
            *sources, dest = args
            for source in sources:
                copy_like_docker(source, dest, many=len(sources) > 1, root=root)
    (root / "etc/uwsgi").mkdir(parents=True)
    ini = (STANDIN / "uwsgi.ini").read_text()
    # The two lines that name this machine: the socket path, and the nginx user (absent here).
    ini = ini.replace("/tmp/uwsgi.sock", f"{root}/tmp/uwsgi.sock").replace("chown-socket = nginx:nginx\n", "")
    (root / "etc/uwsgi/uwsgi.ini").write_text(ini)
    for directory in ("tmp", "etc/nginx"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    paths = {key: value for key, value in env.items() if value.startswith("/") and not value.startswith("/dev/")}
    return env | {key: f"{root}{value}" for key, value in paths.items()}  # /dev/stdout stays


def copy_like_docker(source: str, dest: str, many: bool, root: Path) -> None:
    origin = ROOT / source
    assert origin.exists(), f"Dockerfile copies {source}, which does not exist"
    assert allowed_by_dockerignore(source), f"Dockerfile copies {source}, which .dockerignore leaves out"
    target = root / dest.lstrip("/")
    if origin.is_dir():  # docker copies a directory's contents, not the directory
        shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        return
    if dest.endswith("/") or many:
        target = target / origin.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(origin, target)


@pytest.fixture
def staged_image(tmp_path: Path, serving_registry: Registry) -> Iterator[str]:
    """The staged image running: uWSGI (global ini + /app/uwsgi.ini via UWSGI_INI) and nginx."""
    root = tmp_path / "image"
    env = {**os.environ, **stage(root)}
    shutil.copytree(serving_registry.root, env["FORECAST_REGISTRY_DIR"])
    port = free_port()
    env.update(
        FORECAST_IMAGE_ROOT=str(root),
        FORECAST_METRICS_DIR=str(root / "tmp" / "forecast-metrics"),  # the image default, under the staged root
        NGINX_USER="root",  # no nginx user on this machine
        LISTEN_PORT=f"127.0.0.1:{port}",  # loopback only here; the image listens on 80
        PATH=f"{VENV_BIN}:{env['PATH']}",
    )
    log = (tmp_path / "uwsgi.log").open("wb")
    # What the image's /start.sh does: source prestart.sh, then supervisord runs these two.
    uwsgi = subprocess.Popen(
        ["bash", "-c", 'source "$FORECAST_IMAGE_ROOT/app/prestart.sh" && exec uwsgi --ini /etc/uwsgi/uwsgi.ini'
         .replace("/etc/uwsgi", f"{root}/etc/uwsgi")],
        env=env, cwd=root / "app", stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    nginx: subprocess.Popen[bytes] | None = None
    try:
        explain = lambda: (tmp_path / "uwsgi.log").read_text(errors="replace")[-3000:]  # noqa: E731
        wait_for(lambda: (root / "etc/nginx/nginx.conf").exists() or uwsgi.poll() is not None, 60, explain)
        nginx_binary = find_nginx()
        assert nginx_binary is not None
        nginx = subprocess.Popen(
            [nginx_binary, "-c", f"{root}/etc/nginx/nginx.conf", "-p", str(root), "-e", str(tmp_path / "nginx.log")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: status_code(url) == 200 or uwsgi.poll() is not None, 60, explain)
        yield url
    finally:
        for process, sig in ((nginx, signal.SIGQUIT), (uwsgi, signal.SIGTERM)):
            if process is not None and process.poll() is None:
                process.send_signal(sig)
        for process in (nginx, uwsgi):
            if process is not None:
                process.wait(30)
        log.close()


def status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=2) as response:
            return int(response.status)
    except Exception:
        return 0


def test_staged_image_serves_status_and_predictions(staged_image: str, tmp_path: Path) -> None:
    status = requests.get(f"{staged_image}/status", timeout=5)
    log = (tmp_path / "uwsgi.log").read_text(errors="replace")
    assert status.status_code == 200, log[-3000:]
    assert status.json()["model_version"] == "v1"
    answer = requests.post(f"{staged_image}/predict", json={"date": "2018-01-21", "store": 10, "item": 23}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["sales"] > 0
    # the effective uWSGI configuration (show-config): the image's defaults did not win
    assert "cheaper = 0" in log
    assert f"processes = {Settings.model_fields['uwsgi_processes'].default}" in log  # the FORECAST_ default
    assert "listen backlog is limited to 512 connections" in log  # UWSGI_LISTEN from prestart.sh
    assert f"ini = {tmp_path}/image/app/uwsgi.ini" in log


def test_the_image_refuses_a_deadline_that_harakiri_would_cut_short(tmp_path: Path) -> None:
    """prestart.sh runs the launcher's check: FORECAST_DEADLINE_MS=90000 stops the container before anything starts."""
    root = tmp_path / "image"
    env = {**os.environ, **stage(root), "FORECAST_IMAGE_ROOT": str(root), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env["FORECAST_DEADLINE_MS"] = "90000"
    done = subprocess.run(["bash", "-c", 'source "$FORECAST_IMAGE_ROOT/app/prestart.sh"'], env=env, cwd=root / "app",
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "FORECAST_DEADLINE_MS=90000 (90 s) must be below both FORECAST_WORKER_HARAKIRI_S=60" in done.stderr
    assert f"uwsgi_read_timeout (300 s, in {root}/app/nginx.conf)" in done.stderr
    assert "prestart.sh: bad FORECAST_* settings" in done.stderr
    assert not (root / "etc/nginx/nginx.conf").exists()  # stopped before nginx.conf was rendered
