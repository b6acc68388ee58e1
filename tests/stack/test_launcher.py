"""``make serve`` and its launcher: nothing outlives them, and a stack left from an earlier run is named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from forecast.registry import Registry
from launcher.stack import ROOT, port_in_use
from tests.helpers import free_port, wait_for


def stack_pids(run_dir: Path) -> set[int]:
    """The uWSGI master, its workers and mules, and nginx's master and worker, from the run's pid files."""
    masters = {int((run_dir / name).read_text().split()[0]) for name in ("uwsgi.pid", "nginx.pid")}
    children = {int(pid) for m in masters for pid in Path(f"/proc/{m}/task/{m}/children").read_text().split()}
    return masters | children


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"  # gone meanwhile


class Serving:
    """A ``make serve`` or ``python -m launcher`` process, ready, with its stack's pids."""

    def __init__(
        self, command: list[str], run_dir: Path, registry: Registry, port: int | None = None, **settings: str
    ) -> None:
        self.run_dir, self.port = run_dir, port or free_port()
        env = {**os.environ, "PORT": str(self.port), "FORECAST_REGISTRY_DIR": str(registry.root), **settings}
        self.log = run_dir.with_name(f"{run_dir.name}-{self.port}.log")
        with self.log.open("wb") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> set[int]:
        wait_for(self._ready, 120, lambda: self.output())
        return stack_pids(self.run_dir)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/status", timeout=2).status_code == 200
        except requests.RequestException:  # refused, or slow while it starts
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@pytest.fixture
def launched(tmp_path: Path, serving_registry: Registry) -> Iterator[list[Serving]]:
    """Launchers started by a test; stopped (SIGTERM) after it if still running."""
    started: list[Serving] = []
    yield started
    for serving in started:
        serving.stop()


def launcher(run_dir: Path, registry: Registry, port: int | None = None, **settings: str) -> Serving:
    return Serving([sys.executable, "-m", "launcher", "--run-dir", str(run_dir)], run_dir, registry, port, **settings)


@pytest.mark.parametrize("how", ["make serve killed with SIGKILL", "the launcher killed with SIGKILL while it stops"])
def test_whatever_kills_the_launcher_its_whole_stack_dies_with_it(
    launched: list[Serving], tmp_path: Path, serving_registry: Registry, how: str
) -> None:
    run_dir = tmp_path / "run"
    if how.startswith("make serve"):
        serving = Serving(["make", "-s", "serve", f"RUN_DIR={run_dir}"], run_dir, serving_registry)
    else:
        serving = launcher(run_dir, serving_registry)
    launched.append(serving)
    pids = serving.wait_ready()
    assert len(pids) >= 6  # uWSGI master, 2 workers, 2 mules, nginx master and worker
    if how.endswith("while it stops"):
        serving.process.send_signal(signal.SIGTERM)
    serving.process.kill()
    wait_for(lambda: not alive(pids), 60, lambda: f"still running: {alive(pids)}")
    assert not port_in_use(serving.port)


def test_a_stack_left_running_and_a_busy_port_are_named_at_start(
    launched: list[Serving], tmp_path: Path, serving_registry: Registry
) -> None:
    first = launcher(tmp_path / "run", serving_registry)
    launched.append(first)
    pids = first.wait_ready()

    again = launcher(tmp_path / "run", serving_registry)  # same run directory, another port
    assert again.process.wait(60) == 1
    assert "is still running (uWSGI master pid" in again.output()
    other = launcher(tmp_path / "other", serving_registry, port=first.port)  # another directory, same port
    assert other.process.wait(60) == 1
    assert f"127.0.0.1:{first.port} is in use by another program" in other.output()
    assert alive(pids) == pids  # the running stack was left alone
    assert requests.get(f"http://127.0.0.1:{first.port}/status", timeout=5).status_code == 200


def test_a_deadline_that_harakiri_or_nginx_would_cut_short_stops_the_start(
    launched: list[Serving], tmp_path: Path, serving_registry: Registry
) -> None:
    """FORECAST_DEADLINE_MS=90000: harakiri (60 s) would kill a waiting worker instead of a 504; nothing starts."""
    refused = launcher(tmp_path / "run", serving_registry, FORECAST_DEADLINE_MS="90000")
    launched.append(refused)
    assert refused.process.wait(60) == 1
    output = refused.output()
    assert "error: FORECAST_DEADLINE_MS=90000 (90 s) must be below both FORECAST_WORKER_HARAKIRI_S=60" in output
    assert f"nginx's uwsgi_read_timeout (300 s, in {ROOT / 'nginx.conf'})" in output
    assert not (tmp_path / "run" / "uwsgi.pid").exists()  # neither uWSGI nor nginx was started
    assert not port_in_use(refused.port)
