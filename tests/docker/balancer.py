"""A Kubernetes Service in miniature: nginx in front of replicas, sending only to the ready ones.

A prober thread reads each replica's ``/status`` (the Deployment's readiness probe) and rewrites
the upstream list when readiness changes; a replica being replaced is taken out first
(:meth:`Balancer.take_out`, the endpoint removal that precedes SIGTERM). nginx reloads gracefully:
its old worker finishes what it accepted, the new one routes by the new list. Every request is
logged with the worker's pid, so a test can tell which list routed it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import requests

from launcher.stack import find_nginx
from tests.helpers import free_port, wait_for

PROBE_PERIOD_S = 0.25  # the readiness probe's period (the Deployment's is 5 s: the test would only wait longer)


@dataclass(frozen=True)
class Routed:
    """One access-log line: which nginx worker routed the request, to which replicas, with what status."""

    worker_pid: int
    status: int
    upstreams: str  # "127.0.0.1:PORT", or several "A, B" when the first refused the connection


class Balancer:
    """``with Balancer(run_dir) as lb:`` nginx on 127.0.0.1:``lb.port``; :meth:`add` replicas by port."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.port = run_dir, free_port()
        self.candidates: set[int] = set()  # replicas that may serve once ready
        self.routed: list[int] = []  # the upstream list nginx routes by now
        self.workers: dict[int, frozenset[int]] = {}  # each nginx worker's pid: the list it routes by
        self._generation = -1  # of nginx.conf, which /__generation answers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._prober = threading.Thread(target=self._probe_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Balancer:
        nginx = find_nginx()
        assert nginx is not None, "nginx is not installed"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_conf([])
        self._process = subprocess.Popen([nginx, "-c", str(self.run_dir / "nginx.conf"), "-p", str(self.run_dir)])
        wait_for(self._serves(0, set(), []), 10)
        self._prober.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._prober.join(5)
        if self._process is not None:
            self._process.send_signal(signal.SIGQUIT)
            self._process.wait(30)

    def add(self, port: int) -> None:
        """A replica the prober adds to the list once its /status answers 200."""
        with self._lock:
            self.candidates.add(port)

    def take_out(self, port: int) -> None:
        """Stop sending to ``port`` (the endpoint removal before SIGTERM), for good once this returns."""
        with self._lock:
            self.candidates.discard(port)
            self._route([p for p in self.routed if p != port])

    def wait_routed(self, ports: list[int], timeout_s: float = 60) -> None:
        wait_for(lambda: sorted(self.routed) == sorted(ports), timeout_s, lambda: f"routed: {self.routed}")

    def log(self) -> list[Routed]:
        lines = (self.run_dir / "access.log").read_text().splitlines()
        fields = (line.split(" ", 2) for line in lines)
        return [Routed(int(pid), int(status), upstreams) for pid, status, upstreams in fields]

    def _probe_forever(self) -> None:
        while not self._stop.wait(PROBE_PERIOD_S):
            with self._lock:
                ready = [port for port in sorted(self.candidates) if _ready(port)]
                if ready and ready != sorted(self.routed):  # no ready replica at all: keep the last list
                    self._route(ready)

    def _route(self, ports: list[int]) -> None:
        """Reload nginx onto ``ports``; return once the workers of the old list finished what they accepted
        and exited (until then they still accept connections). Hold the lock."""
        assert ports, "a Service with no endpoint: the test replaced its last replica"
        old_workers = self._worker_pids()
        generation = self._write_conf(ports)
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)
        wait_for(self._serves(generation, old_workers, ports), 10)
        wait_for(lambda: not any(_is_worker(pid) for pid in old_workers), 30)
        self.routed = list(ports)

    def _write_conf(self, ports: list[int]) -> int:
        self._generation += 1
        servers = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=30s; " for p in ports)
        servers = servers or "server 127.0.0.1:1 down;"  # before the first replica is ready
        conf = CONF.format(run=self.run_dir, port=self.port, servers=servers, generation=self._generation)
        (self.run_dir / "nginx.conf").write_text(conf)
        return self._generation

    def _serves(self, generation: int, old_workers: set[int], ports: list[int]) -> Callable[[], bool]:
        """Whether a new worker (not one of ``old_workers``) answers with ``generation``'s list (then noted)."""

        def check() -> bool:
            try:
                answer = requests.get(f"{self.url}/__generation", timeout=2)
            except requests.RequestException:  # nginx busy reloading: look again
                return False
            worker = int(answer.headers["X-Worker"])
            if answer.text != str(generation) or worker in old_workers:
                return False
            self.workers[worker] = frozenset(ports)
            return True

        return check

    def _worker_pids(self) -> set[int]:
        assert self._process is not None
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children").read_text().split()
        return {int(pid) for pid in children if _is_worker(int(pid))}


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/status", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _is_worker(pid: int) -> bool:
    try:
        return "worker process" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return False


CONF = """
user root;
worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format routed '$pid $status $upstream_addr';
    access_log {run}/access.log routed;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    upstream replicas {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location = /__generation {{ add_header X-Worker $pid; return 200 "{generation}"; }}
        # a refused connection is tried on the next replica (nothing was sent); a request sent is not
        location / {{ proxy_pass http://replicas; proxy_next_upstream error timeout; proxy_connect_timeout 2s; }}
    }}
}}
"""
