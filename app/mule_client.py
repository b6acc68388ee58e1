"""The web worker's side of the worker-mule contract (the only module using ``uwsgi``).

A request becomes one or more jobs (at most ``rows_per_job`` rows each).  For
each request the client:

1. admits its jobs against its process's share of the queue
   (:class:`Admission`), so the uWSGI queue, which silently overwrites when
   full, can never wrap: past the bound the request is answered 503 at once;
2. pushes the jobs on the uWSGI queue and wakes mules with ``mule_msg``;
3. sleeps on its thread's datagram socket until a mule sends a notice
   ("claimed by pid P", "done"), never longer than the deadline or the
   owner-check interval; there is no busy polling;
4. reads each result from the result cache and deletes the key;
5. every ``mule_check_interval_ms`` checks that the mule holding each claimed
   job is alive; a job of a dead mule is pushed again once (another mule, or
   the respawned one, takes it), a second death answers 503.

All methods are called from web worker threads and are thread-safe: each
thread has its own socket, and the queue and caches are uWSGI's.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app import metrics
from app.errors import DeadlineExceeded, ReloadRefused, Unavailable
from forecast.messages import (
    ASLEEP,
    CONTROL_WAKE,
    FLAGS_AREA,
    NOTICE_CLAIMED,
    RESULT_CACHE,
    STATE_CACHE,
    Job,
    MessageError,
    Result,
    awake_flag,
    claims_address,
    decode_notice,
    encode_reload,
    heartbeat_key,
    max_rows_per_job,
    max_rows_per_result,
    pack_rows,
)
from forecast.settings import Settings

logger = logging.getLogger(__name__)

NOTICE_BYTES = 64


@dataclass(frozen=True)
class Prediction:
    """Predictions in request order, with the model version of each row."""

    sales: list[float]
    versions: list[str]


class Admission:
    """This worker process's share of the queue: a bound on its jobs in flight.

    The uWSGI queue silently overwrites its oldest slot when full, so the jobs
    in flight across the machine must stay below its slot count.  Each worker
    process gets a fixed share, ``(slots - 1) // processes``, and counts its
    own jobs under a thread lock: the shares add up to less than the queue, so
    it can never wrap, and no lock or counter is shared between processes (a
    worker that dies takes its count with it).  Jobs a mule has pulled still
    count until their worker has the result: the bound is conservative.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def acquire(self, jobs: int) -> bool:
        """Add ``jobs`` if this process stays within its share; False (nothing added) if not."""
        with self._lock:
            if self.in_flight + jobs > self.limit:
                return False
            self.in_flight += jobs
            return True

    def release(self, jobs: int) -> None:
        with self._lock:
            self.in_flight -= jobs


class MuleClient:
    """Submit jobs to the mules and wait for their results; see the module docstring."""

    def __init__(self, settings: Settings, uwsgi: Any) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.mule_ids = list(range(1, settings.mules + 1))
        self.rows_per_job = min(
            max_rows_per_job(settings.queue_slot_bytes),
            max_rows_per_result(settings.result_block_bytes),
            settings.mule_batch_rows,
        )
        self.admission = Admission(settings.jobs_in_flight_per_worker)
        self.flags = uwsgi.sharedarea_memoryview(FLAGS_AREA)  # the mules' awake flags
        self._local = threading.local()
        if getattr(uwsgi, "queue_size", None) != settings.queue_slots:
            raise RuntimeError(
                f"uWSGI queue has {getattr(uwsgi, 'queue_size', None)} slots, settings say {settings.queue_slots}: "
                "start uWSGI with the FORECAST_* variables exported (python -m forecast.settings)"
            )

    # -- predictions --------------------------------------------------------

    def predict(self, days: list[int], stores: list[int], items: list[int], deadline: float) -> Prediction:
        """Score rows before ``deadline`` (a ``time.time()`` value).

        Raises :class:`Unavailable` (at capacity, or a mule failed) or
        :class:`DeadlineExceeded`.
        """
        spans = [(start, min(start + self.rows_per_job, len(days))) for start in range(0, len(days), self.rows_per_job)]
        if not self.admission.acquire(len(spans)):
            raise Unavailable("the server is at capacity; retry shortly", self.settings.retry_after_s, "overloaded")
        try:
            address = self._address()
            jobs = [
                Job(self._job_id(), address, deadline, pack_rows(days[a:b], stores[a:b], items[a:b])) for a, b in spans
            ]
            for job in jobs:
                self._push(job)
            self._wake(min(len(jobs), len(self.mule_ids)))
            results = self._wait(jobs, deadline)
        finally:
            self.admission.release(len(spans))  # the jobs-in-flight gauge samples this (app/telemetry.py)
        sales: list[float] = []
        versions: list[str] = []
        for job in jobs:
            result = results[job.id]
            sales.extend(result.sales())
            versions.extend([result.model_version] * job.row_count)
        return Prediction(sales, versions)

    def _push(self, job: Job) -> None:
        if not self.uwsgi.queue_push(job.encode()):
            # Cannot happen while admission holds (one slot always free, jobs fit a slot); never silent.
            logger.error("queue refused job %s (%d bytes)", job.key, len(job.encode()))
            raise Unavailable("the job queue refused the request; retry shortly", self.settings.retry_after_s)

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` sleeping mules; awake ones will find the jobs (mules/loop.py).

        Reads the flags after the push: queue_push took the queue's lock (a syscall), so a
        mule that went to sleep after this read looks at the queue once more and finds the job.
        """
        flags = self.flags
        for mule_id in self.mule_ids:
            if count == 0:
                return
            if flags[awake_flag(mule_id)] in (ASLEEP, 0):  # 0: the mule has not started yet
                # False means the mule's socket is full of wake-ups already: it will drain anyway.
                self.uwsgi.mule_msg(CONTROL_WAKE, mule_id)
                count -= 1

    def _wait(self, jobs: list[Job], deadline: float) -> dict[bytes, Result]:
        pending = {job.id: job for job in jobs}
        owners: dict[bytes, int] = {}
        results: dict[bytes, Result] = {}
        for notice in self._notices(deadline, self.settings.mule_check_interval_ms / 1000):
            if notice is None:
                self._read_claims(pending, owners)
                self._collect_unannounced(pending, owners, results)
                self._rescue_jobs_of_dead_mules(pending, owners, results)
            elif notice[1] in pending and notice[0] != NOTICE_CLAIMED:
                results[notice[1]] = self._take_result(pending.pop(notice[1]))
                owners.pop(notice[1], None)
                if len(jobs) > 1:  # keep up with claims: a claims socket holds only 10 notices
                    self._read_claims(pending, owners)
            if not pending:
                self._local.abandoned = False  # every "done" notice of this request was read
                return results
        raise DeadlineExceeded(f"no prediction within the deadline of {self.settings.deadline_ms} ms")

    def _notices(self, deadline: float, tick_s: float) -> Iterator[tuple[bytes, bytes, int] | None]:
        """Yield notices as they arrive, and None every ``tick_s``; stop at the deadline.

        Sleeps in ``poll()``: the thread wakes when a mule writes or a tick is due, never spins.
        """
        sock = self._socket()
        poller: select.poll = self._local.poller
        next_tick = time.time() + tick_s
        while (now := time.time()) < deadline:
            if now >= next_tick:
                next_tick = now + tick_s
                yield None
                continue
            # poll() first: it returns at once when a notice is waiting, and saves the failed
            # recv() (a syscall and an exception) that a notice not yet sent would cost.
            if not poller.poll(max(1, math.ceil((min(deadline, next_tick) - now) * 1000))):
                continue
            try:
                data = sock.recv(NOTICE_BYTES)
            except BlockingIOError:
                continue
            try:
                yield decode_notice(data)
            except MessageError:
                logger.warning("ignored a malformed notice (%d bytes)", len(data))

    def _take_result(self, job: Job) -> Result:
        data = self.uwsgi.cache_get(job.key, RESULT_CACHE)
        self.uwsgi.cache_del(job.key, RESULT_CACHE)
        if data is None:
            logger.error("job %s: mule reported done but no result is in the cache", job.key)
            raise Unavailable("a prediction result was lost; retry", self.settings.retry_after_s, "result_lost")
        result = Result.decode(data)
        if not result.ok:
            # The mule logged the failure with this job's id and the traceback; the request's log
            # line names the job too (g.job): one error, logged once.
            message = f"prediction failed: {result.error}"
            raise Unavailable(message, self.settings.retry_after_s, "prediction_failed", job=job.key)
        return result

    def _read_claims(self, pending: dict[bytes, Job], owners: dict[bytes, int]) -> None:
        """Learn which mule holds which job: claims wait in their own socket, which never wakes us."""
        claims: socket.socket = self._local.claims
        try:
            while True:
                kind, job_id, pid = decode_notice(claims.recv(NOTICE_BYTES))
                if kind == NOTICE_CLAIMED and job_id in pending:
                    owners[job_id] = pid
        except BlockingIOError:
            pass
        except MessageError:
            logger.warning("ignored a malformed claim notice")

    def _collect_unannounced(
        self, pending: dict[bytes, Job], owners: dict[bytes, int], results: dict[bytes, Result]
    ) -> None:
        """Take results whose "done" notice was dropped (the mule never blocks on a full socket)."""
        for job_id, job in list(pending.items()):
            if self.uwsgi.cache_exists(job.key, RESULT_CACHE):
                results[job_id] = self._take_result(pending.pop(job_id))
                owners.pop(job_id, None)

    def _rescue_jobs_of_dead_mules(
        self, pending: dict[bytes, Job], owners: dict[bytes, int], results: dict[bytes, Result]
    ) -> None:
        for job_id, pid in list(owners.items()):
            if process_alive(pid):
                continue
            job = pending[job_id]
            del owners[job_id]
            if self.uwsgi.cache_exists(job.key, RESULT_CACHE):  # finished just before dying
                results[job_id] = self._take_result(pending.pop(job_id))
            elif job.attempt == 1:
                logger.warning("job %s: mule pid %d died holding it; pushing it again", job.key, pid)
                pending[job_id] = retry = Job(job.id, job.reply_to, job.deadline, job.rows, attempt=2)
                self._push(retry)
                self._wake(1)
                if self.settings.metrics_enabled:
                    metrics.JOBS_REQUEUED.inc()
            else:
                logger.error("job %s: a second mule (pid %d) died holding it; giving up", job.key, pid)
                raise Unavailable(
                    "the mules serving this request died; retry", self.settings.retry_after_s, "mule_died", job=job.key
                )

    # -- status and reload --------------------------------------------------

    def queue_depth(self) -> int:
        """Jobs pushed and not yet pulled (read without a lock: a gauge, not an invariant)."""
        return int((self.uwsgi.queue_slot() - self.uwsgi.queue_pull_slot()) % self.settings.queue_slots)

    def mule_states(self) -> list[dict[str, Any]]:
        """Each configured mule's last heartbeat (or ``state: "unknown"``)."""
        states = []
        for mule_id in self.mule_ids:
            raw = self.uwsgi.cache_get(heartbeat_key(mule_id), STATE_CACHE)
            states.append(json.loads(raw) if raw else {"id": mule_id, "state": "unknown"})
        return states

    def reload(self, version: str) -> None:
        """Have each mule in turn load ``version``; others keep serving meanwhile.

        If a mule refuses, the mules already switched go back to the version
        they served and :class:`ReloadRefused` names the reason.
        """
        previous = {state["id"]: state.get("model_version") for state in self.mule_states()}
        switched: list[int] = []
        for mule_id in self.mule_ids:
            result = self._reload_one(mule_id, version)
            if not result.ok:
                for done in switched:
                    if previous.get(done):
                        self._reload_one(done, str(previous[done]))
                raise ReloadRefused(f"mule {mule_id} refused version {version}: {result.error}")
            switched.append(mule_id)

    def _reload_one(self, mule_id: int, version: str) -> Result:
        address = self._address()
        job_id = self._job_id()
        deadline = time.time() + self.settings.reload_timeout_s
        if not self.uwsgi.mule_msg(encode_reload(job_id, address, version, deadline), mule_id):
            raise Unavailable(f"mule {mule_id} cannot take messages now", self.settings.retry_after_s)
        for notice in self._notices(deadline, self.settings.reload_timeout_s):
            if notice is not None and notice[1] == job_id and notice[0] != NOTICE_CLAIMED:
                data = self.uwsgi.cache_get(job_id.hex(), RESULT_CACHE)
                self.uwsgi.cache_del(job_id.hex(), RESULT_CACHE)
                if data is None:
                    raise Unavailable(
                        f"mule {mule_id} answered the reload without a result", self.settings.retry_after_s
                    )
                return Result.decode(data)
        raise DeadlineExceeded(f"mule {mule_id} did not load {version} within {self.settings.reload_timeout_s} s")

    # -- per-thread notice socket -------------------------------------------

    def _socket(self) -> socket.socket:
        """This thread's "done" socket, created with its claims socket and a poller on it."""
        sock: socket.socket | None = getattr(self._local, "socket", None)
        if sock is None or getattr(self._local, "pid", None) != os.getpid():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = b"\0forecast-worker-" + os.urandom(12).hex().encode()
            sock.bind(address)
            claims = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            claims.bind(claims_address(address))
            for each in (sock, claims):
                each.setblocking(False)  # waits happen in poll(), never in recv()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            self._local.socket, self._local.claims, self._local.poller = sock, claims, poller
            self._local.address, self._local.pid, self._local.abandoned = address, os.getpid(), False
            self._local.id_prefix, self._local.id_counter = os.urandom(8), itertools.count()
        return sock

    def _job_id(self) -> bytes:
        """A new job id: this thread's 8 random bytes and its count of jobs.

        Unique without a syscall per job (``os.urandom`` is one, and releases the GIL that
        the worker's other threads are waiting for).  Call after :meth:`_address`.
        """
        prefix: bytes = self._local.id_prefix
        count: int = next(self._local.id_counter)
        return prefix + count.to_bytes(8, "big")

    def _address(self) -> bytes:
        """This thread's notice address, with notices of earlier, abandoned requests discarded.

        Call before sending a job: afterwards a notice may already be for it.  The "done"
        socket holds old notices only if the thread's last wait ended early (``abandoned``);
        the claims socket always holds the last request's claims (read only on ticks).
        """
        sock = self._socket()
        if self._local.abandoned:
            _discard_stale(sock)
        _discard_stale(self._local.claims)
        self._local.abandoned = True  # until a wait collects every notice it caused
        address: bytes = self._local.address
        return address


def _discard_stale(sock: socket.socket) -> None:
    """Drop notices left over from an earlier request of this thread that gave up waiting."""
    try:
        while True:
            sock.recv(NOTICE_BYTES)
    except BlockingIOError:
        pass


def process_alive(pid: int) -> bool:
    """False when ``pid`` is gone or a zombie (killed, not yet reaped by the master)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
