"""Start the Ray Serve comparison target in the foreground; stop it cleanly on SIGTERM/SIGINT.

    benchmarks/.venv-ray/bin/python benchmarks/ray_serve/server.py --config tutorial|tuned --port P \
        [--registry DIR] [--throughput-optimized | --no-throughput-optimized]

Runs in Ray's venv, as a child of the harness (``stack.RayStack``). Starts a private single-node
Ray cluster (127.0.0.1 only, no dashboard, 2 CPUs), Serve's HTTP proxy
on 127.0.0.1:P and the `forecast` application (app.py), waits until GET /status answers 200, then
prints ``READY http://127.0.0.1:P`` (and ``STARTUP_S <seconds>``) and blocks. SIGTERM or SIGINT:
serve.shutdown(), ray.shutdown() (which stops the raylet, GCS and every worker it started), exit 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REQUEST_TIMEOUT_S = 5.0  # the tuned configs' end-to-end request timeout, = this project's default deadline


@dataclass(frozen=True)
class Settings:
    """How Ray runs: throughput-optimized Serve, the workers' niceness (None: Ray's 15), quiet logs, HAProxy."""

    throughput_optimized: bool
    worker_niceness: int | None
    quiet: bool
    haproxy: bool = False  # RAY_SERVE_ENABLE_HA_PROXY: HAProxy in front of the replicas' direct ingress

    @classmethod
    def of(cls, args: argparse.Namespace) -> Settings:
        """The config's defaults, overridden by the flags given."""
        defaults = DEFAULTS[args.config]
        return cls(
            defaults.throughput_optimized if args.throughput_optimized is None else args.throughput_optimized,
            defaults.worker_niceness if args.worker_niceness is None else args.worker_niceness,
            defaults.quiet if args.quiet is None else args.quiet,
            args.haproxy,
        )


# Defaults per config (see README "Tuning"). tutorial: Ray's defaults, as `serve run` gives them
# (worker niceness 15, access logs on, logs streamed to the driver). tuned: workers at niceness 0
# like every other process on the box, no per-request access log, logs only to files.
# RAY_SERVE_THROUGHPUT_OPTIMIZED is kept only if measured better.
DEFAULTS = {
    "tutorial": Settings(throughput_optimized=False, worker_niceness=None, quiet=False),
    "tuned": Settings(throughput_optimized=True, worker_niceness=0, quiet=True),
}
DEFAULTS["plain"] = DEFAULTS["noop"] = DEFAULTS["tuned"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tutorial", "tuned", "plain", "noop"), required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--registry", type=Path, default=None, help="registry dir (default $FORECAST_REGISTRY_DIR or ROOT/registry)"
    )
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument(
        "--throughput-optimized",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (default per config)",
    )
    parser.add_argument(
        "--worker-niceness", type=int, default=None, help="RAY_worker_niceness (Ray's default 15; default per config)"
    )
    parser.add_argument(
        "--quiet",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="no access log, WARNING level, no log streaming to the driver (default per config)",
    )
    parser.add_argument(
        "--haproxy",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="RAY_SERVE_ENABLE_HA_PROXY=1 (Ray's documented high-throughput ingress; binds all interfaces)",
    )
    parser.add_argument("--replicas", type=int, default=2, help="replicas of the deployment (default 2 = mules)")
    parser.add_argument("--batch-size", type=int, default=None, help="@serve.batch max size (tuned, plain; 1: off)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    return parser.parse_args()


def prepare_environment(registry: Path, settings: Settings) -> None:
    """Set what Ray's processes read from the environment; call before the first ``import ray``.

    The raylet and every worker inherit it (simpler and cheaper than a runtime_env).
    """
    os.environ["FORECAST_REGISTRY_DIR"] = str(registry.resolve())
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else internal traffic uses the host's address
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report to the Internet
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if settings.worker_niceness is not None:
        os.environ["RAY_worker_niceness"] = str(settings.worker_niceness)  # noqa: SIM112  (Ray reads this exact name)
    if settings.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        # It turns on direct ingress, whose replicas drain for 30 s on shutdown: too long here.
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    else:
        os.environ.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)
    if settings.haproxy:
        enable_haproxy(haproxy_folder())
    sys.path.insert(0, str(ROOT))


def haproxy_folder() -> Path:
    """Where this server's HAProxy keeps its configuration, admin socket and state (removed at exit)."""
    return Path(f"/tmp/ray-haproxy-{os.getpid()}")


def enable_haproxy(folder: Path) -> None:
    """Ray Serve's HAProxy ingress (KubeRay guide "serve-high-throughput"), its files in ``folder``.

    Ray starts the ``haproxy`` found on PATH (Debian's package; ``make bench-deps``). Its
    frontend takes Serve's HTTP port; its stats (8404) and metrics (9101) ports bind every
    interface, which is why the benchmark runs in a network namespace with only loopback.
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] = str(folder / "haproxy.cfg")
    os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] = str(folder / "admin.sock")
    os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] = str(folder)
    os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_FILE"] = str(folder / "server-state")


class StopSignal:
    """Notes SIGTERM and SIGINT instead of exiting, so the main loop can shut Ray down in order."""

    def __init__(self) -> None:
        self.received = False

    def install(self) -> None:
        """(Re)install the handlers: ray.init() installs its own SIGTERM handler (sys.exit)."""
        signal.signal(signal.SIGTERM, self._note)
        signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self.received = True


class ForecastCluster:
    """The private Ray cluster with Serve's proxy and the forecast app.

    Create it after :func:`prepare_environment`: it imports Ray, which reads the environment.
    """

    def __init__(self) -> None:
        import ray
        from ray import serve

        self.ray, self.serve = ray, serve

    def start(self, args: argparse.Namespace, settings: Settings, stop: StopSignal) -> None:
        """Start Ray, Serve's proxy on 127.0.0.1:``args.port`` and the app (without waiting for it)."""
        # Imported as `benchmarks.ray_serve.app` (a namespace package under ROOT): a bare `app` would
        # clash with the project's own `app` package in the Ray workers, which have ROOT on sys.path.
        from benchmarks.ray_serve import app as forecast_app

        self.ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=args.num_cpus,
            namespace=forecast_app.BUS_NAMESPACE,
            logging_level="WARNING",
            log_to_driver=not settings.quiet,
        )
        stop.install()
        logging_config = {"enable_access_log": False, "log_level": "WARNING"} if settings.quiet else None
        http: dict[str, object] = {"host": "127.0.0.1", "port": args.port}
        if args.config != "tutorial":  # a deadline as this project's FORECAST_DEADLINE_MS (5 s), then 408/504
            http["request_timeout_s"] = REQUEST_TIMEOUT_S
        self.serve.start(http_options=http, logging_config=logging_config)
        niceness = settings.worker_niceness if settings.worker_niceness is not None else "ray-default"
        print(
            f"CONFIG {args.config} throughput_optimized={settings.throughput_optimized} "
            f"worker_niceness={niceness} quiet={settings.quiet} haproxy={settings.haproxy} replicas={args.replicas}",
            flush=True,
        )
        app = forecast_app.build(args.config, logging_config, args.replicas)
        self.serve.run(app, name=forecast_app.APP_NAME, route_prefix="/", blocking=False)

    def shut_down(self) -> None:
        """Stop Serve, Ray, and any process of ours that outlived them; signals are ignored from here on."""
        from benchmarks.ray_serve.stack import descendants, kill_pids

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tree = descendants(os.getpid(), include_root=False)
        try:
            self.serve.shutdown()
        except Exception as exc:  # keep going: ray.shutdown still has to run
            print(f"serve.shutdown failed: {exc!r}", flush=True)
        self.ray.shutdown()
        # ray.shutdown() stops the GCS and raylet it started, but the raylet's agents
        # (DashboardAgent, RuntimeEnvAgent) can outlive it, re-parented to init: end them too.
        forced = kill_pids(sorted(set(tree) | set(descendants(os.getpid(), include_root=False))), grace_s=5.0)
        shutil.rmtree(haproxy_folder(), ignore_errors=True)
        print(f"STOPPED (forced {len(forced)} leftover pids: {forced})", flush=True)


def wait_ready(url: str, timeout_s: float, stop: StopSignal) -> Literal["ready", "stopped", "timed out"]:
    """Poll GET /status until it answers 200, a stop signal comes, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not stop.received:
        try:
            with urllib.request.urlopen(url + "/status", timeout=2) as response:
                if response.status == 200:
                    return "ready"
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            print(f"NOT READY after {timeout_s:.0f}s", flush=True)
            return "timed out"
        time.sleep(0.2)
    return "stopped"


def main() -> int:
    """Serve until SIGTERM or SIGINT (exit 0); exit 1 if the app was not ready in time."""
    args = parse_args()
    started = time.monotonic()
    settings = Settings.of(args)
    os.environ["RAY_BENCH_REPLICAS"] = str(args.replicas)  # app.NUM_REPLICAS, in the driver and every replica
    if args.batch_size is not None:  # app.TUNED_BATCH_SIZE; 1 = no batching, so no wait either
        os.environ["RAY_BENCH_BATCH_SIZE"] = str(args.batch_size)
        os.environ["RAY_BENCH_BATCH_WAIT_S"] = (
            "0" if args.batch_size == 1 else os.environ.get("RAY_BENCH_BATCH_WAIT_S", "0.003")
        )
    prepare_environment(
        args.registry or Path(os.environ.get("FORECAST_REGISTRY_DIR", str(ROOT / "registry"))), settings
    )
    return serve_until_stopped(ForecastCluster(), args, settings, started)


def serve_until_stopped(cluster: ForecastCluster, args: argparse.Namespace, settings: Settings, started: float) -> int:
    """Start ``cluster``, print READY once it answers, serve until SIGTERM/SIGINT (0); 1 if never ready in time."""
    stop = StopSignal()
    stop.install()
    url = f"http://127.0.0.1:{args.port}"
    try:
        cluster.start(args, settings, stop)
        readiness = wait_ready(url, args.ready_timeout, stop)
        if readiness == "timed out":
            return 1
        if readiness == "ready":
            print(f"STARTUP_S {time.monotonic() - started:.2f}", flush=True)
            print(f"READY {url}", flush=True)
        while not stop.received:
            time.sleep(0.2)
    finally:
        cluster.shut_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
