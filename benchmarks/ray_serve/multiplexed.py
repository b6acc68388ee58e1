"""Ray Serve's model multiplexing serving the "Many models" scenario's models (``benchmarks/many_models.py``).

    RAY_BENCH_MODELS_PER_REPLICA=26 RAY_BENCH_LOADS_DIR=/tmp/loads \
        benchmarks/.venv-ray/bin/python benchmarks/ray_serve/multiplexed.py --port P --registry DIR

Runs in Ray's venv, in the foreground, as ``server.py`` does (the harness starts it with
``many_models.MultiplexedStack``): a private single-node Ray (127.0.0.1 only, no dashboard, 2 CPUs),
Serve's HTTP proxy on 127.0.0.1:P, and one deployment set up as Ray's documentation recommends for
many models of one shape ("Model Multiplexing", "Performance Tuning"):

* ``@serve.multiplexed(max_num_models_per_replica=N)``: a replica loads a model on its first request
  and keeps the N most recently used; Serve's router sends a request to a replica holding its model,
  named by the ``serve-multiplexed-model-id`` header;
* ``@serve.batch`` under it ("Using model multiplexing with batching"): Serve splits batches by model;
* ``max_ongoing_requests`` raised from the default 5 (an async deployment), one replica per core
  (Serve's default ``num_cpus=1`` per replica, Ray started with 2 CPUs), and ``server.py``'s ``tuned``
  settings: workers at niceness 0, no access log; ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` only with
  ``--throughput-optimized`` (the harness runs without: 124 against 162 req/s with it, in the sweep
  ``benchmarks/results/many-models-tune.md``).

A model is loaded with the project's own code, the way a mule loads one:
``Registry(dir).named(model).verify(version)`` of the model's ``production`` version (checksum,
model text, LightGBM load, smoke predictions), in a worker thread so that the replica keeps answering
for the models it holds meanwhile. Each load appends one line, ``<model> <version> <seconds>``, to
``$RAY_BENCH_LOADS_DIR/<pid>.loads``: the harness counts them.

Settings come from the environment, read when this module is imported (in the driver and in every
replica, which inherit it): ``RAY_BENCH_MODELS_PER_REPLICA`` (Ray's default 3), ``RAY_BENCH_REPLICAS``
(2), ``RAY_BENCH_MAX_ONGOING`` (64), ``RAY_BENCH_BATCH_SIZE`` (16), ``RAY_BENCH_BATCH_WAIT_S`` (0.002),
``RAY_BENCH_LOADS_DIR`` (unset: loads are not written down).

``POST /models/<name>/predict`` with one row ``{"date", "store", "item"}`` and the header
``serve-multiplexed-model-id: <name>`` answers ``{"date", "store", "item", "sales", "model_version"}``
(400 if the header names another model than the path, 422 for a row that is not one);
``GET /status`` answers 200 once a replica runs.
"""

# No `from __future__ import annotations`, as in app.py: Serve inspects the methods' real signatures.
import argparse
import asyncio
import datetime as dt
import importlib
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ray_serve.server import (  # noqa: E402  (stdlib only: no Ray yet)
    DEFAULTS,
    ForecastCluster,
    Settings,
    StopSignal,
    prepare_environment,
    serve_until_stopped,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ray Serve multiplexing the many-models scenario's models")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--registry", type=Path, required=True, help="registry with the named models")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--throughput-optimized", action=argparse.BooleanOptionalAction, default=True,
                        help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (default on)")  # fmt: skip
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    return parser.parse_args()


def settings_of(args: argparse.Namespace) -> Settings:
    """server.py's ``tuned`` settings, with throughput-optimized mode as asked."""
    tuned = DEFAULTS["tuned"]
    return Settings(args.throughput_optimized, tuned.worker_niceness, tuned.quiet)


if __name__ == "__main__":
    # Ray reads its environment when it is imported (server.py's rule): set it before the imports below.
    ARGS = parse_args()
    prepare_environment(ARGS.registry, settings_of(ARGS))

import orjson  # noqa: E402
from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

from benchmarks.ray_serve.app import InvalidInput, batched, make_rows, registry_dir  # noqa: E402
from forecast.registry import Registry  # noqa: E402  (metadata only: LightGBM comes with the first load)

if TYPE_CHECKING:
    from forecast.model import Predictor

APP_NAME = "forecast-multiplexed"
DEPLOYMENT = "ForecastMultiplexed"
MODEL_HEADER = "serve-multiplexed-model-id"  # Serve also accepts it with underscores
MODEL_PATH = re.compile(r"^/models/([a-z0-9][a-z0-9_-]{0,39})/predict$")  # forecast.registry's model names

MODELS_PER_REPLICA = int(os.environ.get("RAY_BENCH_MODELS_PER_REPLICA", "3"))
REPLICAS = int(os.environ.get("RAY_BENCH_REPLICAS", "2"))
MAX_ONGOING = int(os.environ.get("RAY_BENCH_MAX_ONGOING", "64"))
BATCH_SIZE = int(os.environ.get("RAY_BENCH_BATCH_SIZE", "16"))
BATCH_WAIT_S = float(os.environ.get("RAY_BENCH_BATCH_WAIT_S", "0.002"))
LOADS_DIR = os.environ.get("RAY_BENCH_LOADS_DIR", "")

Row = tuple[str, int, int]  # (date, store, item)
_Self = TypeVar("_Self")
_Model = TypeVar("_Model")


def multiplexed(
    max_num_models_per_replica: int,
) -> Callable[[Callable[[_Self, str], Awaitable[_Model]]], Callable[[_Self, str], Awaitable[_Model]]]:
    """``serve.multiplexed``, typed: the loader takes a model id and returns its model, cached per replica (LRU)."""

    def decorate(loader: Callable[[_Self, str], Awaitable[_Model]]) -> Callable[[_Self, str], Awaitable[_Model]]:
        cached: Callable[[_Self, str], Awaitable[_Model]] = serve.multiplexed(
            max_num_models_per_replica=max_num_models_per_replica
        )(loader)
        return cached

    return decorate


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error(status: int, message: str) -> Response:
    return json_response({"status": status, "message": message}, status)


def parse_row(raw: bytes) -> Row:
    """One ``{"date": "YYYY-MM-DD", "store": int, "item": int}`` row; raises :class:`InvalidInput`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidInput("expected one row object")
    date, store, item = body.get("date"), body.get("store"), body.get("item")
    if not isinstance(date, str) or type(store) is not int or type(item) is not int:
        raise InvalidInput("date must be a string, store and item integers")
    try:
        dt.date.fromisoformat(date)
    except ValueError as exc:
        raise InvalidInput(f"invalid date {date!r}") from exc
    if len(date) != 10:
        raise InvalidInput("dates must be YYYY-MM-DD")
    return date, store, item


def note_load(model: str, version: str, seconds: float) -> None:
    """Append one line for a load to this replica's file in ``LOADS_DIR`` (if set)."""
    if LOADS_DIR:
        with (Path(LOADS_DIR) / f"{os.getpid()}.loads").open("a") as loads:
            loads.write(f"{model} {version} {seconds:.4f}\n")


@serve.deployment(name=DEPLOYMENT, num_replicas=REPLICAS, max_ongoing_requests=MAX_ONGOING)
class ForecastMultiplexed:
    """Every named model of the registry, each replica holding at most ``MODELS_PER_REPLICA`` of them."""

    def __init__(self) -> None:
        self.registry = Registry(registry_dir())

    @multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> "Predictor":
        """``model_id``'s production version, verified as a mule verifies it (in a worker thread)."""
        started = time.perf_counter()
        predictor = await asyncio.to_thread(self._verified_production, model_id)
        note_load(model_id, predictor.version, time.perf_counter() - started)
        return predictor

    def _verified_production(self, model_id: str) -> "Predictor":
        named = self.registry.named(model_id)
        return named.verify(named.resolve("production"))

    @batched(max_batch_size=BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def predict_rows(self, rows: list[Row]) -> list[tuple[float, str]]:
        """(sales, version) per row, in one LightGBM call: Serve gives a batch the rows of one model."""
        predictor = await self.get_model(serve.get_multiplexed_model_id())
        dates, stores, items = zip(*rows, strict=True)
        sales: list[float] = predictor.predict(make_rows(list(dates), list(stores), list(items))).tolist()
        return [(value, predictor.version) for value in sales]

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        if request.method == "GET" and path == "/status":
            return json_response({"status": "Alive"})
        match = MODEL_PATH.match(path)
        if request.method != "POST" or match is None:
            return error(404, f"no route {request.method} {path}")
        if match.group(1) != serve.get_multiplexed_model_id():
            return error(400, f"the {MODEL_HEADER} header must name the path's model {match.group(1)!r}")
        try:
            date, store, item = parse_row(await request.body())
        except InvalidInput as exc:
            return error(422, str(exc))
        sales, version = await self.predict_rows((date, store, item))
        return json_response({"date": date, "store": store, "item": item, "sales": sales, "model_version": version})


def build(logging_config: dict[str, Any]) -> Any:
    """The Serve application (``ForecastMultiplexed`` bound), with ``logging_config``."""
    deployment: Any = ForecastMultiplexed  # a Deployment since @serve.deployment; mypy sees the class
    return deployment.options(logging_config=logging_config).bind()


class MultiplexedCluster(ForecastCluster):
    """server.py's private Ray cluster and proxy, serving this module's application instead of app.py's."""

    def start(self, args: argparse.Namespace, settings: Settings, stop: StopSignal) -> None:
        """Start Ray, Serve's proxy on 127.0.0.1:``args.port`` and the application (without waiting for it)."""
        # Imported by its module name, as replicas import it (this file runs as __main__).
        target = importlib.import_module("benchmarks.ray_serve.multiplexed")
        self.ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=args.num_cpus,
                      logging_level="WARNING", log_to_driver=False)  # fmt: skip
        stop.install()  # after ray.init, which installs its own SIGTERM handler
        logging_config = {"enable_access_log": False, "log_level": "WARNING"}  # tuned's quiet logs
        self.serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=logging_config)
        print(f"CONFIG models_per_replica={target.MODELS_PER_REPLICA} replicas={target.REPLICAS} "
              f"max_ongoing={target.MAX_ONGOING} batch={target.BATCH_SIZE}/{target.BATCH_WAIT_S}s "
              f"throughput_optimized={settings.throughput_optimized}", flush=True)  # fmt: skip
        self.serve.run(target.build(logging_config), name=APP_NAME, route_prefix="/", blocking=False)


def main(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT (exit 0); exit 1 if the application was not ready in time."""
    return serve_until_stopped(MultiplexedCluster(), args, settings_of(args), time.monotonic())


if __name__ == "__main__":
    sys.exit(main(ARGS))
