"""A real MLflow tracking server for a test session: PyPI's ``mlflow`` from its own virtualenv (``make mlflow-deps``),
a SQLite backend and a local artifact root in a temporary directory, on 127.0.0.1 only.  It can be stopped and
started again on the same port and store (what a test of MLflow being down does)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-mlflow"
PYTHON = VENV / "bin" / "python"
START_TIMEOUT_S = 120  # a first start creates its database (migrations): ~15 s here, minutes on a loaded machine


class MlflowServer:
    """``mlflow server`` on a free port of 127.0.0.1, its store under ``directory``; :meth:`start` it, then stop."""

    def __init__(self, directory: Path) -> None:
        if not PYTHON.exists():
            raise RuntimeError(f"{VENV} is missing: run `make mlflow-deps`")
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "mlflow-server.log"
        self.artifacts = directory / "artifacts"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until ``/health`` answers (raises with its log if it does not in time)."""
        command = [str(VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
                   "--artifacts-destination", str(self.artifacts), "--workers", "1"]  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                             env={**os.environ, "MLFLOW_TRACKING_URI": ""})  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)  # polling its /health: a wait for a condition, with a deadline

    @property
    def pid(self) -> int | None:
        """The server's process (its group's leader), while it runs."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """Stop it and everything it started (its uvicorn workers: one process group)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False
