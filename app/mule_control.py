"""The control path of the web worker's mule client: load a model version into one mule, hand a shadow job over.

Off the request path: :meth:`MuleControl.load` is what the rolling reload (:mod:`app.rollout`)
is built on, one mule at a time; :meth:`MuleControl.submit_shadow` sends a sample of answered
rows to a mule's message pipe, never through the jobs' queue.  The data path (scoring a
request's rows) is :class:`app.mule_client.MuleJobs`; both share each thread's channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.errors import DeadlineExceeded, Reason, Unavailable
from app.mule_channel import Channels
from forecast.registry import DEFAULT_MODEL
from serving.messages import NOTICE_CLAIMED, RESULT_CACHE, LoadRequest, Result, ShadowJob
from serving.metrics import SHADOW_DROPPED
from serving.settings import Settings


class MuleControl:
    """Load versions into mules and submit shadow jobs; thread-safe (each thread waits on its own channel).

    ``alive`` tells whether a mule's pid still runs (a parameter so that tests can kill mules
    that are threads).
    """

    def __init__(self, settings: Settings, uwsgi: Any, alive: Callable[[int], bool], channels: Channels) -> None:
        self.settings = settings
        self.uwsgi = uwsgi
        self.alive = alive
        self.channels = channels
        self.mule_ids = list(range(1, settings.mules + 1))
        self._shadow_turn = 0

    def submit_shadow(self, job: ShadowJob) -> bool:
        """Hand a shadow job to the next mule (round robin), never waiting: False when its socket is full.

        Never through the queue: a shadow job must not delay or displace a production job.
        """
        self._shadow_turn = (self._shadow_turn + 1) % len(self.mule_ids)
        sent = bool(self.uwsgi.mule_msg(job.encode(), self.mule_ids[self._shadow_turn]))
        if not sent and self.settings.metrics_enabled:
            SHADOW_DROPPED.labels(job.model, "busy").inc()
        return sent

    def load(self, mule_id: int, version: str, pid: int | None, model: str = DEFAULT_MODEL) -> Result:
        """Have mule ``mule_id`` load ``version`` while the others serve; its answer (ok, or why not).

        ``pid`` is the mule's, from its last heartbeat: if that process dies before it answers
        (a model that crashes LightGBM, an OOM kill), the answer says so at the next owner check
        instead of after ``FORECAST_RELOAD_TIMEOUT_S`` (or as soon as its respawn answers in its place).
        Raises :class:`Unavailable` when the mule cannot take messages or answers without a result,
        :class:`DeadlineExceeded` at the timeout.
        """
        channel = self.channels.mine()
        channel.begin()
        deadline = time.time() + self.settings.reload_timeout_s
        request = LoadRequest(channel.new_job_id(), channel.address, version, deadline, model)
        if not self.uwsgi.mule_msg(request.encode(), mule_id):
            raise Unavailable(f"mule {mule_id} cannot take messages now", Reason.UNAVAILABLE)
        for notice in channel.notices(deadline, self.settings.mule_check_interval_ms / 1000):
            if notice is None:
                if pid is not None and not self.alive(pid):
                    return self._died_loading(request, mule_id, pid)
            elif notice.job_id == request.job_id and notice.kind != NOTICE_CLAIMED:
                channel.end()
                result = self._load_result(mule_id, request)
                if pid is not None and result.mule_pid != pid:
                    # The asked mule died and its respawn, reading the same message pipe, answered
                    # before the owner check saw the death: still a death while loading.
                    return self._died_loading(request, mule_id, pid)
                return result
        raise DeadlineExceeded(f"mule {mule_id} did not load {version} within {self.settings.reload_timeout_s} s")

    @staticmethod
    def _died_loading(request: LoadRequest, mule_id: int, pid: int) -> Result:
        return Result(request.job_id, mule_id, pid, request.version, error=f"the mule (pid {pid}) died loading it")

    def _load_result(self, mule_id: int, request: LoadRequest) -> Result:
        key = request.job_id.hex()
        data = self.uwsgi.cache_get(key, RESULT_CACHE)
        self.uwsgi.cache_del(key, RESULT_CACHE)
        if data is None:
            raise Unavailable(f"mule {mule_id} answered the reload without a result", Reason.RESULT_LOST)
        return Result.decode(data)
