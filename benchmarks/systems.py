"""The systems under test, behind one small interface the scenarios use.

- ``uwsgi-mules``: this project (nginx + uWSGI workers + mules), default settings (compiled trees);
- ``uwsgi-mules-lightgbm`` / ``ray-plain-1-lightgbm``: the same scoring with LightGBM (the original
  service's runtime), in the closed loop and the batch only: what compiled trees give each stack;
- ``floor``: nginx + uWSGI with the same worker pool answering a constant (no Flask, no model);
  ``mule-floor`` the same handing each request to a mule through the product's queue, wake-up and result
  cache (:mod:`benchmarks.floors`): the limit of this design;
- ``ray-tutorial`` / ``ray-tuned``: Ray Serve with a FastAPI ingress serving the same model from
  the same registry (benchmarks/ray_serve/), replicas = mules = 2, through Serve's Python proxy;
- ``ray-plain`` / ``ray-plain-1`` / ``ray-plain-nobatch``: a bare ``__call__`` deployment behind Ray's
  HAProxy ingress, 2 replicas, 1 replica, 2 without batching (only in the suite's loopback-only
  network namespace: HAProxy binds every interface); ``ray-floor`` the same answering a constant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.floors import FLOORS
from launcher.stack import Stack
from serving.settings import Settings

HERE = Path(__file__).resolve().parent
_FIELDS = Settings.model_fields  # the defaults, whatever this process's environment says
DEFAULT_POOL = f"{_FIELDS['uwsgi_processes'].default} workers x {_FIELDS['uwsgi_threads'].default} threads"
DEFAULT_MULES = _FIELDS["mules"].default


RAY_WORKER_PORTS_END = 20_000  # Ray's workers listen on 10002-19999 (its default min/max_worker_port)


def listen_ports() -> range:
    """Where the systems' front ports are drawn from: above Ray's worker ports and outside the kernel's ephemeral
    range, where every process binding port 0 lands (Ray's own servers, while it starts). A port drawn there was
    once taken by a starting Ray before its HTTP proxy bound it (the suite read a gRPC frame as HTTP)."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(RAY_WORKER_PORTS_END, low) if low - RAY_WORKER_PORTS_END >= 1_000 else range(high + 1, 65_536)


def free_port() -> int:
    """A port of :func:`listen_ports` free now on 127.0.0.1."""
    for port in random.sample(listen_ports(), 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken: draw another
                continue
            return port
    raise RuntimeError(f"no free port in {listen_ports()} after 100 draws")


def children(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    kids: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        kids.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kids.get(current, []))
    return found


def memory_mb(pids: list[int]) -> dict[str, float]:
    """Sum of RSS and PSS (MB) over ``pids`` from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1), "processes": len(pids)}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes have used so far (/proc/<pid>/stat; gone ones count 0)."""
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """Each live process's user + system CPU seconds so far (/proc/<pid>/stat); a gone one is left out."""
    used = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": fields 3..
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return used


def cpu_used_since(before: dict[int, float]) -> float:
    """CPU seconds the processes of ``before`` (:func:`cpu_by_pid`) used since, those still alive.

    A process that ended in between counts nothing, not minus its past: summing the tree before and
    after made a verification child that exited read as negative CPU (an "idle" of -0.25 cores, below
    which the system never counted as settled).
    """
    after = cpu_by_pid(list(before))
    return sum(after[pid] - used for pid, used in before.items() if pid in after)


def thread_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds the live threads of these processes have run so far, to the nanosecond
    (``/proc/<pid>/task/*/schedstat``; :func:`cpu_seconds` counts 10 ms ticks, too coarse for one
    request of tens of ms).  Threads that ended, and processes gone, count 0."""
    nanoseconds = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                nanoseconds += int(stat.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return nanoseconds / 1e9


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class System:
    """Base: start/stop, where it listens, which processes serve and which to measure."""

    name: str
    registry: Path
    scratch: Path
    description: str = ""
    port: int = field(default_factory=free_port)
    kind: str = "model"  # "model" systems run every scenario; the floor only the closed loop
    model_processes: int = 2  # mules or replicas: the fault scenario waits for all of them
    env: dict[str, str] = field(default_factory=dict)  # more environment for the system's processes
    only: tuple[str, ...] = ()  # a variant measured in these scenarios alone (empty: every one)

    def runs(self, scenario: str) -> bool:
        """Whether this system takes part in ``scenario``."""
        return not self.only or scenario in self.only

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def serving_pids(self) -> list[int]:
        """The model processes (mules or replicas): the fault scenario kills these."""
        raise NotImplementedError

    def tree_pids(self) -> list[int]:
        raise NotImplementedError

    def harness_pids(self) -> list[int]:
        """Processes of the tree that only the benchmark needs (Ray's driver script, its reload actor)."""
        return []

    def whole(self) -> bool:
        """Every model process runs (Ray: as many replica processes as configured)."""
        try:
            return len(self.serving_pids()) >= self.model_processes
        except (OSError, ValueError, KeyError):
            return False

    def reload(self) -> float:
        """Ask for a reload of 'production'; return the seconds the call took."""
        started = time.perf_counter()
        request = urllib.request.Request(f"{self.url}/reload", method="GET")
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
        return time.perf_counter() - started


@dataclass
class UwsgiSystem(System):
    ini: Path | None = None
    stack_class: type[Stack] = Stack
    stack: Stack | None = None

    def start(self) -> None:
        env = {"FORECAST_REGISTRY_DIR": str(self.registry), **self.env}
        ini = self.ini or (HERE.parent / "uwsgi.ini")
        self.stack = self.stack_class(self.scratch / f"run-{self.name}", self.port, env, ini=ini)
        self.stack.start()

    def wait_ready(self) -> None:
        assert self.stack is not None
        self.stack.wait_ready(180)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def serving_pids(self) -> list[int]:
        return [int(m["pid"]) for m in get_json(f"{self.url}/status")["mules"]]

    def whole(self) -> bool:
        """Every mule serves: ``/status`` answers 200 (503 while one is missing or loading)."""
        try:
            get_json(f"{self.url}/status")
        except OSError:  # urllib's HTTPError for a 503 is an OSError
            return False
        return True

    def tree_pids(self) -> list[int]:
        assert self.stack is not None
        assert self.stack.uwsgi is not None
        assert self.stack.nginx is not None
        return children(self.stack.uwsgi.pid) + children(self.stack.nginx.pid)


def _ray_stack_class() -> Any:
    spec = importlib.util.spec_from_file_location("ray_stack", HERE / "ray_serve" / "stack.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RayStack


@dataclass
class RaySystem(System):
    config: str = "tuned"
    server_args: tuple[str, ...] = ()  # more flags of ray_serve/server.py (--haproxy, --replicas N)
    stack: Any = None

    def start(self) -> None:
        ray_stack = _ray_stack_class()
        log = self.scratch / f"{self.name}.log"
        self.stack = ray_stack(self.config, self.port, self.registry, log, extra_args=self.server_args, env=self.env)
        self.stack.start()

    def wait_ready(self) -> None:
        self.stack.wait_ready(300)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def serving_pids(self) -> list[int]:
        return list(self.stack.replica_pids())

    def harness_pids(self) -> list[int]:
        """``server.py`` (the driver: a real service would run ``serve run`` or a RayService) and ReloadBus."""
        from benchmarks.ray_serve.stack import cmdline

        return [self.stack.proc.pid] + [p for p in self.tree_pids() if "ReloadBus" in cmdline(p)]

    def tree_pids(self) -> list[int]:
        return list(self.stack.process_tree_pids())


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def make_systems(names: list[str], registry: Path, scratch: Path) -> list[System]:
    catalogue: dict[str, System] = {
        "uwsgi-mules": UwsgiSystem(
            "uwsgi-mules",
            registry,
            scratch,
            description=f"this project: nginx + uWSGI {DEFAULT_POOL} + {DEFAULT_MULES} mules (default settings)",
        ),
        "ray-tutorial": RaySystem(
            "ray-tutorial",
            registry,
            scratch,
            description="Ray Serve 2.60 + FastAPI, 2 replicas, per-request predict, default max_ongoing_requests (5)",
            config="tutorial",
        ),
        "ray-plain": RaySystem(
            "ray-plain",
            registry,
            scratch,
            description="Ray Serve 2.60 as its docs recommend for throughput (KubeRay's serve-high-throughput: "
            "RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1): HAProxy in front of the replicas' "
            "direct ingress, a bare __call__ (no FastAPI), @serve.batch(128, 3 ms), orjson, 2 replicas",
            config="plain",
            server_args=("--haproxy",),
        ),
        "ray-plain-1": RaySystem(
            "ray-plain-1",
            registry,
            scratch,
            description="ray-plain with 1 replica (HAProxy and Serve's controller get the other core): the best "
            "64-connection throughput of the sweep",
            config="plain",
            server_args=("--haproxy", "--replicas", "1"),
            model_processes=1,
        ),
        "ray-plain-nobatch": RaySystem(
            "ray-plain-nobatch",
            registry,
            scratch,
            description="ray-plain without @serve.batch (no batch wait: the sweep's best at 1 connection)",
            config="plain",
            server_args=("--haproxy", "--batch-size", "1"),
        ),
        "ray-tuned": RaySystem(
            "ray-tuned",
            registry,
            scratch,
            description="Ray Serve 2.60 + FastAPI, 2 replicas, @serve.batch, max_ongoing_requests raised",
            config="tuned",
        ),
        "ray-floor": RaySystem(
            "ray-floor",
            registry,
            scratch,
            description="Ray Serve 2.60 behind its HAProxy ingress, 2 replicas whose __call__ answers a constant",
            kind="floor",
            config="noop",
            server_args=("--haproxy",),
        ),
    }
    for name, floor in FLOORS.items():  # nginx + uWSGI answering a constant, with or without the mules' hand-off
        catalogue[name] = UwsgiSystem(
            name,
            registry,
            scratch,
            description=f"nginx + uWSGI {DEFAULT_POOL}"
            + (f" + {DEFAULT_MULES} mules" if name == "mule-floor" else "")
            + f", {floor.description}",
            kind="floor",
            env=floor.env,
            ini=floor.ini,
            stack_class=floor.stack_class,
        )
    for base, as_before in (("uwsgi-mules", "before issue 17"), ("ray-plain-1", "the original service")):
        catalogue[f"{base}-lightgbm"] = lightgbm_variant(catalogue[base], as_before)
    return [catalogue[name] for name in names]


def lightgbm_variant(system: System, as_whom: str) -> System:
    """``system`` scoring with LightGBM instead of compiled trees (as ``as_whom``), in the closed loop and the
    batches only: what compiled trees give that stack."""
    return dataclasses.replace(
        system,
        name=f"{system.name}-lightgbm",
        description=f"{system.name} scoring with LightGBM, as {as_whom} (FORECAST_COMPILED_TREES=false)",
        port=free_port(),
        env={**system.env, "FORECAST_COMPILED_TREES": "false"},
        only=("closed_loop", "batch"),
    )
