"""The mule loop: load the model, drain the queue in batches, answer, heartbeat.

Runs in each uWSGI mule process, after fork; this is where LightGBM is first
imported in the process tree.  The loop blocks in ``mule_get_msg`` (woken by
a worker's ``mule_msg`` or by the heartbeat timeout), then pulls jobs from the
uWSGI queue until it is empty, scoring up to ``mule_batch_rows`` rows in one
LightGBM call.  For every job it sends the waiting worker a "claimed" notice
(so a worker can tell when this mule dies holding its job) and a "done"
notice once the result is in the cache.  Jobs whose deadline has passed are
dropped unscored: nobody waits for them.

While it drains, the mule's awake flag is set, and workers do not wake it
(under load no wake-up messages flow at all).  Before sleeping it clears the
flag and looks at the queue once more: a worker pushes, then reads the flag,
so a job pushed while the flag still read "awake" is found by that last look.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from forecast.errors import CorruptVersion, ForecastError
from forecast.features import Rows
from forecast.model import Predictor
from forecast.registry import Registry
from mules.loading import LoadGuard
from mules.metrics import MuleMetrics
from serving.logs import configure_logging
from serving.messages import (
    ASLEEP,
    AWAKE,
    CONTROL_RELOAD,
    FLAGS_AREA,
    NOT_SERVING,
    NOTICE_CLAIMED,
    NOTICE_DONE,
    RESULT_CACHE,
    STATE_CACHE,
    Heartbeat,
    Job,
    LoadRequest,
    MessageError,
    MuleState,
    Notice,
    Result,
    awake_flag,
    claims_address,
    decode_rows,
    encode_predictions,
    heartbeat_key,
)
from serving.settings import Settings

logger = logging.getLogger(__name__)

RESULT_GRACE_S = 5  # results outlive their deadline this long, then the cache sweeper drops them
LOAD_RETRY_S = 5


class Mule:
    """One mule's state and loop; ``uwsgi`` is the uWSGI module (a parameter for clarity)."""

    def __init__(self, settings: Settings, uwsgi: Any) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.id = int(uwsgi.mule_id())
        self.pid = os.getpid()
        self.registry = Registry(settings.registry_dir)
        self.flags = uwsgi.sharedarea_memoryview(FLAGS_AREA)
        self.metrics = MuleMetrics(self.id, settings.metrics_enabled)
        self.guard = LoadGuard(uwsgi, self.id)
        self.predictor: Predictor | None = None
        self.error = ""
        self.jobs_done = 0
        self.started = time.time()
        self.next_load_attempt = 0.0
        self.last_heartbeat = 0.0
        self.notices = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Never block on a worker: a worker socket holds only net.unix.max_dgram_qlen (10) notices,
        # and one that stopped reading must not stall the mule. A dropped notice costs that worker
        # at most one owner-check interval: it also looks for its results in the cache.
        self.notices.setblocking(False)
        self.deferred: list[bytes] = []

    def run(self) -> None:
        """The mule's life: :meth:`start`, then :meth:`step` forever."""
        self.start()
        while True:
            self.step()

    def start(self) -> None:
        """Load the production model (or the last one this mule loaded, when production killed a mule
        while it loaded), then score what queued while no mule had one."""
        self.metrics.started()
        self.set_flag(NOT_SERVING)
        self.heartbeat(MuleState.LOADING)
        self.guard.died_loading()
        if not self.try_load("production"):
            self.fall_back()
        if self.predictor is not None:
            self.drain()

    def step(self) -> None:
        """Wait for a message (or the heartbeat interval), then act on it: load a version, or drain the queue."""
        message = (
            self.deferred.pop(0) if self.deferred else self.uwsgi.mule_get_msg(timeout=self.settings.mule_heartbeat_s)
        )
        if message and message[:1] == CONTROL_RELOAD:
            self.reload(message)
        elif self.predictor is None:
            if time.time() >= self.next_load_attempt:
                self.try_load("production")
        else:
            self.drain()
        if time.time() - self.last_heartbeat >= self.settings.mule_heartbeat_s:
            self.heartbeat()

    # -- model ---------------------------------------------------------------

    def load(self, ref: str) -> Predictor:
        """Load and verify ``ref`` in this process, unless a mule died loading it before.

        Raises :class:`ForecastError` (the registry's refusals, or a poisoned version).
        """
        version = self.registry.resolve(ref)
        if self.guard.poisoned(version):
            raise CorruptVersion(f"version {version} stopped a mule while it loaded; it is not loaded again")
        with self.guard.loading(version):
            return self.registry.verify(version)

    def try_load(self, ref: str) -> bool:
        """Load ``ref``; on failure keep no model, note why, and retry after ``LOAD_RETRY_S``."""
        try:
            self.predictor = self.load(ref)
            self.error = ""
            logger.info("mule %d loaded model %s", self.id, self.predictor.version)
        except ForecastError as exc:
            self.error = exc.message
            self.next_load_attempt = time.time() + LOAD_RETRY_S
            logger.error("mule %d cannot load %s: %s (retrying in %d s)", self.id, ref, exc.message, LOAD_RETRY_S)
        self.heartbeat()
        return self.predictor is not None

    def fall_back(self) -> None:
        """Production does not load: serve the last version this mule loaded, saying why (in /status)."""
        reason, previous = self.error, self.guard.last_loaded()
        if previous is not None and self.try_load(previous):
            self.error = f"production refused ({reason}); serving {previous}, the last version this mule loaded"
            self.heartbeat()

    def reload(self, message: bytes) -> None:
        try:
            request = LoadRequest.decode(message)
        except MessageError as exc:
            logger.error("mule %d: %s", self.id, exc)
            return
        job_id, version = request.job_id, request.version
        self.heartbeat(MuleState.LOADING)
        self.set_flag(NOT_SERVING)  # while loading, workers wake the other mules for new jobs
        try:
            self.predictor = self.load(version)
            self.error = ""
            outcome = Result(job_id, self.id, self.pid, version)
            logger.info("mule %d reloaded: now serving %s", self.id, version)
        except ForecastError as exc:
            outcome = Result(job_id, self.id, self.pid, version, error=exc.message)
            logger.error("mule %d refused %s: %s", self.id, version, exc.message)
        self.heartbeat()
        self.answer(job_id, request.reply_to, outcome, self.settings.reload_timeout_s)
        if self.predictor is not None:
            self.drain()  # also sets the awake flag back

    # -- jobs ----------------------------------------------------------------

    def drain(self) -> None:
        """Score queued jobs until the queue is empty (or a reload waits); see the module docstring."""
        self.set_flag(AWAKE)
        while True:
            while not self.deferred and (batch := self.pull_batch()):
                self.score(batch)
                if time.time() - self.last_heartbeat >= self.settings.mule_heartbeat_s:
                    self.heartbeat()
            self.set_flag(ASLEEP)
            # queue_pull takes the queue's lock: a syscall after the flag's store, so a worker that
            # pushed before it read the flag as AWAKE has its job found here.
            if self.deferred or not (batch := self.pull_batch()):
                return
            self.set_flag(AWAKE)  # a job arrived while we were deciding to sleep
            self.score(batch)

    def set_flag(self, value: int) -> None:
        """This mule's awake flag (serving.messages.awake_flag): only this mule writes it."""
        self.flags[awake_flag(self.id)] = value

    def swallow_wakeups(self) -> None:
        """Read every pending mule message before pulling a batch from the queue.

        Wake-ups that arrive while the mule drains would otherwise pile up in
        its socket (and a full socket makes ``mule_msg`` fail with MULE MSG
        QUEUE IS FULL in the log).  Swallowing them is safe: each was sent after
        its job was pushed, and a pull follows.  A reload request met here is
        kept for the main loop.
        """
        while message := self.uwsgi.mule_get_msg(timeout=0):
            if message[:1] == CONTROL_RELOAD:
                self.deferred.append(message)

    def pull_batch(self) -> list[Job]:
        batch: list[Job] = []
        rows = 0
        self.swallow_wakeups()
        while rows < self.settings.mule_batch_rows:
            data = self.uwsgi.queue_pull()
            if data is None:
                break
            try:
                job = Job.decode(data)
            except MessageError as exc:
                logger.error("mule %d dropped a malformed job: %s", self.id, exc)
                continue
            self.notify(claims_address(job.reply_to), NOTICE_CLAIMED, job.id)
            if job.deadline <= time.time():
                logger.warning("mule %d dropped job %s: deadline passed before it was scored", self.id, job.key)
                self.metrics.expired()
                continue
            batch.append(job)
            rows += job.row_count
        return batch

    def score(self, batch: list[Job]) -> None:
        assert self.predictor is not None
        version = self.predictor.version
        try:
            table = decode_rows(b"".join(job.rows for job in batch))
            rows = Rows(table[:, 0].astype("datetime64[D]"), table[:, 1], table[:, 2])
            self.uwsgi.set_user_harakiri(self.settings.mule_harakiri_s)
            started = time.perf_counter()
            try:
                sales = self.predictor.predict(rows)
            finally:
                self.uwsgi.set_user_harakiri(0)
            # Recorded before the answers, so a scrape after an answer sees its rows counted.
            self.metrics.scored(sales, time.perf_counter() - started)
        except Exception as exc:  # answer every job: a failure must reach the waiting workers
            # The one log line of this failure (the workers only name the job on their request lines).
            jobs = ",".join(job.key for job in batch)
            logger.exception("mule %d: predict failed for %d jobs", self.id, len(batch), extra={"jobs": jobs})
            self.metrics.failed()
            for job in batch:
                failed = Result(job.id, self.id, self.pid, version, error=exc.__class__.__name__)
                self.answer(job.id, job.reply_to, failed, job.deadline - time.time())
            return
        start = 0
        for job in batch:
            end = start + job.row_count
            result = Result(job.id, self.id, self.pid, version, predictions=encode_predictions(sales[start:end]))
            self.answer(job.id, job.reply_to, result, job.deadline - time.time())
            start = end
        self.jobs_done += len(batch)

    def answer(self, job_id: bytes, reply_to: bytes, result: Result, ttl_s: float) -> None:
        expires = max(1, int(ttl_s) + RESULT_GRACE_S)
        if not self.uwsgi.cache_update(job_id.hex(), result.encode(), expires, RESULT_CACHE):
            logger.error("mule %d: result cache refused job %s (full?)", self.id, job_id.hex())
        self.notify(reply_to, NOTICE_DONE, job_id)

    def notify(self, reply_to: bytes, kind: bytes, job_id: bytes) -> None:
        try:
            self.notices.sendto(Notice(kind, job_id, self.pid).encode(), reply_to)
        except OSError:
            # The worker is gone (its thread's socket closed): it no longer waits for this job.
            logger.debug("mule %d: worker for job %s is gone", self.id, job_id.hex())

    # -- heartbeat -------------------------------------------------------------

    def heartbeat(self, state: MuleState | None = None) -> None:
        """Write this mule's heartbeat (``state`` by default: ready with a model, failed without)."""
        if state is None:
            state = MuleState.READY if self.predictor else MuleState.FAILED
        beat = Heartbeat(
            self.id, self.pid, state, self.predictor.version if self.predictor else None, round(time.time(), 3),
            round(self.started, 3), self.jobs_done, self.error or None,
        )  # fmt: skip
        self.uwsgi.cache_update(heartbeat_key(self.id), beat.encode(), 0, STATE_CACHE)
        self.last_heartbeat = time.time()


def main() -> None:
    import uwsgi

    settings = Settings()
    configure_logging(settings.log_level, f"mule {uwsgi.mule_id()}", settings.log_format)
    Mule(settings, uwsgi).run()
