"""The mule loop: load the default model, drain the queue in batches, answer, heartbeat.

Runs in each uWSGI mule process, after fork; this is where LightGBM is first
imported in the process tree.  The loop blocks in ``mule_get_msg`` (woken by
a worker's ``mule_msg`` or by the heartbeat timeout), then pulls jobs from the
uWSGI queue until it is empty, scoring up to ``mule_batch_rows`` rows at a time,
one LightGBM call per model version in the batch (:mod:`mules.models` holds the
versions, loading one on first use).  For every job it sends the waiting worker
a "claimed" notice (so a worker can tell when this mule dies holding its job) and
a "done" notice once the result is in the cache.  Jobs whose deadline has passed
are dropped unscored: nobody waits for them.

A job of a version this mule does not hold, which another mule holds, is forwarded
to that mule (``mule_msg``), so that with more models than fit, a model's jobs go to
the mules that hold it.  Shadow jobs (``ShadowJob``) arrive as messages and are scored
only when the queue is empty: production first, always.

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
from collections import deque
from typing import Any

import numpy as np

from forecast.errors import ForecastError
from forecast.features import Rows
from forecast.registry import DEFAULT_MODEL, Registry
from mules.loading import LoadGuard
from mules.metrics import MuleMetrics
from mules.models import Key, ModelCache, ModelError
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
    ShadowJob,
    awake_flag,
    claims_address,
    decode_rows,
    encode_predictions,
    heartbeat_key,
    is_job,
    is_shadow_job,
    prediction_array,
)
from serving.settings import Settings

logger = logging.getLogger(__name__)

RESULT_GRACE_S = 5  # results outlive their deadline this long, then the cache sweeper drops them
LOAD_RETRY_S = 5
SHADOW_BACKLOG = 64  # shadow jobs a mule keeps for its spare time; older ones are dropped (counted)


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
        self.models = ModelCache(self.registry, settings.mule_model_budget_mb * 2**20, self.guard, self.metrics.loaded,
                                 settings.compiled_trees)  # fmt: skip
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
        self.deferred: list[bytes] = []  # load requests met while draining
        self.forwarded: list[Job] = []  # jobs other mules sent here because this mule holds their model
        self.shadows: deque[ShadowJob] = deque()

    @property
    def serving(self) -> bool:
        """Holds the default model's version it serves by default (pinned)."""
        return self.models.pinned is not None

    def run(self) -> None:
        """The mule's life: :meth:`start`, then :meth:`step` forever."""
        self.start()
        while True:
            self.step()

    def start(self) -> None:
        """Load the default model's production (or the last version this mule loaded, when production killed a
        mule while it loaded), then score what queued while no mule had a model."""
        self.metrics.started()
        self.set_flag(NOT_SERVING)
        self.heartbeat(MuleState.LOADING)
        self.guard.died_loading()
        if not self.try_pin("production"):
            self.fall_back()
        if self.serving:
            self.drain()

    def step(self) -> None:
        """Wait for a message (or the heartbeat interval), then act on it: load a version, or drain the queue."""
        if not self.deferred:
            self.accept(self.uwsgi.mule_get_msg(timeout=self.settings.mule_heartbeat_s))
        if self.deferred:
            self.reload(self.deferred.pop(0))
        elif not self.serving:
            if time.time() >= self.next_load_attempt:
                self.try_pin("production")
        else:
            self.drain()
        if time.time() - self.last_heartbeat >= self.settings.mule_heartbeat_s:
            self.heartbeat()

    def accept(self, message: bytes) -> None:
        """Sort a mule message: a load request waits for the main loop, a job or a shadow job for a batch."""
        if not message:
            return
        if message[:1] == CONTROL_RELOAD:
            self.deferred.append(message)
        elif is_job(message) or is_shadow_job(message):
            try:
                if is_job(message):
                    self.forwarded.append(Job.decode(message))
                else:
                    self.keep_shadow(ShadowJob.decode(message))
            except MessageError as exc:
                logger.error("mule %d dropped a malformed message: %s", self.id, exc)

    # -- models ----------------------------------------------------------------

    def try_pin(self, ref: str) -> bool:
        """Load the default model's ``ref`` and serve it by default; on failure note why, retry later."""
        try:
            version = self.registry.resolve(ref)
            self.models.pin((DEFAULT_MODEL, version))
            self.error = ""
            logger.info("mule %d loaded model %s", self.id, version)
        except ForecastError as exc:  # ModelError, or the alias itself (VersionNotFound)
            self.refused(ref, exc.message)
        self.heartbeat()
        return self.serving

    def refused(self, ref: str, reason: str) -> None:
        self.error = reason
        self.next_load_attempt = time.time() + LOAD_RETRY_S
        logger.error("mule %d cannot load %s: %s (retrying in %d s)", self.id, ref, reason, LOAD_RETRY_S)

    def fall_back(self) -> None:
        """Production does not load: serve the last version this mule loaded, saying why (in /status)."""
        reason, previous = self.error, self.guard.last_loaded()
        if previous is not None and self.try_pin(previous):
            self.error = f"production refused ({reason}); serving {previous}, the last version this mule loaded"
            self.heartbeat()

    def reload(self, message: bytes) -> None:
        """A load request: load (and for the default model, serve by default) a version; answer it."""
        try:
            request = LoadRequest.decode(message)
        except MessageError as exc:
            logger.error("mule %d: %s", self.id, exc)
            return
        self.notify(claims_address(request.reply_to), NOTICE_CLAIMED, request.job_id)
        self.heartbeat(MuleState.LOADING)
        self.set_flag(NOT_SERVING)  # while loading, workers wake the other mules for new jobs
        key = (request.model, request.version)
        try:
            if request.model == DEFAULT_MODEL:
                self.models.pin(key)
            else:
                self.models.get(key)
            outcome = Result(request.job_id, self.id, self.pid, request.version)
            self.error = "" if request.model == DEFAULT_MODEL else self.error
            logger.info("mule %d loaded %s %s", self.id, request.model, request.version)
        except ModelError as exc:
            outcome = Result(request.job_id, self.id, self.pid, request.version, error=exc.message, unloadable=True)
            logger.error("mule %d refused %s %s: %s", self.id, request.model, request.version, exc.message)
        self.heartbeat()
        self.answer(request.job_id, request.reply_to, outcome, self.settings.reload_timeout_s)
        if self.serving:
            self.drain()  # also sets the awake flag back

    # -- jobs ----------------------------------------------------------------

    def drain(self) -> None:
        """Score queued jobs until the queue is empty (or a reload waits), then shadows in the spare time."""
        self.set_flag(AWAKE)
        while True:
            while not self.deferred and (batch := self.pull_batch()):
                self.score(batch)
                if time.time() - self.last_heartbeat >= self.settings.mule_heartbeat_s:
                    self.heartbeat()
            if self.shadows and not self.deferred:
                self.score_shadow(self.shadows.popleft())  # nothing queued: spare time
                continue  # and look at the queue again before the next one
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
        its job was pushed, and a pull follows.  Load requests, forwarded jobs and
        shadow jobs met here are kept (:meth:`accept`).
        """
        while message := self.uwsgi.mule_get_msg(timeout=0):
            self.accept(message)

    def pull_batch(self) -> list[Job]:
        batch: list[Job] = []
        rows = 0
        self.swallow_wakeups()
        while self.forwarded and rows < self.settings.mule_batch_rows:
            job = self.forwarded.pop(0)
            self.notify(claims_address(job.reply_to), NOTICE_CLAIMED, job.id)  # this mule holds it now
            batch.append(job)
            rows += job.row_count
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
            if self.forward(job):
                continue
            batch.append(job)
            rows += job.row_count
        return batch

    def forward(self, job: Job) -> bool:
        """Send ``job`` to a mule that holds its version, if this one does not and another does."""
        key = (job.model, job.version)
        if self.models.holds(key):
            return False
        holder = self.holder_of(key)
        return holder is not None and bool(self.uwsgi.mule_msg(job.encode(), holder))

    def holder_of(self, key: Key) -> int | None:
        """Another mule, alive by its heartbeat, that holds ``key``."""
        now = time.time()
        for mule_id in range(1, self.settings.mules + 1):
            data = None if mule_id == self.id else self.uwsgi.cache_get(heartbeat_key(mule_id), STATE_CACHE)
            if not data:
                continue
            try:
                beat = Heartbeat.decode(data)
            except MessageError:
                continue
            if key in beat.held and beat.fresh(now, self.settings.mule_stale_after_s):
                return mule_id
        return None

    def score(self, batch: list[Job]) -> None:
        """Score a batch: one LightGBM call per model version in it, each job answered."""
        groups: dict[Key, list[Job]] = {}
        for job in batch:
            groups.setdefault((job.model, job.version), []).append(job)
        for key, jobs in groups.items():
            self.score_group(key, jobs)

    def score_group(self, key: Key, jobs: list[Job]) -> None:
        try:
            predictor, loaded = self.models.get(key)
        except ModelError as exc:  # that model's requests get a 503 naming it; the others go on
            for job in jobs:
                failed = Result(job.id, self.id, self.pid, key[1], error=exc.message, unloadable=True)
                self.answer(job.id, job.reply_to, failed, job.deadline - time.time())
            return
        try:
            sales = self.predict(predictor, b"".join(job.rows for job in jobs))
        except Exception as exc:  # answer every job: a failure must reach the waiting workers
            # The one log line of this failure (the workers only name the job on their request lines).
            keys = ",".join(job.key for job in jobs)
            logger.exception("mule %d: predict failed for %d jobs", self.id, len(jobs), extra={"jobs": keys})
            self.metrics.failed()
            for job in jobs:
                failed = Result(job.id, self.id, self.pid, key[1], error=exc.__class__.__name__)
                self.answer(job.id, job.reply_to, failed, job.deadline - time.time())
            return
        start = 0
        for job in jobs:
            end = start + job.row_count
            result = Result(job.id, self.id, self.pid, key[1], encode_predictions(sales[start:end]), loaded=loaded)
            self.answer(job.id, job.reply_to, result, job.deadline - time.time())
            start = end
        self.jobs_done += len(jobs)

    def predict(self, predictor: Any, rows_bytes: bytes) -> np.ndarray:
        """One LightGBM call under harakiri (a call that hangs gets the mule killed and respawned)."""
        table = decode_rows(rows_bytes)
        rows = Rows(table[:, 0].astype("datetime64[D]"), table[:, 1], table[:, 2])
        self.uwsgi.set_user_harakiri(self.settings.mule_harakiri_s)
        started = time.perf_counter()
        try:
            sales: np.ndarray = predictor.predict(rows)
        finally:
            self.uwsgi.set_user_harakiri(0)
        # Recorded before the answers, so a scrape after an answer sees its rows counted.
        self.metrics.scored(sales, time.perf_counter() - started)
        return sales

    # -- shadow scoring -------------------------------------------------------

    def keep_shadow(self, job: ShadowJob) -> None:
        if len(self.shadows) >= SHADOW_BACKLOG:
            dropped = self.shadows.popleft()
            self.metrics.shadow_dropped(dropped.model, "backlog")
        self.shadows.append(job)

    def score_shadow(self, job: ShadowJob) -> None:
        """Score a shadow job (if still wanted) and record how far it is from production's predictions."""
        if job.deadline <= time.time():
            self.metrics.shadow_dropped(job.model, "expired")
            return
        try:
            predictor, _ = self.models.get((job.model, job.version))
            shadow = self.predict(predictor, job.rows)
        except Exception as exc:  # a shadow never fails a request: note it and go on
            logger.warning("mule %d: shadow %s %s not scored: %s", self.id, job.model, job.version, exc)
            self.metrics.shadow_dropped(job.model, "failed")
            return
        production = prediction_array(job.predictions)
        self.metrics.shadow_scored(job.model, job.production, job.version, production, shadow)

    # -- answers -------------------------------------------------------------

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
            state = MuleState.READY if self.serving else MuleState.FAILED
        pinned = self.models.pinned
        beat = Heartbeat(
            self.id, self.pid, state, pinned[1] if pinned else None, round(time.time(), 3),
            round(self.started, 3), self.jobs_done, self.error or None, self.models.held(),
        )  # fmt: skip
        self.uwsgi.cache_update(heartbeat_key(self.id), beat.encode(), 0, STATE_CACHE)
        self.last_heartbeat = time.time()


def main() -> None:
    import uwsgi

    settings = Settings()
    configure_logging(settings.log_level, f"mule {uwsgi.mule_id()}", settings.log_format)
    Mule(settings, uwsgi).run()
