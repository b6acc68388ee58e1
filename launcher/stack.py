"""Start and stop nginx + uWSGI (+ mules) as child processes, as the image does.

Used by ``make serve`` (``python -m launcher``) and by the test fixtures, so
tests run exactly the configuration users run.  uWSGI gets the options the
image's global ``/etc/uwsgi/uwsgi.ini`` gives it (socket, die-on-term,
graceful shutdown on SIGTERM) on its command line, plus our ``uwsgi.ini``;
nginx gets our ``nginx.conf`` rendered for a private run directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from serving.nginx_conf import render
from serving.settings import Settings, check_uwsgi_ini

ROOT = Path(__file__).resolve().parent.parent


def empty_metrics_dir(directory: Path) -> None:
    """Create the prometheus_client multiprocess directory, without the files of an earlier run."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


class StackError(RuntimeError):
    """The stack did not start or become ready; the message carries the log tail."""


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Stack:
    """nginx + uWSGI listening on 127.0.0.1:``port``, files under ``run_dir``."""

    def __init__(
        self,
        run_dir: Path,
        port: int,
        env: dict[str, str] | None = None,
        log_to_files: bool = True,
        ini: Path = ROOT / "uwsgi.ini",
    ) -> None:
        self.ini = ini
        self.run_dir = Path(run_dir).resolve()
        self.port = port
        # each stack its own metrics directory: two stacks on one machine must not mix (or wipe) each other's
        self.env = {"FORECAST_METRICS_DIR": str(self.run_dir / "metrics"), **os.environ, **(env or {})}
        self.log_to_files = log_to_files
        self.uwsgi: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def uwsgi_log(self) -> Path:
        return self.run_dir / "uwsgi.log"

    @property
    def access_log(self) -> Path:
        """nginx's access log: one line per request (written in blocks, at least every second)."""
        return self.run_dir / "access.log"

    def settings(self) -> Settings:
        """Settings as the child processes will read them (from ``self.env``, not ours)."""
        values = {
            name.removeprefix("FORECAST_").lower(): value
            for name, value in self.env.items()
            if name.startswith("FORECAST_") and name.removeprefix("FORECAST_").lower() in Settings.model_fields
        }
        return Settings.model_validate(values)

    def start(self) -> None:
        nginx = find_nginx()
        if nginx is None:
            raise StackError("nginx is not installed (Debian: apt-get install nginx)")
        self.check_config()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        empty_metrics_dir(self.settings().metrics_dir)
        socket_path = self.run_dir / "uwsgi.sock"
        env = {**self.env, **self.settings().uwsgi_environment(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.uwsgi = self._spawn(
            [
                str(Path(sys.executable).with_name("uwsgi")),
                f"--ini={self.ini}",
                f"--socket={socket_path}",
                "--chmod-socket=660",
                "--die-on-term",
                "--hook-master-start=unix_signal:15 gracefully_kill_them_all",
                f"--pidfile={self.run_dir / 'uwsgi.pid'}",
            ],
            env,
            self.uwsgi_log,
        )  # fmt: skip
        conf = self.run_dir / "nginx.conf"
        conf.write_text(
            render(
                (ROOT / "nginx.conf").read_text(),
                {
                    "user": "user root;" if os.geteuid() == 0 else "",
                    "run_dir": str(self.run_dir),
                    "error_log": str(self.run_dir / "nginx-error.log"),
                    "listen": f"127.0.0.1:{self.port}",
                    "uwsgi_socket": str(socket_path),
                    # the access log: a file beside the others, or the terminal of `make serve`
                    "access_log": str(self.access_log) if self.log_to_files else "/dev/stdout",
                    "log_format": self.settings().log_format,
                },
            )
        )
        error_log = str(self.run_dir / "nginx-error.log")
        self.nginx = self._spawn(
            [nginx, "-c", str(conf), "-p", str(self.run_dir), "-e", error_log], env, self.run_dir / "nginx.log"
        )

    def check_config(self) -> None:
        """Raise :class:`StackError` unless the uWSGI ini starts ``FORECAST_MULES`` mules (called by :meth:`start`)."""
        try:
            check_uwsgi_ini(self.settings(), self.ini)
        except ValueError as exc:
            raise StackError(str(exc)) from exc

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Poll ``/status`` until it answers 200; raise :class:`StackError` if a process exits first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in (("uwsgi", self.uwsgi), ("nginx", self.nginx)):
                if process is None or process.poll() is not None:
                    raise StackError(f"{name} exited during start\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)  # polling interval of a wait-for-condition loop
        raise StackError(f"not ready after {timeout_s} s\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM uWSGI (graceful, mules included) and SIGQUIT nginx; SIGKILL what is left."""
        for process, sig in ((self.nginx, signal.SIGQUIT), (self.uwsgi, signal.SIGTERM)):
            if process is not None and process.poll() is None:
                process.send_signal(sig)
        for process in (self.nginx, self.uwsgi):
            if process is None:
                continue
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        for path in (self.uwsgi_log, self.run_dir / "nginx-error.log"):
            if path.exists():
                parts.append(
                    f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(parts)

    def _spawn(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C reaches only the launcher, which then stops the children in order.
        if not self.log_to_files:
            return subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
        handle = log.open("ab")
        self._logs.append(handle)
        return subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
