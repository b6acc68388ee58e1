"""The mule's data path: pull a batch of jobs, score it, answer every job, forward, score shadows.

Used by :class:`mules.loop.Mule`, which owns the control path (when to drain, loads, the awake
flag, heartbeats) and hands this class the mule messages that are jobs (``forwarded``,
:meth:`JobPath.keep_shadow`).  One call per model version in a batch (:mod:`mules.models` holds
the versions, loading one on first use).  For every job it sends the waiting worker a
"claimed" notice (so a worker can tell when this mule dies holding its job) and a "done"
notice once the result is in the cache.  Jobs whose deadline has passed are dropped unscored:
nobody waits for them.  A job of a version this mule does not hold, which another mule holds,
is forwarded to that mule (``mule_msg``).  Spare jobs (``Job.spare``: realised accuracy) and
then shadow jobs are scored only when the caller finds the queue empty: live requests first,
always.  Not thread-safe: a mule has one thread.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Any

import numpy as np

from forecast.features import Rows
from forecast.model import Predictor
from mules.metrics import MuleMetrics
from mules.models import Key, ModelCache, ModelError
from serving.messages import (
    NOTICE_CLAIMED,
    NOTICE_DONE,
    RESULT_CACHE,
    STATE_CACHE,
    Heartbeat,
    Job,
    MessageError,
    Notice,
    Result,
    ShadowJob,
    claims_address,
    decode_rows,
    encode_predictions,
    heartbeat_key,
    is_job,
    prediction_array,
)
from serving.settings import Settings

logger = logging.getLogger(__name__)

RESULT_GRACE_S = 5  # results outlive their deadline this long, then the cache sweeper drops them
SHADOW_BACKLOG = 64  # shadow jobs a mule keeps for its spare time; older ones are dropped (counted)


class JobPath:
    """One mule's jobs from the queue to their answers; ``uwsgi`` is the uWSGI module (a parameter for clarity)."""

    def __init__(self, settings: Settings, uwsgi: Any, models: ModelCache, metrics: MuleMetrics) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.id = int(uwsgi.mule_id())
        self.pid = os.getpid()
        self.models = models
        self.metrics = metrics
        self.jobs_done = 0
        self.notices = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Never block on a worker: a worker socket holds only net.unix.max_dgram_qlen (10) notices,
        # and one that stopped reading must not stall the mule. A dropped notice costs that worker
        # at most one owner-check interval: it also looks for its results in the cache.
        self.notices.setblocking(False)
        self.forwarded: list[Job] = []  # jobs other mules sent here because this mule holds their model
        self.shadows: deque[ShadowJob] = deque()
        self.spare: deque[Job] = deque()  # jobs to score when no other waits (Job.spare), oldest first

    def take(self, message: bytes) -> None:
        """Keep the job (forwarded by another mule) or shadow job a mule message carries, for a batch."""
        try:
            if is_job(message):
                self.forwarded.append(Job.decode(message))
            else:
                self.keep_shadow(ShadowJob.decode(message))
        except MessageError as exc:
            logger.error("mule %d dropped a malformed message: %s", self.id, exc)

    def pull_batch(self) -> list[Job]:
        """Up to ``mule_batch_rows`` rows of jobs: the forwarded ones first, then the queue's (each claimed)."""
        batch: list[Job] = []
        rows = 0
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
            if job.spare:  # after the live jobs: drain() scores it when the queue is empty
                self.spare.append(job)
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
        """Score a batch: one call per model version in it (and one more per other set of outputs asked)."""
        groups: dict[tuple[Key, tuple[str, ...]], list[Job]] = {}
        for job in batch:
            groups.setdefault(((job.model, job.version), job.outputs), []).append(job)
        for (key, outputs), jobs in groups.items():
            self.score_group(key, jobs, outputs)

    def score_group(self, key: Key, jobs: list[Job], outputs: tuple[str, ...] = ()) -> None:
        """Score the jobs of one version, and answer each: its sales, and each row's ``outputs`` after them (the
        sales are the predictor's either way: an explained forecast is the same number)."""
        try:
            predictor, loaded = self.models.get(key)
        except ModelError as exc:  # that model's requests get a 503 naming it; the others go on
            for job in jobs:
                failed = Result(job.id, self.id, self.pid, key[1], error=exc.message, unloadable=True)
                self.answer(job.id, job.reply_to, failed, job.deadline - time.time())
            return
        try:
            rows = b"".join(job.rows for job in jobs)
            values = self.predict(predictor, rows)
            blocks = [model_output(self.models, key, predictor, name, rows) for name in outputs]
            values = np.column_stack([values, *blocks]) if blocks else values
        except Exception as exc:  # answer every job: a failure must reach the waiting workers
            # The one log line of this failure (the workers only name the job on their request lines).
            keys = ",".join(job.key for job in jobs)
            logger.exception("mule %d: predict failed for %d jobs", self.id, len(jobs), extra={"jobs": keys})
            self.metrics.failed()
            for job in jobs:
                failed = Result(job.id, self.id, self.pid, key[1], error=exc.__class__.__name__)
                self.answer(job.id, job.reply_to, failed, job.deadline - time.time())
            return
        start, widths = 0, tuple(block.shape[1] for block in blocks)
        for job in jobs:
            end = start + job.row_count
            result = Result(job.id, self.id, self.pid, key[1], encode_predictions(values[start:end]), loaded=loaded,
                            widths=widths)  # fmt: skip
            self.answer(job.id, job.reply_to, result, job.deadline - time.time())
            start = end
        self.jobs_done += len(jobs)

    def predict(self, predictor: Predictor, rows_bytes: bytes) -> np.ndarray:
        """One LightGBM call under harakiri (a call that hangs gets the mule killed and respawned)."""
        rows = _rows(rows_bytes)
        self.uwsgi.set_user_harakiri(self.settings.mule_harakiri_s)
        started = time.perf_counter()
        try:
            sales: np.ndarray = predictor.predict(rows)
        finally:
            self.uwsgi.set_user_harakiri(0)
        # Recorded before the answers, so a scrape after an answer sees its rows counted.
        self.metrics.scored(sales, time.perf_counter() - started)
        return sales

    def score_spare_time(self) -> None:
        """One piece of spare-time work: the oldest spare job (dropped when nobody waits for it any more), else the
        oldest shadow job."""
        if not self.spare:
            self.score_shadow(self.shadows.popleft())
        elif (job := self.spare.popleft()).deadline > time.time():
            self.score_group((job.model, job.version), [job])

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


def model_output(models: ModelCache, key: Key, predictor: Predictor, name: str, rows_bytes: bytes) -> np.ndarray:
    """The rows' output ``name`` (``forecast.scoring.Scorer.output``), ``(rows, width)``: from ``predictor`` (``key``'s
    version as held), or loaded with LightGBM when its engine cannot compute it.  Raises ``RuntimeError`` when neither
    can."""
    rows = _rows(rows_bytes)
    found = predictor.output(name, rows)
    if found is None and predictor.engine != "lightgbm":
        found = models.with_lightgbm(key).output(name, rows)
    if found is None:
        raise RuntimeError(f"{key[0]} {key[1]}: no output {name!r}")
    return found


def _rows(rows_bytes: bytes) -> Rows:
    table = decode_rows(rows_bytes)
    return Rows(table[:, 0].astype("datetime64[D]"), table[:, 1], table[:, 2])
