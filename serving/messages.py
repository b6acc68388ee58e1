"""The messages between web workers and mules: the whole contract, in one place.

Six kinds of bytes cross the process boundary:

* a **job** (worker -> uWSGI queue -> mule): rows to score, a job id, the
  address to notify, a deadline and the attempt number;
* a **result** (mule -> uWSGI result cache, key = job id): predictions or an
  error, with the model version and the mule that produced it;
* a **notice** (mule -> the worker thread's datagram sockets): "done" to the
  job's ``reply_to`` address, which the worker sleeps on, and "claimed by mule
  pid P" to :func:`claims_address`, which it only reads when it wakes anyway,
  so it can tell when the mule holding its job has died;
* a **control** message (worker -> one mule with ``uwsgi.mule_msg``): wake up,
  or load a model version;
* a **heartbeat** (mule -> uWSGI state cache, key :func:`heartbeat_key`): the
  mule's pid, state and model version, with one rule for "fresh" and one for
  "serving" that every reader uses;
* **load markers** (mule -> state cache, :func:`loading_key`, :func:`loaded_key`,
  :func:`poisoned_key`): which version a mule is loading, which it last loaded, and
  which killed a mule while it loaded; the cache outlives a mule, so its respawn reads them.

Each mule's **awake flag** is one byte of uWSGI's shared area
(:func:`awake_flag`), written only by its mule and read by every worker without
a lock, so workers wake only sleeping mules.  (In the cache, behind its lock,
these reads cost two semaphore syscalls per request and made the mules wait.)

Binary messages are packed with :mod:`struct`, rows and predictions with numpy,
all in **little-endian** byte order, with a magic prefix and a format version, so a
mismatch is caught instead of misread.  Every decoder raises :class:`MessageError`.
"""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

RESULT_CACHE = "results"  # job id hex -> encoded Result
STATE_CACHE = "state"  # heartbeat_key -> a mule's encoded Heartbeat
FLAGS_AREA = 0  # uWSGI shared area id of the awake flags (uwsgi.ini: sharedarea = 1, one 4 KiB page)
# Values of a mule's awake flag; 0 (the area starts zeroed) means the mule has not said yet.
AWAKE, ASLEEP, NOT_SERVING = ord("1"), ord("0"), ord("x")

# Rows and predictions on the wire: little-endian whatever the machine.
ROW_DTYPE = np.dtype("<i4")  # day (days since 1970-01-01), store, item: three per row
PREDICTION_DTYPE = np.dtype("<f8")
ROW_BYTES = 3 * ROW_DTYPE.itemsize
_ONE_ROW = struct.Struct("<3i")
PREDICTION_BYTES = PREDICTION_DTYPE.itemsize
MAX_ADDRESS_BYTES = 100  # sun_path is 108 bytes, and claims_address() adds 7
UWSGI_QUEUE_ITEM_HEADER_BYTES = 16  # uWSGI stores size + timestamp in each queue slot

# magic, format, attempt, id, deadline, address length, row count, model name length, version length, flags,
# outputs length
_JOB = struct.Struct("<2sBB16sdHIBBBB")
# magic, format, ok, id, mule id, mule pid, version length, flags, output count (a uint16 width each follows)
_RESULT = struct.Struct("<2sBB16sHIHBB")
_WIDTH = struct.Struct("<H")
_SHADOW = struct.Struct("<2sBdBBBI")  # magic, format, deadline, model length, version length, production length, rows
_NOTICE = struct.Struct("<c16sI")  # kind, job id, mule pid
_JOB_MAGIC, _RESULT_MAGIC, _SHADOW_MAGIC, _FORMAT = b"FJ", b"FR", b"FS", 5
_LOADED = 1  # a Result flag: the mule loaded the job's model version to score it
_UNLOADABLE = 2  # a Result flag: the error is that the model version does not load
_SPARE = 2  # a Job flag: score it only when no other job waits (realised accuracy: app/accuracy.py)
MAX_OUTPUTS_WIDTH = 16  # values per row of a result with outputs (Job.outputs) at most, the sales included
MAX_NAME_BYTES = 64  # a model name, a version or a job's outputs (their names joined by commas), on the wire
_HEARTBEAT_FORMAT = 1

NOTICE_CLAIMED = b"C"
NOTICE_DONE = b"D"
CONTROL_WAKE = b"W"
CONTROL_RELOAD = b"R"


def heartbeat_key(mule_id: int) -> str:
    """State-cache key of a mule's heartbeat."""
    return f"mule:{mule_id}"


ROUTES_KEY = "routes"  # state-cache key of the Routes this pod serves
MLFLOW_KEY = "mlflow"  # state-cache key of the pod's SyncState with MLflow


def loading_key(mule_id: int) -> str:
    """State-cache key: the ``model/version`` mule ``mule_id`` is loading now (set before, cleared after)."""
    return f"loading:{mule_id}"


def loaded_key(mule_id: int) -> str:
    """State-cache key: the last version of the default model mule ``mule_id`` loaded and verified."""
    return f"loaded:{mule_id}"


def poisoned_key(model: str, version: str) -> str:
    """State-cache key, present when a mule died while loading ``model/version``: no mule loads it again."""
    return f"poisoned:{model}/{version}"


def awake_flag(mule_id: int) -> int:
    """Offset of a mule's awake flag in the shared area: AWAKE while it drains the queue,
    ASLEEP when it may sleep (wake it for new jobs), NOT_SERVING while it has no model (do not
    wake it for jobs).  A byte is written whole, so a reader never sees half a value."""
    return mule_id


def claims_address(reply_to: bytes) -> bytes:
    """Where a mule sends "claimed" notices for a job answered at ``reply_to``."""
    return reply_to + b".claims"


class MessageError(ValueError):
    """Bytes that are not a message of the expected kind and format."""


def max_rows_per_job(queue_slot_bytes: int) -> int:
    """The most rows one job may carry so that it fits in one uWSGI queue slot."""
    room = queue_slot_bytes - UWSGI_QUEUE_ITEM_HEADER_BYTES - _JOB.size - MAX_ADDRESS_BYTES - 3 * MAX_NAME_BYTES
    return room // ROW_BYTES


def max_rows_per_result(cache_block_bytes: int, max_version_bytes: int = 64, width: int = 1) -> int:
    """The most rows one result may carry so that it fits in one cache block (``width`` values per row: the sales
    and at most ``width - 1`` outputs, a uint16 width each in the header)."""
    header = _RESULT.size + max_version_bytes + _WIDTH.size * (width - 1)
    return (cache_block_bytes - header) // (PREDICTION_BYTES * width)


# -- rows and predictions -------------------------------------------------------------------


def encode_rows(days: Any, stores: Any, items: Any) -> bytes:
    """Three equal-length integer columns (arrays or lists) as a job's row bytes: (day, store, item) per
    row, little-endian int32."""
    if len(days) == 1:  # most requests: struct is several times cheaper than numpy for one row
        return _ONE_ROW.pack(int(days[0]), int(stores[0]), int(items[0]))
    packed = np.empty((len(days), 3), dtype=ROW_DTYPE)
    packed[:, 0], packed[:, 1], packed[:, 2] = days, stores, items
    return packed.tobytes()


def decode_rows(data: bytes) -> np.ndarray:
    """A job's (or a batch of jobs') row bytes as an ``(n, 3)`` int32 array: day, store, item per row.

    Raises :class:`MessageError` when the bytes are not whole rows.
    """
    if len(data) % ROW_BYTES:
        raise MessageError("rows: not a whole number of rows")
    return np.frombuffer(data, dtype=ROW_DTYPE).reshape(-1, 3)


def encode_predictions(sales: np.ndarray) -> bytes:
    """Predictions as a result's bytes: little-endian float64, one per row."""
    return sales.astype(PREDICTION_DTYPE, copy=False).tobytes()


def prediction_array(data: bytes) -> np.ndarray:
    """A result's predictions as a float64 array (a view of ``data``, native byte order)."""
    return np.frombuffer(data, dtype=PREDICTION_DTYPE).astype(np.float64, copy=False)


# -- jobs and results -------------------------------------------------------------------------


def _name(value: str) -> bytes:
    data = value.encode()
    if len(data) > MAX_NAME_BYTES:
        raise MessageError(f"name too long for the wire: {value[:20]!r}...")
    return data


@dataclass(frozen=True)
class Job:
    """Rows of one model version to score, sent through the uWSGI queue."""

    id: bytes  # 16 bytes; its hex is the result's cache key
    reply_to: bytes  # abstract AF_UNIX address of the waiting worker thread
    deadline: float  # time.time() after which nobody waits for the result
    rows: bytes  # encode_rows() output
    model: str
    version: str
    attempt: int = 1
    # The model's per-row outputs to answer after the sales, by name (forecast.scoring.Scorer.output), in order.
    outputs: tuple[str, ...] = ()
    spare: bool = False  # score it in the mule's spare time: after every job without this flag

    @property
    def key(self) -> str:
        return self.id.hex()

    @property
    def row_count(self) -> int:
        return len(self.rows) // ROW_BYTES

    def retried(self) -> Job:
        """The same job, pushed again after the mule holding it died."""
        return Job(self.id, self.reply_to, self.deadline, self.rows, self.model, self.version, self.attempt + 1,
                   self.outputs, self.spare)  # fmt: skip

    def encode(self) -> bytes:
        model, version = _name(self.model), _name(self.version)
        outputs = _name(",".join(self.outputs)) if self.outputs else b""
        header = _JOB.pack(_JOB_MAGIC, _FORMAT, self.attempt, self.id, self.deadline, len(self.reply_to),
                           self.row_count, len(model), len(version), _SPARE if self.spare else 0,
                           len(outputs))  # fmt: skip
        return header + self.reply_to + model + version + outputs + self.rows

    @classmethod
    def decode(cls, data: bytes) -> Job:
        """Raises :class:`MessageError` for anything but a whole job."""
        if len(data) < _JOB.size:
            raise MessageError("job: too short")
        magic, fmt, attempt, job_id, deadline, address_len, rows, model_len, version_len, flags, outputs_len = (
            _JOB.unpack_from(data)
        )
        if (magic, fmt) != (_JOB_MAGIC, _FORMAT):
            raise MessageError(f"job: bad magic or format {magic!r}/{fmt}")
        model_at = _JOB.size + address_len
        version_at = model_at + model_len
        outputs_at = version_at + version_len
        start = outputs_at + outputs_len
        if len(data) != start + rows * ROW_BYTES:
            raise MessageError("job: length does not match its row count")
        model, version = bytes(data[model_at:version_at]).decode(), bytes(data[version_at:outputs_at]).decode()
        outputs = tuple(bytes(data[outputs_at:start]).decode().split(",")) if outputs_len else ()
        return cls(job_id, bytes(data[_JOB.size : model_at]), deadline, bytes(data[start:]), model, version, attempt,
                   outputs, bool(flags & _SPARE))  # fmt: skip


@dataclass(frozen=True)
class Result:
    """A job's outcome, stored in the uWSGI result cache under the job's key."""

    job_id: bytes
    mule_id: int
    mule_pid: int
    model_version: str
    predictions: bytes = b""  # encode_predictions() output, when ok: ``width`` float64s per row
    error: str = ""  # message safe for clients, when not ok
    loaded: bool = False  # the mule loaded the model version to score this job (the request waited for it)
    unloadable: bool = False  # the error says the model version does not load (not that predict failed)
    widths: tuple[int, ...] = ()  # values per row of each of the job's outputs (Job.outputs), after the sales

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def width(self) -> int:
        """Values per row: the sales, then each output's."""
        return 1 + sum(self.widths)

    def sales_array(self) -> np.ndarray:
        """Each row's forecast."""
        values = prediction_array(self.predictions)
        return values if not self.widths else values.reshape(-1, self.width)[:, 0]

    def output_arrays(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The job's outputs (``names``: its ``Job.outputs``), each ``(rows, its width)``.

        Raises :class:`MessageError` when the result does not hold as many outputs as ``names``."""
        if len(names) != len(self.widths):
            raise MessageError(f"result: {len(self.widths)} outputs for the {len(names)} asked ({','.join(names)})")
        if not names:  # most results: the sales alone
            return {}
        values = prediction_array(self.predictions).reshape(-1, self.width)
        edges = np.cumsum((1, *self.widths)).tolist()
        return {name: values[:, a:b] for name, a, b in zip(names, edges[:-1], edges[1:], strict=True)}

    def encode(self) -> bytes:
        version = self.model_version.encode()
        flags = (_LOADED if self.loaded else 0) | (_UNLOADABLE if self.unloadable else 0)
        header = _RESULT.pack(_RESULT_MAGIC, _FORMAT, self.ok, self.job_id, self.mule_id, self.mule_pid, len(version),
                              flags, len(self.widths))  # fmt: skip
        widths = b"".join(_WIDTH.pack(width) for width in self.widths)
        return header + version + widths + (self.predictions if self.ok else self.error.encode())

    @classmethod
    def decode(cls, data: bytes) -> Result:
        """Raises :class:`MessageError` for anything but a whole result."""
        if len(data) < _RESULT.size:
            raise MessageError("result: too short")
        magic, fmt, ok, job_id, mule_id, mule_pid, version_len, flags, outputs = _RESULT.unpack_from(data)
        if (magic, fmt) != (_RESULT_MAGIC, _FORMAT):
            raise MessageError(f"result: bad magic or format {magic!r}/{fmt}")
        widths_at = _RESULT.size + version_len
        start = widths_at + outputs * _WIDTH.size
        version = bytes(data[_RESULT.size : widths_at]).decode()
        widths = tuple(width for (width,) in _WIDTH.iter_unpack(data[widths_at:start])) if outputs else ()
        body = bytes(data[start:])
        loaded = bool(flags & _LOADED)
        if ok:
            if len(widths) != outputs or 0 in widths or len(body) % (PREDICTION_BYTES * (1 + sum(widths))):
                raise MessageError("result: predictions are not whole rows of float64s")
            return cls(job_id, mule_id, mule_pid, version, predictions=body, loaded=loaded, widths=widths)
        error = body.decode(errors="replace") or "unknown error"
        return cls(job_id, mule_id, mule_pid, version, error=error, loaded=loaded, unloadable=bool(flags & _UNLOADABLE))


@dataclass(frozen=True)
class ShadowJob:
    """Rows a ``shadow`` version scores after their answer was sent, to be compared with production's.

    Sent to one mule with ``uwsgi.mule_msg`` (never through the queue, so it cannot delay a job);
    the mule scores it only when its queue is empty, and nobody waits for it.
    """

    deadline: float  # after this, drop it unscored (counted)
    model: str
    version: str  # the shadow version
    production: str  # the version whose predictions ride along
    rows: bytes  # encode_rows() output
    predictions: bytes  # production's, encode_predictions() output, one per row

    def encode(self) -> bytes:
        model, version, production = _name(self.model), _name(self.version), _name(self.production)
        count = len(self.rows) // ROW_BYTES
        header = _SHADOW.pack(_SHADOW_MAGIC, _FORMAT, self.deadline, len(model), len(version), len(production), count)
        return header + model + version + production + self.rows + self.predictions

    @classmethod
    def decode(cls, data: bytes) -> ShadowJob:
        """Raises :class:`MessageError`."""
        if len(data) < _SHADOW.size or data[:2] != _SHADOW_MAGIC:
            raise MessageError("shadow job: too short or bad magic")
        _, fmt, deadline, model_len, version_len, production_len, count = _SHADOW.unpack_from(data)
        at = [_SHADOW.size, _SHADOW.size + model_len]
        at += [at[1] + version_len, at[1] + version_len + production_len]
        rows_end = at[3] + count * ROW_BYTES
        if fmt != _FORMAT or len(data) != rows_end + count * PREDICTION_BYTES:
            raise MessageError("shadow job: bad format or length")
        model, version, production = (bytes(data[a:b]).decode() for a, b in itertools.pairwise(at))
        return cls(deadline, model, version, production, bytes(data[at[3] : rows_end]), bytes(data[rows_end:]))


def is_job(message: bytes) -> bool:
    """Whether a mule message is a job forwarded to this mule (it holds the job's model)."""
    return message[:2] == _JOB_MAGIC


def is_shadow_job(message: bytes) -> bool:
    return message[:2] == _SHADOW_MAGIC


# -- notices ----------------------------------------------------------------------------------


class Notice(NamedTuple):
    """A mule telling a waiting worker thread about one of its jobs."""

    kind: bytes  # NOTICE_CLAIMED or NOTICE_DONE
    job_id: bytes
    mule_pid: int

    def encode(self) -> bytes:
        return _NOTICE.pack(self.kind, self.job_id, self.mule_pid)

    @classmethod
    def decode(cls, data: bytes) -> Notice:
        """Raises :class:`MessageError`."""
        if len(data) != _NOTICE.size:
            raise MessageError("notice: wrong length")
        kind, job_id, pid = _NOTICE.unpack(data)
        if kind not in (NOTICE_CLAIMED, NOTICE_DONE):
            raise MessageError(f"notice: unknown kind {kind!r}")
        return cls(kind, job_id, pid)


NOTICE_BYTES = _NOTICE.size


# -- control messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRequest:
    """Ask one mule to load a model version; it answers with a :class:`Result` (no predictions)."""

    job_id: bytes
    reply_to: bytes
    version: str
    deadline: float
    model: str

    def encode(self) -> bytes:
        body = {"id": self.job_id.hex(), "reply_to": self.reply_to.hex(), "version": self.version,
                "deadline": self.deadline, "model": self.model}  # fmt: skip
        return CONTROL_RELOAD + json.dumps(body).encode()

    @classmethod
    def decode(cls, data: bytes) -> LoadRequest:
        """Raises :class:`MessageError`."""
        if data[:1] != CONTROL_RELOAD:
            raise MessageError("control: not a reload")
        try:
            body: dict[str, Any] = json.loads(data[1:])
            return cls(bytes.fromhex(body["id"]), bytes.fromhex(body["reply_to"]), str(body["version"]),
                       float(body["deadline"]), str(body["model"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"control: bad reload message ({exc.__class__.__name__})") from exc


# -- heartbeats -------------------------------------------------------------------------------


class MuleState(StrEnum):
    """What a mule says it is doing."""

    LOADING = "loading"  # loading a model: its first, or a new one during /reload (it keeps the old meanwhile)
    READY = "ready"  # scoring with its model
    FAILED = "failed"  # holds no model: the version it was given does not load


@dataclass(frozen=True)
class Heartbeat:
    """A mule's last word on itself, written to the state cache every ``FORECAST_MULE_HEARTBEAT_S``.

    The two judgements every reader makes (``/status``, the metrics, the admission of
    requests) are made here and nowhere else: :meth:`fresh` and :meth:`serving`.
    """

    mule_id: int
    pid: int
    state: MuleState
    model_version: str | None  # the model it holds (during a reload: the old one, until it swaps)
    sent_at: float  # time.time() when written
    started_at: float
    jobs_done: int
    error: str | None = None  # why the last load failed
    held: tuple[tuple[str, str], ...] = ()  # every (model, version) it holds now

    def age_s(self, now: float) -> float:
        return now - self.sent_at

    def fresh(self, now: float, stale_after_s: float) -> bool:
        """Written within ``stale_after_s``: the mule's loop is alive (a hung or stopped mule is not)."""
        return self.age_s(now) <= stale_after_s

    def serving(self, now: float, stale_after_s: float) -> bool:
        """Fresh and holding a model: jobs pushed now will be scored.

        A mule loading a new version during ``/reload`` still holds the old one and scores
        again as soon as it has swapped, so it serves; one with no model, or a stale
        heartbeat, does not.
        """
        return self.model_version is not None and self.fresh(now, stale_after_s)

    def encode(self) -> bytes:
        return json.dumps({
            "format": _HEARTBEAT_FORMAT, "id": self.mule_id, "pid": self.pid, "state": self.state.value,
            "model_version": self.model_version, "heartbeat": self.sent_at, "started": self.started_at,
            "jobs_done": self.jobs_done, "error": self.error, "held": [list(pair) for pair in self.held],
        }).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        """Raises :class:`MessageError` for anything but a whole heartbeat of this format."""
        try:
            body: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise MessageError("heartbeat: not JSON") from exc
        if not isinstance(body, dict) or body.get("format") != _HEARTBEAT_FORMAT:
            raise MessageError("heartbeat: not a heartbeat of this format")
        try:
            version, error = body["model_version"], body["error"]
            held = tuple((str(model), str(held_version)) for model, held_version in body["held"])
            return cls(int(body["id"]), int(body["pid"]), MuleState(body["state"]),
                       None if version is None else str(version), float(body["heartbeat"]), float(body["started"]),
                       int(body["jobs_done"]), None if error is None else str(error), held)  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"heartbeat: unreadable ({exc.__class__.__name__})") from exc


# -- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRoute:
    """Which versions of one model score which rows on this pod (as last rolled out)."""

    production: str
    canary: str | None = None
    canary_weight: int = 0  # percent of series (store, item) the canary scores
    shadow: str | None = None
    shadow_weight: int = 0  # percent of rows also scored by the shadow, after the answer


@dataclass(frozen=True)
class Routes:
    """What the pod serves, published by its rollout (``app/rollout.py``) in the state cache (``ROUTES_KEY``)."""

    models: dict[str, ModelRoute]
    generation: int = 0
    refused: dict[str, str] | None = None  # "model/version" -> why this pod does not serve it
    rolling: str | None = None  # "model version -> mule N" while a rollout is in progress

    def encode(self) -> bytes:
        return json.dumps({
            "format": _HEARTBEAT_FORMAT, "generation": self.generation, "refused": self.refused or {},
            "rolling": self.rolling, "models": {name: vars(route) for name, route in self.models.items()},
        }).encode()  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Routes:
        """Raises :class:`MessageError`."""
        try:
            body: dict[str, Any] = json.loads(data)
            models = {str(name): ModelRoute(**route) for name, route in body["models"].items()}
            return cls(models, int(body["generation"]), dict(body["refused"]), body["rolling"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"routes: unreadable ({exc.__class__.__name__})") from exc


# -- MLflow sync ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    """How the pod's following of MLflow goes (``app/mlflow_follow.py``), in the state cache (``MLFLOW_KEY``).

    Times are Unix seconds (None: never); ``failures`` counts the passes since the last one that
    reached MLflow; ``refused`` is what MLflow names that this pod does not serve, and why.
    """

    tracking_uri: str
    last_success: float | None = None
    last_attempt: float | None = None
    failures: int = 0
    last_error: str | None = None
    refused: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> SyncState:
        """Raises :class:`MessageError`."""
        try:
            body: dict[str, Any] = json.loads(data)
            return cls(str(body["tracking_uri"]), body["last_success"], body["last_attempt"], int(body["failures"]),
                       body["last_error"], dict(body["refused"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"MLflow sync state: unreadable ({exc.__class__.__name__})") from exc
