"""Ray Serve + FastAPI comparison target: the forecast API on Ray Serve, in two configurations.

``tutorial``  the style of the original Ray Serve service (seed 000): one deployment class that is
              the FastAPI ingress and holds the model (loaded in ``__init__``), pydantic request
              models, every request predicted on its own, Ray's defaults (``max_ongoing_requests``
              5), 2 replicas.
``tuned``     Ray's best honest showing: the same single deployment, ``max_ongoing_requests`` raised,
              single-row requests coalesced with ``@serve.batch`` into one numpy/LightGBM call,
              orjson parsing and rendering, batches predicted in one call, load shedding
              (``max_queued_requests``). 2 replicas (``server.py --replicas``).
``plain``     ``tuned``'s handlers behind a bare ``__call__`` taking Starlette's request (no FastAPI).
``noop``      Ray's floor: a constant for every request, no model.

Both predict with the project's own code (``forecast.registry.Registry(dir).load("production")``
and ``forecast.features.Rows``), so the numbers are the ones our service gives, bit for bit.

``/reload``: Serve's handles route a call to *one* replica, so a plain ``/reload`` would reload only
the replica that answered it. Every replica therefore long-polls a tiny named Ray actor
(:class:`ReloadBus`, ``num_cpus=0``) for a reload generation; ``/reload`` bumps the generation,
reloads its own replica, and waits until every live replica has acknowledged the new generation
(each reloads in a worker thread, then swaps its predictor), then answers ``{"model_version": v}``.
A replica started later (e.g. restarted after a crash) loads ``production`` in ``__init__`` and
starts at the current generation.

Module-level code only imports Ray/FastAPI: LightGBM is imported in the replica (``Registry.load``).
"""

# No `from __future__ import annotations`: FastAPI must see real annotations on the ingress methods.
import asyncio
import contextlib
import datetime as dt
import io
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import orjson
import ray
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, StrictInt
from ray import serve
from ray.exceptions import RayError

if TYPE_CHECKING:
    from forecast.features import Rows
    from forecast.model import Predictor

ROOT = Path(__file__).resolve().parents[2]  # /work/main: the `forecast` package
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from forecast.errors import ForecastError  # noqa: E402  # after ROOT is on the path; no LightGBM in it


def _bind_internal_grpc_to_loopback() -> None:
    """Make each replica's inter-deployment gRPC server listen on 127.0.0.1, not on [::].

    Ray Serve 2.60 binds it with a hard-coded ``"[::]:0"`` (replica.py, ``_on_initialized``) and
    has no option for it. This module is imported in every replica when its class is unpickled,
    before ``_on_initialized`` runs, so rebinding the name there is enough. Loopback is all a
    single-node cluster needs (the replica advertises the node address, 127.0.0.1).
    """
    try:
        from ray.serve._private import replica as replica_module
    except Exception:  # another Ray layout: nothing to patch
        return
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_loopback_only", False):
        return

    def add_port_loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        port: int = original(server, address)
        return port

    add_port_loopback._loopback_only = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = add_port_loopback


_bind_internal_grpc_to_loopback()

SERVICE = "kaggle-sales-forecast (Ray Serve comparison target)"
DEPLOYMENT = "ForecastRay"
APP_NAME = "forecast"
NUM_REPLICAS = int(os.environ.get("RAY_BENCH_REPLICAS", "2"))  # server.py --replicas sets it
BUS_NAME = "forecast_reload_bus"
BUS_NAMESPACE = "forecast_bench"


def registry_dir() -> Path:
    return Path(os.environ.get("FORECAST_REGISTRY_DIR", str(ROOT / "registry")))


def load_production() -> "Predictor":
    """The registry's production, as the project's mules load it: its compiled trees when it has them, unless
    ``FORECAST_COMPILED_TREES=false`` (LightGBM, as the original service)."""
    from forecast.config import ModelSettings
    from forecast.registry import Registry  # imports LightGBM: only in replicas

    return Registry(registry_dir()).load("production", compiled=ModelSettings().compiled_trees)


def make_rows(dates: object, stores: object, items: object) -> "Rows":
    from forecast.features import Rows

    return Rows.from_columns(dates, stores, items)


# --------------------------------------------------------------------------- reload broadcast


@ray.remote(num_cpus=0)
class ReloadBus:
    """Reload generation + per-replica acknowledgements. Async actor: waiters do not block it."""

    def __init__(self) -> None:
        self.generation = 0
        self.acks: dict[str, tuple[int, str, float]] = {}  # replica -> (generation, version, time)
        self._changed = asyncio.Event()

    async def current(self) -> int:
        return self.generation

    async def bump(self) -> int:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self.generation

    async def wait_change(self, seen: int, timeout_s: float = 30.0) -> int:
        if self.generation == seen:
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return self.generation

    async def ack(self, replica: str, generation: int, version: str) -> None:
        self.acks[replica] = (generation, version, time.time())

    async def forget(self, replica: str) -> None:
        self.acks.pop(replica, None)

    async def acked(self, generation: int) -> list[tuple[str, int, str]]:
        """Replicas that acknowledged `generation` or later."""
        return [(r, g, v) for r, (g, v, _t) in self.acks.items() if g >= generation]


def get_bus() -> Any:
    """A handle on the reload bus actor; the first replica to ask creates it (detached: it outlives replicas)."""
    actor_class: Any = ReloadBus  # an ActorClass since @ray.remote; mypy sees the class as written
    return actor_class.options(name=BUS_NAME, namespace=BUS_NAMESPACE, lifetime="detached", get_if_exists=True).remote()


class ReloadMixin:
    """Model holder shared by both configs: load in __init__, reload on a bus generation."""

    predictor: "Predictor"
    generation: int

    async def _init_model(self) -> None:
        self.replica = uuid.uuid4().hex[:8]
        self.bus = get_bus()
        self.generation = await self.bus.current.remote()
        self.predictor = load_production()
        await self.bus.ack.remote(self.replica, self.generation, self.predictor.version)
        self._reload_lock = asyncio.Lock()
        # Runs on the replica's user-code event loop (the one requests run on).
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                generation = await self.bus.wait_change.remote(self.generation)
                if generation > self.generation:
                    await self._reload_to(generation)
            # keep watching; a failed reload keeps the old model. What fails here: a call to the bus actor
            # (RayError: the actor died or is restarting, the call timed out) or the version's load (the
            # registry's ForecastError for a missing or corrupt version, OSError reading it). Anything else
            # is a bug, and ends the watcher loudly (Ray logs the task's exception) rather than looping on it.
            except (RayError, ForecastError, OSError):
                await asyncio.sleep(1.0)

    async def _reload_to(self, generation: int) -> str:
        async with self._reload_lock:
            if generation > self.generation:
                predictor = await asyncio.to_thread(load_production)
                self.predictor = predictor  # swap: in-flight calls finish on the old one
                self.generation = generation
                await self.bus.ack.remote(self.replica, generation, predictor.version)
        return self.predictor.version

    async def _broadcast_reload(self, timeout_s: float = 60.0) -> dict[str, Any]:
        generation = await self.bus.bump.remote()
        version = await self._reload_to(generation)
        deadline = time.monotonic() + timeout_s
        while True:
            acked = await self.bus.acked.remote(generation)
            if len(acked) >= NUM_REPLICAS or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        return {
            "model_version": version,
            "replicas": [{"replica": r, "generation": g, "model_version": v} for r, g, v in acked],
        }

    def _root(self) -> dict[str, Any]:
        return {
            "service": SERVICE,
            "model_version": self.predictor.version,
            "endpoints": ["GET /", "GET /status", "GET /reload", "POST /predict"],
        }

    def _status(self) -> dict[str, Any]:
        return {"status": "Alive", "model_version": self.predictor.version}


# --------------------------------------------------------------------------- typed decorators

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_Self = TypeVar("_Self")
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class Router(Protocol):
    """The route decorators of FastAPI's app used here, typed (mypy runs where FastAPI is not installed).

    Each registers the method as the handler of ``path`` and returns it unchanged.
    """

    def get(self, path: str) -> Callable[[_Handler], _Handler]: ...

    def post(self, path: str, *, response_model: None = None) -> Callable[[_Handler], _Handler]: ...

    def api_route(self, path: str, *, methods: list[str]) -> Callable[[_Handler], _Handler]: ...


def batched(
    max_batch_size: int, batch_wait_timeout_s: float
) -> Callable[[Callable[[_Self, list[_Item]], Awaitable[list[_Result]]]], Callable[[_Self, _Item], Awaitable[_Result]]]:
    """``serve.batch``, typed: the method is written for a list of items and returns one result per item;
    each caller passes one item and awaits its own result (Serve gathers concurrent calls into the list)."""

    def decorate(
        method: Callable[[_Self, list[_Item]], Awaitable[list[_Result]]],
    ) -> Callable[[_Self, _Item], Awaitable[_Result]]:
        batch = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        one_at_a_time: Callable[[_Self, _Item], Awaitable[_Result]] = batch(method)
        return one_at_a_time

    return decorate


# --------------------------------------------------------------------------- tutorial


class Row(BaseModel):
    date: dt.date
    store: StrictInt
    item: StrictInt


class Instances(BaseModel):
    instances: list[Row]


tutorial_api: Router = FastAPI(title=SERVICE)


@serve.deployment(num_replicas=NUM_REPLICAS)  # defaults otherwise: max_ongoing_requests=5
@serve.ingress(tutorial_api)
class ForecastTutorial(ReloadMixin):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        await self._init_model()

    def _predict_one(self, row: Row) -> float:
        rows = make_rows([row.date.isoformat()], [row.store], [row.item])
        return float(self.predictor.predict(rows)[0])

    @tutorial_api.get("/")
    async def root(self) -> dict[str, Any]:
        return self._root()

    @tutorial_api.get("/status")
    async def status(self) -> dict[str, Any]:
        return self._status()

    @tutorial_api.api_route("/reload", methods=["GET", "POST"])
    async def reload(self) -> dict[str, Any]:
        return await self._broadcast_reload()

    @tutorial_api.post("/predict", response_model=None)
    async def predict(
        self,
        body: Row | list[Row] | Instances | None = Body(None),  # noqa: B008  (FastAPI idiom)
        date: dt.date | None = Query(None),  # noqa: B008
        store: int | None = Query(None),
        item: int | None = Query(None),
    ) -> Any:
        version = self.predictor.version
        if body is None:  # legacy query form: a bare number
            if date is None or store is None or item is None:
                return JSONResponse({"detail": "date, store and item are required"}, status_code=422)
            return self._predict_one(Row(date=date, store=store, item=item))
        if isinstance(body, Row):
            sales = self._predict_one(body)
            return {**body.model_dump(mode="json"), "sales": sales, "model_version": version}
        rows = body.instances if isinstance(body, Instances) else body
        batch_sales = self.predictor.predict(
            make_rows([r.date.isoformat() for r in rows], [r.store for r in rows], [r.item for r in rows])
        )
        return {
            "predictions": [
                {**r.model_dump(mode="json"), "sales": float(s), "model_version": version}
                for r, s in zip(rows, batch_sales, strict=False)
            ]
        }


# --------------------------------------------------------------------------- tuned


class InvalidInput(ValueError):
    pass


def _columns(items: list[Any]) -> tuple[list[str], list[int], list[int]]:
    """Check rows cheaply (types only, as pydantic strict ints would) and split into columns."""
    dates, stores, item_ids = [], [], []
    for n, row in enumerate(items):
        if not isinstance(row, dict):
            raise InvalidInput(f"row {n} is not an object")
        d, s, i = row.get("date"), row.get("store"), row.get("item")
        if not isinstance(d, str) or type(s) is not int or type(i) is not int:
            raise InvalidInput(f"row {n}: date must be a string, store and item integers")
        dates.append(d)
        stores.append(s)
        item_ids.append(i)
    return dates, stores, item_ids


def _dates(dates: list[str]) -> np.ndarray:
    try:
        parsed = np.array(dates, dtype="datetime64[D]")
    except ValueError as exc:
        raise InvalidInput(f"invalid date: {exc}") from exc
    # numpy accepts a few forms ISO dates do not ("2018-01", "2018-01-01T00"): require YYYY-MM-DD.
    if any(len(d) != 10 for d in dates):
        raise InvalidInput("dates must be YYYY-MM-DD")
    return parsed


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _invalid(message: str) -> Response:
    return _json({"status": 422, "code": "invalid_input", "message": message}, 422)


tuned_api: Router = FastAPI(title=SERVICE)

TUNED_MAX_ONGOING = int(os.environ.get("RAY_BENCH_MAX_ONGOING", "256"))
TUNED_BATCH_SIZE = int(os.environ.get("RAY_BENCH_BATCH_SIZE", "128"))
TUNED_BATCH_WAIT_S = float(os.environ.get("RAY_BENCH_BATCH_WAIT_S", "0.003"))
# Serve's documented load shedding: beyond this many requests queued for the replicas, 503 at once
# (as this project's admission control does); requests wait at most REQUEST_TIMEOUT_S (server.py).
TUNED_MAX_QUEUED = int(os.environ.get("RAY_BENCH_MAX_QUEUED", "512"))


class TunedHandlers(ReloadMixin):
    """What ``tuned`` and ``plain`` answer, whichever front end routes the request to it."""

    @batched(max_batch_size=TUNED_BATCH_SIZE, batch_wait_timeout_s=TUNED_BATCH_WAIT_S)
    async def _predict_rows(self, rows: list[tuple[np.datetime64, int, int]]) -> list[float]:
        dates, stores, items = zip(*rows, strict=False)
        sales: list[float] = self.predictor.predict(
            make_rows(np.array(dates, dtype="datetime64[D]"), stores, items)
        ).tolist()
        return sales

    async def _predict(self, request: Request) -> Response:
        """A row, a list of rows, ``{"instances": [...]}`` or the legacy query form, as the project answers them.

        Single rows (and legacy ones) are batched across requests; a batch is predicted in one call.
        Invalid rows: 422; a body that is not JSON: 400.
        """
        raw = await request.body()
        if not raw:  # legacy query form: a bare number
            return await self._predict_legacy(request.query_params)
        if request.headers.get("content-type", "").startswith("text/csv"):
            return self._predict_csv(raw, request.headers.get("accept", ""))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _json({"status": 400, "code": "malformed_json", "message": "body is not JSON"}, 400)
        try:
            if isinstance(body, dict) and "instances" not in body:
                return await self._predict_single(body)
            return self._predict_batch(body)
        except InvalidInput as exc:
            return _invalid(str(exc))

    async def _predict_legacy(self, query: Mapping[str, str]) -> Response:
        """The bare number for ``?date=&store=&item=``; 422 if one is missing or invalid."""
        try:
            row = {"date": query["date"], "store": int(query["store"]), "item": int(query["item"])}
            dates, stores, items = _columns([row])
            day = _dates(dates)[0]
        except (KeyError, ValueError) as exc:
            return _invalid(f"legacy form needs date, store and item: {exc}")
        return _json(await self._predict_rows((day, stores[0], items[0])))

    async def _predict_single(self, body: dict[str, Any]) -> Response:
        """One forecast object for one row. Raises :class:`InvalidInput`."""
        dates, stores, items = _columns([body])
        day = _dates(dates)[0]
        sales = await self._predict_rows((day, stores[0], items[0]))
        return _json(
            {
                "date": dates[0],
                "store": stores[0],
                "item": items[0],
                "sales": sales,
                "model_version": self.predictor.version,
            }
        )

    def _predict_csv(self, raw: bytes, accept: str) -> Response:
        """A ``text/csv`` body (``id,date,store,item``, the Kaggle test file) read by pandas' C parser, predicted
        in one call; answered as CSV (``id,sales``, pandas' writer) when ``Accept`` asks for it, else as JSON."""
        import pandas as pd

        try:
            frame = pd.read_csv(io.BytesIO(raw), dtype={"store": "int64", "item": "int64", "date": "str"})
            days = pd.to_datetime(frame["date"], format="%Y-%m-%d").to_numpy().astype("datetime64[D]")
        except (ValueError, KeyError) as exc:
            return _invalid(f"CSV needs date, store and item columns: {exc}")
        stores, items = frame["store"].to_numpy(), frame["item"].to_numpy()
        sales = self.predictor.predict(make_rows(days, stores, items))
        if "text/csv" in accept:
            answer = (
                pd.DataFrame({"id": frame["id"], "sales": sales})
                if "id" in frame
                else pd.DataFrame({"date": frame["date"], "store": stores, "item": items, "sales": sales})
            )
            return Response(answer.to_csv(index=False), media_type="text/csv")
        version = self.predictor.version
        return _json({"predictions": [
            {"date": d, "store": s, "item": i, "sales": v, "model_version": version}
            for d, s, i, v in zip(frame["date"].tolist(), stores.tolist(), items.tolist(), sales.tolist(), strict=True)
        ]})  # fmt: skip

    def _predict_batch(self, body: object) -> Response:
        """``{"predictions": [...]}``, in order, for a list of rows or ``{"instances": [...]}``.

        Raises :class:`InvalidInput`.
        """
        rows = body["instances"] if isinstance(body, dict) else body
        if not isinstance(rows, list):
            raise InvalidInput('expected a row, a list of rows or {"instances": [...]}')
        dates, stores, items = _columns(rows)
        predictor = self.predictor
        sales = predictor.predict(make_rows(_dates(dates), stores, items)).tolist()
        version = predictor.version
        return _json(
            {
                "predictions": [
                    {"date": d, "store": s, "item": i, "sales": v, "model_version": version}
                    for d, s, i, v in zip(dates, stores, items, sales, strict=False)
                ]
            }
        )


@serve.deployment(
    num_replicas=NUM_REPLICAS, max_ongoing_requests=TUNED_MAX_ONGOING, max_queued_requests=TUNED_MAX_QUEUED
)
@serve.ingress(tuned_api)
class ForecastTuned(TunedHandlers):
    """``tuned``: the handlers behind a FastAPI ingress."""

    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        await self._init_model()

    @tuned_api.get("/")
    async def root(self) -> Response:
        return _json(self._root())

    @tuned_api.get("/status")
    async def status(self) -> Response:
        return _json(self._status())

    @tuned_api.api_route("/reload", methods=["GET", "POST"])
    async def reload(self) -> Response:
        return _json(await self._broadcast_reload())

    @tuned_api.post("/predict")
    async def predict(self, request: Request) -> Response:
        return await self._predict(request)


@serve.deployment(
    num_replicas=NUM_REPLICAS, max_ongoing_requests=TUNED_MAX_ONGOING, max_queued_requests=TUNED_MAX_QUEUED
)
class ForecastPlain(TunedHandlers):
    """``plain``: the same handlers behind a bare ``__call__`` with Starlette's request (no FastAPI routing)."""

    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits an async constructor
        await self._init_model()

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path == "/predict" and method == "POST":
            return await self._predict(request)
        if path == "/status" and method == "GET":
            return _json(self._status())
        if path == "/reload" and method in ("GET", "POST"):
            return _json(await self._broadcast_reload())
        if path == "/" and method == "GET":
            return _json(self._root())
        return _json({"status": 404, "code": "not_found", "message": f"no {method} {path}"}, 404)


@serve.deployment(num_replicas=NUM_REPLICAS, max_ongoing_requests=TUNED_MAX_ONGOING)
class RayFloor:
    """``noop``: Ray's floor, a constant for every request (no model), as the project's floor answers."""

    async def __call__(self, request: Request) -> Response:
        return Response(b"1.0", media_type="application/json")


def build(config: str, logging_config: dict[str, Any] | None = None, replicas: int = NUM_REPLICAS) -> Any:
    """The Serve application of ``config`` (tutorial|tuned) with ``replicas``, its deployment named ``DEPLOYMENT``."""
    options: dict[str, Any] = {"name": DEPLOYMENT, "num_replicas": replicas}
    if logging_config:
        options["logging_config"] = logging_config
    # Deployments since @serve.deployment; mypy sees the classes as written.
    deployments: dict[str, Any] = {"tutorial": ForecastTutorial, "tuned": ForecastTuned, "plain": ForecastPlain,
                                   "noop": RayFloor}  # fmt: skip
    if config not in deployments:
        raise ValueError(f"unknown config {config!r} ({'|'.join(deployments)})")
    return deployments[config].options(**options).bind()
