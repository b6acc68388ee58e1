"""Start and stop nginx + uWSGI (+ mules) as child processes, as the image does.

Used by ``make serve`` (``python -m launcher``) and by the test fixtures, so
tests run exactly the configuration users run.  uWSGI gets the options the
image's global ``/etc/uwsgi/uwsgi.ini`` gives it (socket, die-on-term,
graceful shutdown on SIGTERM) on its command line, plus our ``uwsgi.ini``;
nginx gets our ``nginx.conf`` rendered for a private run directory.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from serving.nginx_conf import render
from serving.settings import Settings, check_deadline, check_uwsgi_ini

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "nginx.conf"  # the template, rendered for each run directory


def empty_metrics_dir(directory: Path) -> None:
    """Create the prometheus_client multiprocess directory, without the files of an earlier run."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


class StackError(RuntimeError):
    """The stack did not start or become ready; the message says why (a log tail, a stale stack, a busy port)."""


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: signal.Signals, parent_pid: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies, whatever kills the parent.

    Linux only (``prctl``); elsewhere a no-op. The kernel follows the *thread* that forked this
    process, so a stack must be started from a thread that outlives it (the tests' and the
    launcher's main thread). Raises nothing; if the parent is already gone, ``sig`` is sent now.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    if hasattr(libc, "prctl") and libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0 and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)  # the parent died before the request took effect


def earlier_stack(run_dir: Path) -> str | None:
    """What is left running of a stack started in ``run_dir`` before (its pid files), or None."""
    left = []
    for name, pid_file in (("uWSGI master", "uwsgi.pid"), ("nginx", "nginx.pid")):
        try:
            pid = int((run_dir / pid_file).read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if name.split()[0].lower().encode() in command.lower():  # the pid is not reused by another program
            left.append(f"{name} pid {pid}")
    return ", ".join(left) or None


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


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
        """Start uWSGI and nginx; each dies with this process (SIGTERM / SIGQUIT), whatever kills it.

        Raises :class:`StackError` when nginx is missing, the uWSGI ini or nginx.conf does not match the
        settings, a stack started earlier in ``run_dir`` still runs, or the port is taken.
        """
        nginx = find_nginx()
        if nginx is None:
            raise StackError("nginx is not installed (Debian: apt-get install nginx)")
        self.check_config()
        left = earlier_stack(self.run_dir)
        if left:
            raise StackError(
                f"a stack started earlier in {self.run_dir} is still running ({left}); "
                f"stop it (kill -TERM the uWSGI master, kill -QUIT nginx) and start again"
            )
        if port_in_use(self.port):
            raise StackError(f"127.0.0.1:{self.port} is in use by another program; stop it or choose another PORT")
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
            signal.SIGTERM,  # uWSGI's graceful stop (die-on-term)
        )  # fmt: skip
        conf = self.run_dir / "nginx.conf"
        conf.write_text(
            render(
                NGINX_CONF.read_text(),
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
            [nginx, "-c", str(conf), "-p", str(self.run_dir), "-e", error_log],
            env,
            self.run_dir / "nginx.log",
            signal.SIGQUIT,  # nginx's graceful stop
        )

    def check_config(self) -> None:
        """Raise :class:`StackError` unless the uWSGI ini starts ``FORECAST_MULES`` mules and the deadline is below
        harakiri and nginx's read timeout (called by :meth:`start`)."""
        try:
            check_uwsgi_ini(self.settings(), self.ini)
            check_deadline(self.settings(), NGINX_CONF)
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

    def _spawn(
        self, command: list[str], env: dict[str, str], log: Path, on_our_death: signal.Signals
    ) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C reaches only the launcher, which then stops the children in order.
        # And the child gets ``on_our_death`` if we die without stopping it (SIGKILL, a crash).
        parent = os.getpid()
        options: dict[str, Any] = {"env": env, "cwd": ROOT, "start_new_session": True}
        options["preexec_fn"] = lambda: die_with_parent(on_our_death, parent)
        if self.log_to_files:
            handle = log.open("ab")
            self._logs.append(handle)
            options |= {"stdout": handle, "stderr": subprocess.STDOUT}
        return subprocess.Popen(command, **options)
