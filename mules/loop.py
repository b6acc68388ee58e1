"""The mule loop, its control path: load the default model, drain the queue, reload, fall back, heartbeat.

Runs in each uWSGI mule process, after fork; this is where LightGBM is first
imported in the process tree.  The loop blocks in ``mule_get_msg`` (woken by
a worker's ``mule_msg`` or by the heartbeat timeout), then drains the uWSGI queue
until it is empty through its data path (:class:`mules.jobs.JobPath`: pull a batch
of up to ``mule_batch_rows`` rows, score it one call per model version, answer,
forward a job to the mule holding its model, shadow jobs in spare time).  Load
requests met while draining wait for the main loop.  One process, one thread.

While it drains, the mule's awake flag is set, and workers do not wake it
(under load no wake-up messages flow at all).  Before sleeping it clears the
flag and looks at the queue once more: a worker pushes, then reads the flag,
so a job pushed while the flag still read "awake" is found by that last look.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from forecast.errors import ForecastError
from forecast.registry import DEFAULT_MODEL, Registry
from mules.jobs import SHADOW_BACKLOG, JobPath
from mules.loading import LoadGuard
from mules.metrics import MuleMetrics
from mules.models import ModelCache, ModelError
from serving.logs import configure_logging
from serving.messages import (
    ASLEEP,
    AWAKE,
    CONTROL_RELOAD,
    FLAGS_AREA,
    NOT_SERVING,
    NOTICE_CLAIMED,
    STATE_CACHE,
    Heartbeat,
    Job,
    LoadRequest,
    MessageError,
    MuleState,
    Result,
    awake_flag,
    claims_address,
    heartbeat_key,
    is_job,
    is_shadow_job,
)
from serving.settings import Settings

logger = logging.getLogger(__name__)

LOAD_RETRY_S = 5
__all__ = ["LOAD_RETRY_S", "SHADOW_BACKLOG", "Mule", "main"]


class Mule:
    """One mule's control state and loop; ``uwsgi`` is the uWSGI module (a parameter for clarity).

    ``jobs`` is its data path (:class:`JobPath`), which :meth:`drain` runs.
    """

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
        self.jobs = self.job_path()
        self.error = ""
        self.started = time.time()
        self.next_load_attempt = 0.0
        self.last_heartbeat = 0.0
        self.deferred: list[bytes] = []  # load requests met while draining

    def job_path(self) -> JobPath:
        """The data path over this mule's models (a stand-in mule may make another)."""
        return JobPath(self.settings, self.uwsgi, self.models, self.metrics)

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
            self.jobs.take(message)

    # -- models ----------------------------------------------------------------

    def try_pin(self, ref: str) -> bool:
        """Load the default model's ``ref`` and serve it by default; on failure note why, retry later."""
        try:
            version = self.registry.resolve(ref)
            self.models.pin((DEFAULT_MODEL, version))
            self.error = ""
            logger.info("mule %d loaded model %s", self.id, version)
        except ForecastError as exc:  # ModelError, or the alias itself (VersionNotFound)
            self.error, self.next_load_attempt = exc.message, time.time() + LOAD_RETRY_S
            logger.error("mule %d cannot load %s: %s (retrying in %d s)", self.id, ref, exc.message, LOAD_RETRY_S)
        self.heartbeat()
        return self.serving

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
        self.jobs.notify(claims_address(request.reply_to), NOTICE_CLAIMED, request.job_id)
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
        self.jobs.answer(request.job_id, request.reply_to, outcome, self.settings.reload_timeout_s)
        if self.serving:
            self.drain()  # also sets the awake flag back

    # -- jobs ----------------------------------------------------------------

    def drain(self) -> None:
        """Score queued jobs until the queue is empty (or a reload waits), then in the spare time the spare jobs
        (realised accuracy), one at a time, then shadows."""
        self.set_flag(AWAKE)
        while True:
            while not self.deferred and (batch := self.pull_batch()):
                self.jobs.score(batch)
                if time.time() - self.last_heartbeat >= self.settings.mule_heartbeat_s:
                    self.heartbeat()
            if (self.jobs.spare or self.jobs.shadows) and not self.deferred:
                self.jobs.score_spare_time()  # nothing queued: spare time
                continue  # and look at the queue again before the next one
            self.set_flag(ASLEEP)
            # queue_pull takes the queue's lock: a syscall after the flag's store, so a worker that
            # pushed before it read the flag as AWAKE has its job found here.
            batch = [] if self.deferred else self.pull_batch()
            if not batch and not (self.jobs.spare and not self.deferred):
                return
            self.set_flag(AWAKE)  # a job arrived while we were deciding to sleep (a spare one waits in the loop)
            self.jobs.score(batch)

    def set_flag(self, value: int) -> None:
        """This mule's awake flag (serving.messages.awake_flag): only this mule writes it."""
        self.flags[awake_flag(self.id)] = value

    def pull_batch(self) -> list[Job]:
        """The next batch (:meth:`JobPath.pull_batch`), after reading the messages that arrived meanwhile."""
        self.swallow_wakeups()
        return self.jobs.pull_batch()

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

    # -- heartbeat -------------------------------------------------------------

    def heartbeat(self, state: MuleState | None = None) -> None:
        """Write this mule's heartbeat (``state`` by default: ready with a model, failed without)."""
        if state is None:
            state = MuleState.READY if self.serving else MuleState.FAILED
        pinned = self.models.pinned
        beat = Heartbeat(
            self.id, self.pid, state, pinned[1] if pinned else None, round(time.time(), 3),
            round(self.started, 3), self.jobs.jobs_done, self.error or None, self.models.held(),
        )  # fmt: skip
        self.uwsgi.cache_update(heartbeat_key(self.id), beat.encode(), 0, STATE_CACHE)
        self.last_heartbeat = time.time()


def main() -> None:
    import uwsgi

    settings = Settings()
    configure_logging(settings.log_level, f"mule {uwsgi.mule_id()}", settings.log_format)
    Mule(settings, uwsgi).run()
