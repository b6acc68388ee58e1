"""Start and stop the Ray Serve comparison target from the benchmark harness (stdlib only).

The harness runs with the project venv, which has no Ray; this module only spawns
``benchmarks/.venv-ray/bin/python benchmarks/ray_serve/server.py`` in its own session and finds
its processes in /proc.

    stack = RayStack("tuned", port=18700, registry_dir=Path("registry"), log_path=Path("/tmp/ray.log"))
    stack.start(); stack.wait_ready()
    ... stack.url, stack.replica_pids(), stack.process_tree_pids() ...
    stack.stop()

Every Ray process (GCS, raylet, agents, controller, proxy, replicas, ...) descends from the
server and stays in its session, so ``stop()`` finds them by parent chain *and* by session id
(a process orphaned by a dying raylet is re-parented to init but keeps the session).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RAY_PYTHON = ROOT / "benchmarks" / ".venv-ray" / "bin" / "python"
SERVER = HERE / "server.py"
DEPLOYMENT = "ForecastRay"  # app.DEPLOYMENT (not imported: app.py needs Ray)


# --------------------------------------------------------------------------- /proc helpers


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, session id, state) of a process, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[3]), fields[0]


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int, include_root: bool = True) -> list[int]:
    """Pids of `root` and every process below it (live or zombie)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        info = _stat(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid != root or include_root:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return [pid for pid in found if _stat(pid) is not None]


def session_pids(sid: int) -> list[int]:
    return [pid for pid in _all_pids() if (info := _stat(pid)) is not None and info[1] == sid]


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info[2] != "Z"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def kill_pids(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM, wait up to grace_s, SIGKILL the rest. Returns pids that needed SIGKILL."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if alive(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed


# --------------------------------------------------------------------------- the stack


class RayStack:
    """The Ray Serve target: `server.py --config CONFIG --port PORT` in its own session."""

    def __init__(
        self,
        config: str,
        port: int,
        registry_dir: Path,
        log_path: Path,
        throughput_optimized: bool | None = None,
        python: Path = RAY_PYTHON,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        if config not in ("tutorial", "tuned", "plain", "noop"):
            raise ValueError(f"config must be tutorial, tuned, plain or noop, not {config!r}")
        self.config = config
        self.port = port
        self.registry_dir = Path(registry_dir)
        self.log_path = Path(log_path)
        self.throughput_optimized = throughput_optimized
        self.python = Path(python)
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})  # more environment: the driver's, which the raylet and replicas inherit
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.ready_after_s: float | None = None
        self._seen: set[int] = set()  # every pid of the tree seen so far (for stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("already started")
        if not self.python.exists():
            raise FileNotFoundError(f"{self.python} missing: run benchmarks/ray_serve/install.sh")
        args = [
            str(self.python),
            str(SERVER),
            "--config",
            self.config,
            "--port",
            str(self.port),
            "--registry",
            str(self.registry_dir),
        ]
        if self.throughput_optimized is not None:
            args.append("--throughput-optimized" if self.throughput_optimized else "--no-throughput-optimized")
        args.extend(self.extra_args)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)  # server.py sets its own
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Block until GET /status answers 200; return seconds since start()."""
        if self.proc is None or self.started_at is None:
            raise RuntimeError("start() first")
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Ray server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/status", timeout=2) as response:
                    if response.status == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        self.process_tree_pids()  # remember the tree for stop()
                        return self.ready_after_s
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray server not ready after {timeout_s:.0f}s; see {self.log_path}")
            time.sleep(0.25)

    def process_tree_pids(self) -> list[int]:
        """Every live pid of the Ray tree: the server, GCS, raylet, agents and all workers."""
        if self.proc is None:
            return []
        pids = set(descendants(self.proc.pid)) | set(session_pids(self.proc.pid))
        pids = {pid for pid in pids if alive(pid)}
        self._seen |= pids
        return sorted(pids)

    def replica_pids(self) -> list[int]:
        """Pids of the forecast deployment's ServeReplica actor processes."""
        return [pid for pid in self.process_tree_pids() if "ServeReplica:" in (c := cmdline(pid)) and DEPLOYMENT in c]

    def rss_kb(self) -> int:
        """Sum of VmRSS over the tree (over-counts shared pages; use PSS for a fair total)."""
        return sum(rss_kb(pid) for pid in self.process_tree_pids())

    def pss_kb(self) -> int:
        """Sum of PSS over the tree (shared pages divided among their users)."""
        return sum(pss_kb(pid) for pid in self.process_tree_pids())

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server (clean serve/ray shutdown), wait, then SIGKILL whatever is left."""
        if self.proc is None:
            return
        self.process_tree_pids()
        sid = self.proc.pid  # session leader: start_new_session=True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        leftovers = {pid for pid in self._seen | set(session_pids(sid)) if alive(pid)}
        # Only processes of this stack: in its session, or seen in its tree and still Ray's.
        leftovers = {pid for pid in leftovers if (_stat(pid) or (0, -1, ""))[1] == sid}
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sid, signal.SIGKILL)
        kill_pids(sorted(leftovers), grace_s=3.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RayStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
