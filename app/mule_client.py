"""The web worker's side of the worker-mule contract: submit jobs to the mules and wait for them.

A request becomes one or more jobs (at most ``rows_per_job`` rows each).  For each
request the client:

1. admits its jobs against its process's share of the queue
   (:class:`app.admission.Admission`), so the uWSGI queue, which silently
   overwrites when full, can never wrap: past the bound the request is answered
   503 at once;
2. pushes the jobs on the uWSGI queue and wakes sleeping mules with ``mule_msg``;
3. sleeps on its thread's :class:`Channel` until a mule sends a notice ("claimed
   by pid P", "done"), never longer than the deadline or the owner-check
   interval; there is no busy polling;
4. reads each result from the result cache and deletes the key;
5. every ``mule_check_interval_ms`` checks that the mule holding each claimed
   job is alive; a job of a dead mule is pushed again once (another mule, or
   the respawned one, takes it), a second death answers 503.  For each mule
   that died since the jobs were pushed, the first job no mule claimed is pushed
   again once too: a mule claims each job as it pulls it, so it can die holding
   at most that one unclaimed (if it was still queued instead, it is scored
   twice and answered once).

:meth:`app.mule_control.MuleControl.load` sends one mule a load request and waits for its answer
in the same way (the control path); the rolling reload built on it is :mod:`app.rollout`.

Called from web worker threads; thread-safe: each thread has its own channel, and
the queue and caches are uWSGI's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app import metrics
from app.admission import Admission
from app.errors import DeadlineExceeded, Reason, Unavailable
from app.mule_channel import Channel, Channels
from app.mule_control import MuleControl
from app.prediction import Part as Part  # also where benchmarks/mule_floor/worker.py imports it
from app.prediction import Prediction
from serving.messages import (
    ASLEEP,
    CONTROL_WAKE,
    FLAGS_AREA,
    MAX_OUTPUTS_WIDTH,
    NOTICE_CLAIMED,
    RESULT_CACHE,
    STATE_CACHE,
    Heartbeat,
    Job,
    MessageError,
    Notice,
    Result,
    awake_flag,
    encode_rows,
    heartbeat_key,
    max_rows_per_job,
    max_rows_per_result,
)
from serving.processes import process_alive
from serving.settings import Settings

logger = logging.getLogger(__name__)


def _assemble(spans: list[tuple[Part, int, int]], jobs: list[Job], results: dict[bytes, Result]) -> Prediction:
    """The parts' predictions back in request order, a slice per job (and their outputs, when asked for)."""
    if len(spans) == len(jobs) == 1 and spans[0][0].positions is None and not jobs[0].outputs:  # most requests
        result = results[jobs[0].id]
        return Prediction(result.sales_array(), (result.model_version,), None, result.loaded)
    total = sum(b - a for _, a, b in spans)
    sales = np.empty(total, dtype=np.float64)
    outputs = _room_for_outputs(jobs, results, total)
    version_of = np.empty(total, dtype=np.uint8)  # at most a production, a canary and a reload's new version
    labels: list[str] = []
    loaded = False
    for (part, a, b), job in zip(spans, jobs, strict=True):
        result = results[job.id]
        loaded = loaded or result.loaded
        if result.model_version not in labels:
            labels.append(result.model_version)
        places = slice(a, b) if part.positions is None else part.positions[a:b]  # None: the part is every row
        sales[places] = result.sales_array()
        version_of[places] = labels.index(result.model_version)
        for name, values in result.output_arrays(job.outputs).items():
            outputs[name][places] = values
    return Prediction(sales, tuple(labels), version_of if len(labels) > 1 else None, loaded, outputs)


def _room_for_outputs(jobs: list[Job], results: dict[bytes, Result], rows: int) -> dict[str, np.ndarray]:
    """Room for the rows' outputs the jobs asked for; ``MessageError`` if their results disagree on an output's width
    (a request's rows are scored with one feature set)."""
    widths = {results[job.id].widths for job in jobs}
    if len(widths) != 1:
        raise MessageError(f"results of outputs {sorted(widths)} values wide in one request")
    return {name: np.empty((rows, width), dtype=np.float64) for name, width in zip(jobs[0].outputs, widths.pop(),
                                                                                   strict=True)}  # fmt: skip


@dataclass
class Waiting:
    """One request's jobs not answered yet, the pid of the mule holding each, and the results so far."""

    pending: dict[bytes, Job]
    owners: dict[bytes, int] = field(default_factory=dict)
    results: dict[bytes, Result] = field(default_factory=dict)
    since: float = field(default_factory=time.time)  # when the jobs were pushed
    deaths: set[int] = field(default_factory=set)  # mules whose death since then was answered

    def claimed(self, notice: Notice) -> None:
        if notice.kind == NOTICE_CLAIMED and notice.job_id in self.pending:
            self.owners[notice.job_id] = notice.mule_pid

    def answered(self, job_id: bytes, result: Result) -> None:
        del self.pending[job_id]
        self.owners.pop(job_id, None)
        self.results[job_id] = result


class MuleClient:
    """The web worker's client of the mules: the data path (:class:`MuleJobs`: score a request's rows) and
    the control path (:class:`app.mule_control.MuleControl`: load a version into a mule, submit shadow jobs),
    sharing each thread's channel.

    Their methods are bound here once, so a call costs what it did on one class.  ``alive`` tells
    whether a mule's pid still runs (a parameter so that tests can kill mules that are threads).
    """

    def __init__(self, settings: Settings, uwsgi: Any, alive: Callable[[int], bool] = process_alive) -> None:
        channels = Channels()
        self.jobs = MuleJobs(settings, uwsgi, alive, channels)
        self.control = MuleControl(settings, uwsgi, alive, channels)
        self.admission = self.jobs.admission
        self.mule_ids = self.jobs.mule_ids
        self.predict = self.jobs.predict
        self.load = self.control.load
        self.submit_shadow = self.control.submit_shadow


def _job(channel: Channel, model: str, part: Part, a: int, b: int, deadline: float, outputs: tuple[str, ...],
         spare: bool) -> Job:  # fmt: skip
    """The job of rows ``a:b`` of ``part``, answered to ``channel``."""
    columns = part.columns
    rows = encode_rows(columns.days[a:b], columns.stores[a:b], columns.items[a:b])
    return Job(channel.new_job_id(), channel.address, deadline, rows, model, part.version, outputs=outputs,
               spare=spare)  # fmt: skip


class MuleJobs:
    """The data path: submit a request's jobs to the mules and wait for their results; see the module docstring.

    Raises ``RuntimeError`` at construction when uWSGI's queue is not the size the settings say.
    """

    def __init__(self, settings: Settings, uwsgi: Any, alive: Callable[[int], bool], channels: Channels) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.alive = alive
        self.channels = channels
        self.mule_ids = list(range(1, settings.mules + 1))
        block, slot = settings.result_block_bytes, settings.queue_slot_bytes
        self.rows_per_job = min(max_rows_per_job(slot), max_rows_per_result(block), settings.mule_batch_rows)
        self.rows_per_job_with_outputs = min(self.rows_per_job, max_rows_per_result(block, width=MAX_OUTPUTS_WIDTH))
        self.admission = Admission(settings.jobs_in_flight_per_worker)
        self.flags = uwsgi.sharedarea_memoryview(FLAGS_AREA)  # the mules' awake flags
        if getattr(uwsgi, "queue_size", None) != settings.queue_slots:
            raise RuntimeError(
                f"uWSGI queue has {getattr(uwsgi, 'queue_size', None)} slots, settings say {settings.queue_slots}: "
                "start uWSGI with the FORECAST_* variables exported (python -m serving.settings)"
            )

    # -- predictions --------------------------------------------------------

    def predict(self, model: str, parts: list[Part], deadline: float, outputs: tuple[str, ...] = (),
                spare: bool = False) -> Prediction:  # fmt: skip
        """Score a request's rows of ``model``, each part with its version, before ``deadline`` (``time.time()``);
        each row's ``outputs`` too (in smaller jobs: a result holds ``MAX_OUTPUTS_WIDTH`` values per row at most);
        with ``spare``, in the mules' spare time (after every job sent without it).

        A request of more than half this worker's share of jobs is sent that many jobs at a
        time, each round after the last one's answers: a large batch never takes the whole queue.
        Raises :class:`Unavailable` (at capacity, a mule failed, the model version does not load)
        or :class:`DeadlineExceeded`.
        """
        size = self.rows_per_job_with_outputs if outputs else self.rows_per_job
        spans = [
            (part, a, min(a + size, len(part.columns))) for part in parts for a in range(0, len(part.columns), size)
        ]
        per_round = max(1, self.admission.limit // 2)
        if len(spans) <= per_round:
            return _assemble(spans, *self._score(model, spans, deadline, outputs, spare))
        jobs: list[Job] = []
        results: dict[bytes, Result] = {}
        for start in range(0, len(spans), per_round):
            sent, answered = self._score(model, spans[start : start + per_round], deadline, outputs, spare)
            jobs += sent
            results.update(answered)
        return _assemble(spans, jobs, results)

    def _score(
        self,
        model: str,
        spans: list[tuple[Part, int, int]],
        deadline: float,
        outputs: tuple[str, ...] = (),
        spare: bool = False,
    ) -> tuple[list[Job], dict[bytes, Result]]:
        """Send one job per span and wait for all their results."""
        if not self.admission.acquire(len(spans)):
            raise Unavailable("the server is at capacity; retry shortly", Reason.OVERLOADED)
        try:
            channel = self.channels.mine()
            channel.begin()
            jobs = [_job(channel, model, part, a, b, deadline, outputs, spare) for part, a, b in spans]
            for job in jobs:
                self._push(job)
            self._wake(min(len(jobs), len(self.mule_ids)))
            results = self._wait(channel, jobs, deadline)
        finally:
            self.admission.release(len(spans))  # the jobs-in-flight gauge samples this (app/telemetry.py)
        return jobs, results

    def _push(self, job: Job) -> None:
        if not self.uwsgi.queue_push(job.encode()):
            # Cannot happen while admission holds (one slot always free, jobs fit a slot); never silent.
            logger.error("queue refused job %s (%d bytes)", job.key, len(job.encode()))
            raise Unavailable("the job queue refused the request; retry shortly", Reason.UNAVAILABLE)

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

    def _wait(self, channel: Channel, jobs: list[Job], deadline: float) -> dict[bytes, Result]:
        waiting = Waiting({job.id: job for job in jobs})
        for notice in channel.notices(deadline, self.settings.mule_check_interval_ms / 1000):
            if notice is None:
                self._on_tick(channel, waiting)
            elif notice.job_id in waiting.pending and notice.kind != NOTICE_CLAIMED:
                waiting.answered(notice.job_id, self._take_result(waiting.pending[notice.job_id]))
                if len(jobs) > 1:  # keep up with claims: a claims socket holds only 10 notices
                    for claim in channel.received_claims():
                        waiting.claimed(claim)
            if not waiting.pending:
                channel.end()
                return waiting.results
        raise DeadlineExceeded(f"no prediction within the deadline of {self.settings.deadline_ms} ms")

    def _on_tick(self, channel: Channel, waiting: Waiting) -> None:
        """Learn who holds what, take results whose notice was dropped, rescue jobs of dead mules."""
        for claim in channel.received_claims():
            waiting.claimed(claim)
        for job_id, job in list(waiting.pending.items()):
            # A mule never blocks on a full socket: a dropped "done" leaves the result in the cache.
            if self.uwsgi.cache_exists(job.key, RESULT_CACHE):
                waiting.answered(job_id, self._take_result(job))
        for job_id, pid in list(waiting.owners.items()):
            if not self.alive(pid):
                self._rescue(waiting, waiting.pending[job_id], pid)
        if any(job_id not in waiting.owners for job_id in waiting.pending):
            for mule_id in self._mules_died_since(waiting.since) - waiting.deaths:
                waiting.deaths.add(mule_id)
                lost = next((j for i, j in waiting.pending.items() if i not in waiting.owners and j.attempt == 1), None)
                if lost is not None:  # the one it may have pulled and not claimed: the first still unclaimed
                    self._push_again(waiting, lost, f"unclaimed when mule {mule_id} died")
            # Still unclaimed a tick later: the mule woken for them may have died, or be a respawned one
            # still importing (its flag is its predecessor's until it starts). Wake every sleeping mule.
            self._wake(len(self.mule_ids))

    def _rescue(self, waiting: Waiting, job: Job, pid: int) -> None:
        """The mule ``pid`` died holding ``job``: push it again once; a second death is a 503."""
        del waiting.owners[job.id]
        if self.uwsgi.cache_exists(job.key, RESULT_CACHE):  # finished just before dying
            waiting.answered(job.id, self._take_result(job))
        elif job.attempt == 1:
            self._push_again(waiting, job, f"mule pid {pid} died holding it")
        else:
            logger.error("job %s: a second mule (pid %d) died holding it; giving up", job.key, pid)
            raise Unavailable("the mules serving this request died; retry", Reason.MULE_DIED, job=job.key)

    def _push_again(self, waiting: Waiting, job: Job, why: str) -> None:
        logger.warning("job %s: %s; pushing it again", job.key, why)
        waiting.pending[job.id] = retry = job.retried()
        self._push(retry)
        self._wake(1)
        if self.settings.metrics_enabled:
            metrics.JOBS_REQUEUED.inc()

    def _mules_died_since(self, since: float) -> set[int]:
        """The mules whose heartbeat names a dead pid, or that (re)started after ``since`` (``time.time()``).

        Read only on a tick with unclaimed jobs: off the path of a request its mules answer at once.
        """
        died = set()
        for mule_id in self.mule_ids:
            data = self.uwsgi.cache_get(heartbeat_key(mule_id), STATE_CACHE)
            try:
                beat = Heartbeat.decode(data) if data is not None else None
            except MessageError:
                continue  # the pool logs unreadable heartbeats
            if beat is not None and (beat.started_at > since or not self.alive(beat.pid)):
                died.add(mule_id)
        return died

    def _take_result(self, job: Job) -> Result:
        data = self.uwsgi.cache_get(job.key, RESULT_CACHE)
        self.uwsgi.cache_del(job.key, RESULT_CACHE)
        if data is None:
            logger.error("job %s: mule reported done but no result is in the cache", job.key)
            raise Unavailable("a prediction result was lost; retry", Reason.RESULT_LOST)
        result = Result.decode(data)
        if result.unloadable:  # that model's requests fail, clearly; the other models go on
            raise Unavailable(result.error, Reason.MODEL_UNAVAILABLE, job=job.key)
        if not result.ok:
            # The mule logged the failure with this job's id and the traceback; the request's access
            # line names the job too (Report.job): one error, logged once.
            raise Unavailable(f"prediction failed: {result.error}", Reason.PREDICTION_FAILED, job=job.key)
        return result
