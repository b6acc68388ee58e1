"""The messages between web workers and mules: the whole contract, in one place.

Four kinds of bytes cross the process boundary:

* a **job** (worker -> uWSGI queue -> mule): rows to score, a job id, the
  address to notify, a deadline and the attempt number;
* a **result** (mule -> uWSGI cache, key = job id): predictions or an error,
  with the model version and the mule that produced it;
* a **notice** (mule -> the worker thread's datagram sockets): "done" to the
  job's ``reply_to`` address, which the worker sleeps on, and "claimed by mule
  pid P" to :func:`claims_address`, which it only reads when it wakes anyway,
  so it can tell when the mule holding its job has died;
* a **control** message (worker -> one mule with ``uwsgi.mule_msg``): wake up,
  or reload a model version.

The uWSGI cache names and keys both sides use are defined here too (a mule's
heartbeat, :func:`heartbeat_key`), and each mule's **awake flag**: one byte
of uWSGI's shared area (:func:`awake_flag`), written only by its mule and
read by every worker without a lock, so workers wake only sleeping mules.
(In the cache, behind its lock, these reads cost two semaphore syscalls per
request and made the mules wait for the lock.)

Everything is packed with :mod:`struct` in little-endian order with a magic
prefix and a format version, so a mismatch is caught instead of misread.
This module is stdlib only: the web worker does not need numpy to use it.
"""

from __future__ import annotations

import json
import struct
from array import array
from dataclasses import dataclass
from typing import Any

RESULT_CACHE = "results"  # job id hex -> encoded Result
STATE_CACHE = "state"  # heartbeat_key -> a mule's JSON heartbeat
FLAGS_AREA = 0  # uWSGI shared area id of the awake flags (uwsgi.ini: sharedarea = 1, one 4 KiB page)
# Values of a mule's awake flag; 0 (the area starts zeroed) means the mule has not said yet.
AWAKE, ASLEEP, NOT_SERVING = ord("1"), ord("0"), ord("x")

ROW_BYTES = 12  # day (int32 days since 1970-01-01), store (int32), item (int32)
PREDICTION_BYTES = 8  # float64
MAX_ADDRESS_BYTES = 100  # sun_path is 108 bytes, and claims_address() adds 7
UWSGI_QUEUE_ITEM_HEADER_BYTES = 16  # uWSGI stores size + timestamp in each queue slot

_JOB = struct.Struct("<2sBB16sdHI")  # magic, format, attempt, id, deadline, address length, row count
_RESULT = struct.Struct("<2sBB16sHIH")  # magic, format, ok, id, mule id, mule pid, version length
_NOTICE = struct.Struct("<c16sI")  # kind, job id, mule pid
_JOB_MAGIC, _RESULT_MAGIC, _FORMAT = b"FJ", b"FR", 1

NOTICE_CLAIMED = b"C"
NOTICE_DONE = b"D"
CONTROL_WAKE = b"W"
CONTROL_RELOAD = b"R"


def heartbeat_key(mule_id: int) -> str:
    """State-cache key of a mule's JSON heartbeat (id, pid, state, model version, time)."""
    return f"mule:{mule_id}"


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
    room = queue_slot_bytes - UWSGI_QUEUE_ITEM_HEADER_BYTES - _JOB.size - MAX_ADDRESS_BYTES
    return room // ROW_BYTES


def max_rows_per_result(cache_block_bytes: int, max_version_bytes: int = 64) -> int:
    """The most predictions one result may carry so that it fits in one cache block."""
    return (cache_block_bytes - _RESULT.size - max_version_bytes) // PREDICTION_BYTES


def pack_rows(days: list[int], stores: list[int], items: list[int]) -> bytes:
    """Interleave three equal-length columns into the job's row bytes."""
    packed = array("i", [0]) * (3 * len(days))
    packed[0::3], packed[1::3], packed[2::3] = array("i", days), array("i", stores), array("i", items)
    return packed.tobytes()


@dataclass(frozen=True)
class Job:
    """Rows to score, sent through the uWSGI queue."""

    id: bytes  # 16 random bytes; its hex is the result's cache key
    reply_to: bytes  # abstract AF_UNIX address of the waiting worker thread
    deadline: float  # time.time() after which nobody waits for the result
    rows: bytes  # pack_rows() output
    attempt: int = 1

    @property
    def key(self) -> str:
        return self.id.hex()

    @property
    def row_count(self) -> int:
        return len(self.rows) // ROW_BYTES

    def encode(self) -> bytes:
        header = _JOB.pack(
            _JOB_MAGIC, _FORMAT, self.attempt, self.id, self.deadline, len(self.reply_to), self.row_count
        )
        return header + self.reply_to + self.rows

    @classmethod
    def decode(cls, data: bytes) -> Job:
        """Raises :class:`MessageError` for anything but a whole job."""
        if len(data) < _JOB.size:
            raise MessageError("job: too short")
        magic, fmt, attempt, job_id, deadline, address_len, rows = _JOB.unpack_from(data)
        if (magic, fmt) != (_JOB_MAGIC, _FORMAT):
            raise MessageError(f"job: bad magic or format {magic!r}/{fmt}")
        start = _JOB.size + address_len
        if len(data) != start + rows * ROW_BYTES:
            raise MessageError("job: length does not match its row count")
        return cls(job_id, bytes(data[_JOB.size : start]), deadline, bytes(data[start:]), attempt)


@dataclass(frozen=True)
class Result:
    """A job's outcome, stored in the uWSGI result cache under the job's key."""

    job_id: bytes
    mule_id: int
    mule_pid: int
    model_version: str
    predictions: bytes = b""  # float64 array bytes, one per row, when ok
    error: str = ""  # message safe for clients, when not ok

    @property
    def ok(self) -> bool:
        return not self.error

    def sales(self) -> list[float]:
        return array("d", self.predictions).tolist()

    def encode(self) -> bytes:
        version = self.model_version.encode()
        header = _RESULT.pack(_RESULT_MAGIC, _FORMAT, self.ok, self.job_id, self.mule_id, self.mule_pid, len(version))
        return header + version + (self.predictions if self.ok else self.error.encode())

    @classmethod
    def decode(cls, data: bytes) -> Result:
        """Raises :class:`MessageError` for anything but a whole result."""
        if len(data) < _RESULT.size:
            raise MessageError("result: too short")
        magic, fmt, ok, job_id, mule_id, mule_pid, version_len = _RESULT.unpack_from(data)
        if (magic, fmt) != (_RESULT_MAGIC, _FORMAT):
            raise MessageError(f"result: bad magic or format {magic!r}/{fmt}")
        start = _RESULT.size + version_len
        version = bytes(data[_RESULT.size : start]).decode()
        body = bytes(data[start:])
        if ok:
            if len(body) % PREDICTION_BYTES:
                raise MessageError("result: predictions are not whole float64s")
            return cls(job_id, mule_id, mule_pid, version, predictions=body)
        return cls(job_id, mule_id, mule_pid, version, error=body.decode(errors="replace") or "unknown error")


def encode_notice(kind: bytes, job_id: bytes, mule_pid: int) -> bytes:
    return _NOTICE.pack(kind, job_id, mule_pid)


def decode_notice(data: bytes) -> tuple[bytes, bytes, int]:
    """Return (kind, job id, mule pid); raises :class:`MessageError`."""
    if len(data) != _NOTICE.size:
        raise MessageError("notice: wrong length")
    kind, job_id, pid = _NOTICE.unpack(data)
    if kind not in (NOTICE_CLAIMED, NOTICE_DONE):
        raise MessageError(f"notice: unknown kind {kind!r}")
    return kind, job_id, pid


def encode_reload(job_id: bytes, reply_to: bytes, version: str, deadline: float) -> bytes:
    """Ask one mule to load ``version``; it answers with a :class:`Result` (no predictions)."""
    body = {"id": job_id.hex(), "reply_to": reply_to.hex(), "version": version, "deadline": deadline}
    return CONTROL_RELOAD + json.dumps(body).encode()


def decode_reload(data: bytes) -> tuple[bytes, bytes, str, float]:
    """Return (job id, reply address, version, deadline); raises :class:`MessageError`."""
    if data[:1] != CONTROL_RELOAD:
        raise MessageError("control: not a reload")
    try:
        body: dict[str, Any] = json.loads(data[1:])
        return bytes.fromhex(body["id"]), bytes.fromhex(body["reply_to"]), str(body["version"]), float(body["deadline"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"control: bad reload message ({exc.__class__.__name__})") from exc
