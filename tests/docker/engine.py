"""A Docker engine for the image tests: the one running, or ``dockerd`` started (as root) and stopped after.

Called by the session fixture of ``tests/docker/`` (``make docker-test``), never by the service.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class EngineError(RuntimeError):
    """No Docker engine, and none can be started here; the message says what to do."""


def docker(*args: str, timeout_s: float = 600, check: bool = True, env: dict[str, str] | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the ``docker`` client (``env``: variables added to this process's; ``stdin``: its input); raises
    ``CalledProcessError`` (with its output) when ``check`` and it fails."""
    environment = {**os.environ, **env} if env else None
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False,
                            env=environment, input=stdin)  # fmt: skip
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return docker("info", "--format", "{{.ServerVersion}}", timeout_s=30, check=False).returncode == 0


@contextmanager
def docker_engine(state_dir: Path, start_timeout_s: float = 60) -> Iterator[None]:
    """Yield with an engine answering; a ``dockerd`` started here is stopped (SIGTERM, by pid) on exit.

    Raises :class:`EngineError` when none runs and this process cannot start one.
    """
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers; `make docker-test` starts one as root "
            "(Debian: apt-get install docker.io), or start dockerd yourself and retry"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "dockerd.log").open("ab") as log:
        process = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not engine_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (state_dir / "dockerd.log").read_text(errors="replace")[-3000:]
                raise EngineError(f"dockerd did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.2)  # polling interval of a wait-for-condition loop
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
