"""Start the Ray Serve comparison target in the foreground; stop it cleanly on SIGTERM/SIGINT.

    benchmarks/.venv-ray/bin/python benchmarks/ray_serve/server.py --config tutorial|tuned --port P \
        [--registry DIR] [--throughput-optimized | --no-throughput-optimized]

Starts a private single-node Ray cluster (127.0.0.1 only, no dashboard, 2 CPUs), Serve's HTTP proxy
on 127.0.0.1:P and the `forecast` application (app.py), waits until GET /status answers 200, then
prints ``READY http://127.0.0.1:P`` (and ``STARTUP_S <seconds>``) and blocks. SIGTERM or SIGINT:
serve.shutdown(), ray.shutdown() (which stops the raylet, GCS and every worker it started), exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Defaults per config (see README "Tuning"). tutorial: Ray's defaults, as `serve run` gives them
# (worker niceness 15, access logs on, logs streamed to the driver). tuned: workers at niceness 0
# like every other process on the box, no per-request access log, logs only to files.
# RAY_SERVE_THROUGHPUT_OPTIMIZED is kept only if measured better.
DEFAULTS = {
    "tutorial": {"throughput_optimized": False, "worker_niceness": None, "quiet": False},
    "tuned": {"throughput_optimized": True, "worker_niceness": 0, "quiet": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tutorial", "tuned"), required=True)
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
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args()
    started = time.monotonic()

    registry = args.registry or Path(os.environ.get("FORECAST_REGISTRY_DIR", str(ROOT / "registry")))
    # Everything below must be in the environment before Ray starts: the raylet and every worker
    # inherit it (simpler and cheaper than a runtime_env).
    os.environ["FORECAST_REGISTRY_DIR"] = str(registry.resolve())
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else internal traffic uses the host's address
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report to the Internet
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    defaults = DEFAULTS[args.config]
    throughput = defaults["throughput_optimized"] if args.throughput_optimized is None else args.throughput_optimized
    niceness = defaults["worker_niceness"] if args.worker_niceness is None else args.worker_niceness
    quiet = defaults["quiet"] if args.quiet is None else args.quiet
    if niceness is not None:
        os.environ["RAY_worker_niceness"] = str(niceness)  # noqa: SIM112  (Ray reads this exact name)
    if throughput:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        # It turns on direct ingress, whose replicas drain for 30 s on shutdown: too long here.
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    else:
        os.environ.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)
    sys.path.insert(0, str(ROOT))

    import ray
    from ray import serve

    # Imported as `benchmarks.ray_serve.app` (a namespace package under ROOT): a bare `app` would
    # clash with the project's own `app` package in the Ray workers, which have ROOT on sys.path.
    from benchmarks.ray_serve import app as forecast_app
    from benchmarks.ray_serve.stack import descendants, kill_pids

    stopping = {"flag": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["flag"] = True

    def install_handlers() -> None:
        # ray.init() installs its own SIGTERM handler (sys.exit): ours goes on after it.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    install_handlers()

    url = f"http://127.0.0.1:{args.port}"
    code = 0
    try:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=args.num_cpus,
            namespace=forecast_app.BUS_NAMESPACE,
            logging_level="WARNING",
            log_to_driver=not quiet,
        )
        install_handlers()
        logging_config = {"enable_access_log": False, "log_level": "WARNING"} if quiet else None
        serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=logging_config)
        print(
            f"CONFIG {args.config} throughput_optimized={throughput} worker_niceness="
            f"{niceness if niceness is not None else 'ray-default'} quiet={quiet}",
            flush=True,
        )
        serve.run(
            forecast_app.build(args.config, logging_config),
            name=forecast_app.APP_NAME,
            route_prefix="/",
            blocking=False,
        )
        deadline = time.monotonic() + args.ready_timeout
        while not stopping["flag"]:
            try:
                with urllib.request.urlopen(url + "/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                print(f"NOT READY after {args.ready_timeout:.0f}s", flush=True)
                code = 1
                stopping["flag"] = True
                break
            time.sleep(0.2)
        if not stopping["flag"]:
            print(f"STARTUP_S {time.monotonic() - started:.2f}", flush=True)
            print(f"READY {url}", flush=True)
        while not stopping["flag"]:
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tree = descendants(os.getpid(), include_root=False)
        try:
            serve.shutdown()
        except Exception as exc:  # keep going: ray.shutdown still has to run
            print(f"serve.shutdown failed: {exc!r}", flush=True)
        ray.shutdown()
        # ray.shutdown() stops the GCS and raylet it started, but the raylet's agents
        # (DashboardAgent, RuntimeEnvAgent) can outlive it, re-parented to init: end them too.
        forced = kill_pids(sorted(set(tree) | set(descendants(os.getpid(), include_root=False))), grace_s=5.0)
        print(f"STOPPED (forced {len(forced)} leftover pids: {forced})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
