"""Containers of the project's image on host networking, on 127.0.0.1 and a free port each."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.docker.engine import docker
from tests.helpers import free_port, wait_for


@dataclass
class Container:
    """One ``docker run -d`` of the image; :meth:`remove` (``docker rm -f``) is the fixture's cleanup."""

    image: str
    env: dict[str, str] = field(default_factory=dict)
    volume: str | None = None
    port: int = field(default_factory=free_port)
    id: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Container:
        # LISTEN_PORT with an address: nginx listens on loopback only (host networking).
        name = f"forecast-test-{uuid.uuid4().hex[:12]}"
        options = ["--network", "host", "-e", f"LISTEN_PORT=127.0.0.1:{self.port}", "--name", name]
        # One backtest cutoff, not four: a container training its first model is ready within wait_ready on
        # 2 cores (the calibration itself is tested in the unit tier).
        env = {"FORECAST_BACKTEST_ORIGINS": "1", **self.env}
        options += [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        if self.volume:
            options += ["-v", f"{self.volume}:/var/lib/forecast/registry"]
        self.id = docker("run", "-d", *options, self.image).stdout.strip()
        return self

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds until ``/status`` answers 200 (measured from now); fails if the container exits."""
        started = time.monotonic()
        wait_for(self._ready_or_exited, timeout_s, self.logs)
        assert self.state()["Running"], f"container exited before it was ready\n{self.logs()}"
        return time.monotonic() - started

    def _ready_or_exited(self) -> bool:
        if not self.state()["Running"]:
            return True
        try:
            return requests.get(f"{self.url}/status", timeout=2).status_code == 200
        except requests.RequestException:  # refused, or slow while it starts
            return False

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(f"{self.url}/status", timeout=5).json()
        return answer

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(docker("inspect", "--format", "{{json .State}}", self.id).stdout)
        return state

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"

    def streams(self) -> tuple[str, str]:
        """The container's whole stdout and stderr, apart."""
        result = docker("logs", self.id)
        return result.stdout, result.stderr

    def stop(self, grace_s: int = 10) -> float:
        """``docker stop`` (SIGTERM, SIGKILL after ``grace_s``); seconds it took."""
        started = time.monotonic()
        docker("stop", "-t", str(grace_s), self.id, timeout_s=grace_s + 60)
        return time.monotonic() - started

    def kill(self) -> None:
        docker("kill", "--signal", "KILL", self.id)

    def remove(self) -> None:
        if self.id:
            docker("rm", "-f", "-v", self.id, check=False)


# A second model, small and quick to train in a container (one backtest cutoff): a new version for rollouts.
TRAIN_A_SMALL_MODEL = ("python", "-m", "forecast", "train", "--rounds", "50", "--seed", "7", "--backtest-origins", "1")


def run_once(image: str, volume: str, *command: str, env: dict[str, str] | None = None) -> str:
    """``docker run --rm`` a command of the image on the registry volume; its output (raises on failure)."""
    options = [arg for name, value in (env or {}).items() for arg in ("-e", f"{name}={value}")]
    volume_option = ["-v", f"{volume}:/var/lib/forecast/registry"]
    result = docker("run", "--rm", "--network", "host", *options, *volume_option, image, *command)
    return result.stdout + result.stderr


@dataclass
class Fleet:
    """The containers one test started (the ``containers`` fixture): started by :meth:`start`, all removed after."""

    image: str
    started: list[Container] = field(default_factory=list)

    def start(self, env: dict[str, str] | None = None, volume: str | None = None) -> Container:
        container = Container(self.image, env or {}, volume).start()
        self.started.append(container)
        return container

    def logs(self) -> str:
        return "\n".join(f"=== container {c.id[:12]} on {c.port} ===\n{c.logs()}" for c in self.started)

    def remove_all(self) -> None:
        for container in self.started:
            container.remove()
