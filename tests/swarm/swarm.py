"""A single-node Docker Swarm running ``deploy/swarm/stack.yml``, as a user deploys it, for ``make swarm-test``.

The stack is deployed from its file unchanged, without ``publish.yml``: Swarm publishes a port on
every address of the machine, and these tests talk to 127.0.0.1 only. A client reaches the front
through an edge container instead: one nginx on the stack's (attachable) overlay network, published
on 127.0.0.1 only, passing every connection to the front service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.docker.engine import docker
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yml"
SERVICE = "forecast"

EDGE_CONF = """\
worker_processes 1;
pid /tmp/edge-nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    resolver 127.0.0.11 valid=1s ipv6=off;
    client_max_body_size 64m;
    server {
        listen 8080;
        location / {
            set $front front;
            proxy_pass http://$front:8080;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_read_timeout 300s;
        }
    }
}
"""


@contextmanager
def single_node_swarm() -> Iterator[None]:
    """The engine as a swarm manager: a swarm initialised here (and left after), or the engine's own, untouched."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state == "active":
        yield
        return
    bridge_before = docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$").stdout.strip()
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force")
        if not bridge_before:  # the bridge Swarm created for its containers' traffic out
            docker("network", "rm", "docker_gwbridge", check=False)


@dataclass(frozen=True)
class Replica:
    """One running task of the service: its container and the image it runs."""

    task: str
    container: str
    image: str

    def status(self) -> dict[str, Any]:
        """The replica's own ``GET /status`` (asked inside its container: the overlay is not the host's)."""
        answer = docker("exec", self.container, "curl", "-s", "http://127.0.0.1:80/status", timeout_s=30)
        found: dict[str, Any] = json.loads(answer.stdout)
        return found

    def healthy(self) -> bool:
        state = docker("inspect", "--format", "{{json .State}}", self.container, check=False)
        return state.returncode == 0 and json.loads(state.stdout).get("Health", {}).get("Status") == "healthy"


@dataclass(frozen=True)
class Stack:
    """The stack deployed under ``name``: its services are ``{name}_forecast`` and ``{name}_front``."""

    name: str

    @property
    def service(self) -> str:
        return f"{self.name}_{SERVICE}"

    @property
    def volume(self) -> str:
        return f"{self.name}_registry"

    @property
    def network(self) -> str:
        return f"{self.name}_forecast"

    def deploy(self, image: str) -> None:
        """``docker stack deploy`` of the stack file with ``FORECAST_IMAGE=image`` (poll the registry every 2 s)."""
        env = {"FORECAST_IMAGE": image, "FORECAST_REGISTRY_POLL_S": "2"}
        docker("stack", "deploy", "--detach=true", "--resolve-image", "never", "-c", str(STACK_FILE), self.name,
               env=env)  # fmt: skip

    def replicas(self) -> list[Replica]:
        """The service's tasks that Swarm reports running (a task with a healthcheck runs once healthy)."""
        tasks = docker("service", "ps", "-q", "--filter", "desired-state=running", self.service).stdout.split()
        found = []
        for task in tasks:
            info = json.loads(docker("inspect", "--format", "{{json .}}", task, check=False).stdout or "{}")
            status = info.get("Status", {})
            if status.get("State") == "running":
                image = info["Spec"]["ContainerSpec"]["Image"]
                found.append(Replica(task, status["ContainerStatus"]["ContainerID"], image))
        return found

    def wait_replicas(self, count: int, image: str, timeout_s: float = 240) -> list[Replica]:
        """Wait until exactly ``count`` replicas run ``image``, all healthy, none other; them."""

        def settled() -> bool:
            replicas = self.replicas()
            return len(replicas) == count and all(r.image == image and r.healthy() for r in replicas)

        wait_for(settled, timeout_s, self.explain)
        return self.replicas()

    def update_state(self) -> str:
        """Swarm's state of the service's last update ("completed", "rollback_completed", ...; "" before one)."""
        found = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", self.service).stdout.strip()
        status = json.loads(found) if found not in ("", "null") else {}
        return str(status.get("State", ""))

    def wait_update(self, states: set[str], timeout_s: float = 300) -> str:
        wait_for(lambda: self.update_state() in states, timeout_s, self.explain)
        return self.update_state()

    def explain(self) -> str:
        tasks = docker("service", "ps", "--no-trunc", self.service, check=False)
        update = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", self.service, check=False)
        logs = docker("service", "logs", "--tail", "30", self.service, check=False)
        return f"{tasks.stdout}{tasks.stderr}\nupdate: {update.stdout}\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}"

    def run_job(self, image: str, *command: str, timeout_s: float = 300) -> str:
        """A one-off Swarm job (``--mode replicated-job``) of ``image`` on the stack's registry volume: its logs."""
        job = f"{self.name}-job-{int(time.time())}"
        mount = f"type=volume,source={self.volume},target=/var/lib/forecast/registry"
        docker("service", "create", "--detach", "--name", job, "--mode", "replicated-job", "--mount", mount,
               "--restart-condition", "none", image, *command)  # fmt: skip
        try:
            wait_for(lambda: _job_state(job).startswith(("Complete", "Failed")), timeout_s, lambda: _job_state(job))
            logs = docker("service", "logs", "--raw", job)
            assert _job_state(job).startswith("Complete"), f"{_job_state(job)}\n{logs.stdout}{logs.stderr}"
            return logs.stdout + logs.stderr
        finally:
            docker("service", "rm", job, check=False)
            # Swarm keeps a finished job's container (its task history): removed here, or it holds the volume
            ended = docker("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={job}").stdout.split()
            if ended:
                docker("rm", "-f", "-v", *ended, check=False)

    def remove(self) -> None:
        """``docker stack rm``, then its network and volume once its containers are gone."""
        docker("stack", "rm", self.name, check=False)
        label = f"label=com.docker.stack.namespace={self.name}"
        wait_for(lambda: docker("ps", "-aq", "--filter", label).stdout.strip() == "", 120)
        wait_for(lambda: docker("network", "ls", "-q", "--filter", label).stdout.strip() == "", 60)
        using = ("ps", "-aq", "--filter", f"volume={self.volume}")
        wait_for(lambda: docker(*using).stdout.strip() == "", 60, lambda: docker(*using).stdout)
        docker("volume", "rm", "-f", self.volume)


def _job_state(job: str) -> str:
    """The job's task state as ``docker service ps`` says it ("Complete 2 seconds ago", "Running ...")."""
    return docker("service", "ps", "--format", "{{.CurrentState}}", job).stdout.strip()


@contextmanager
def edge(stack: Stack, image: str, folder: Path) -> Iterator[str]:
    """The edge container on 127.0.0.1 (a free port) to the stack's front; its URL, once the front answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edge.conf").write_text(EDGE_CONF)
    port = free_port()
    container = docker("run", "-d", "--network", stack.network, "-p", f"127.0.0.1:{port}:8080",
                       "-v", f"{folder / 'edge.conf'}:/etc/edge.conf:ro", "--entrypoint", "nginx", image,
                       "-g", "daemon off;", "-c", "/etc/edge.conf").stdout.strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/status"), 120, lambda: docker("logs", container, check=False).stderr)
        yield url
    finally:
        docker("rm", "-f", "-v", container, check=False)  # -v: the image's declared volume, anonymous here


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:  # the front or a replica not there yet
        return False


def memory_mib(containers: list[str]) -> list[float]:
    """Each container's memory use as ``docker stats`` reports it (its cgroup's), in MiB."""
    lines = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", *containers).stdout.splitlines()
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
    found = []
    for line in lines:
        used = line.split("/")[0].strip()
        number, unit = used[:-3], used[-3:]
        found.append(float(number) * units[unit])
    return found


def derived_image(base: str, tag: str, *lines: str) -> str:
    """An image built ``FROM base`` with ``lines`` added (a new release of the same code); its tag."""
    dockerfile = "\n".join([f"FROM {base}", f"LABEL forecast.test.swarm={tag.split(':')[-1]}", *lines]) + "\n"
    docker("build", "-t", tag, "-", stdin=dockerfile)
    return tag
