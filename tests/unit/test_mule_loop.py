"""The mule loop, in-process: the wake handshake, reloads met while draining, expired jobs, harakiri.

A real :class:`mules.loop.Mule` with a real small model, driven step by step against
the fake ``uwsgi`` module (``tests/unit/fake_uwsgi.py``); the worker's side is the real
:class:`app.mule_client.MuleClient` (its push and wake) and its real notice channel.
Nothing here waits on time: a mule that would sleep raises ``MuleIdle`` instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest

from app.mule_channel import Channel
from app.mule_client import MuleClient
from forecast.registry import Registry
from forecast.train import TrainResult
from mules.loop import SHADOW_BACKLOG, Mule
from serving.messages import (
    AWAKE,
    CONTROL_WAKE,
    NOTICE_CLAIMED,
    RESULT_CACHE,
    Job,
    LoadRequest,
    Result,
    ShadowJob,
    awake_flag,
    encode_predictions,
    encode_rows,
)
from serving.settings import Settings
from tests.helpers import wait_for
from tests.unit.fake_uwsgi import FakeUwsgi, MuleIdle

DAY = 16_161  # 2014-04-01: inside the small model's data


@pytest.fixture
def two_versions(registry: Registry, small_model: TrainResult) -> Registry:
    """``registry`` with v1 (production) and v2 (the same model, registered again)."""
    registry.register(small_model.model_text, small_model.metadata)
    return registry


class Worker:
    """One worker thread's side: the real client's push and wake, and a real notice channel."""

    def __init__(self, shared: FakeUwsgi, settings: Settings) -> None:
        self.client = MuleClient(settings, shared)
        self.channel: Channel = self.client.jobs.channels.mine()
        self.channel.begin()

    def job(self, store: int = 1, deadline_in_s: float = 30, model: str = "default", version: str = "v1") -> Job:
        rows = encode_rows([DAY], [store], [1])
        deadline = time.time() + deadline_in_s
        return Job(self.channel.new_job_id(), self.channel.address, deadline, rows, model, version)

    def send(self, job: Job) -> None:
        """What MuleClient.predict does with a job: push it, then wake a sleeping mule."""
        self.client.jobs._push(job)
        self.client.jobs._wake(1)


def settings_for(registry: Registry, **overrides: int) -> Settings:
    return Settings(registry_dir=registry.root, metrics_enabled=False, mules=1, queue_slots=16, **overrides)


@pytest.fixture
def shared() -> FakeUwsgi:
    return FakeUwsgi(mules=1)


@pytest.fixture
def mule(registry: Registry, shared: FakeUwsgi) -> Iterator[Mule]:
    mule = Mule(settings_for(registry), shared.mule(1))
    mule.start()  # loads production, drains the empty queue, goes to sleep
    yield mule
    mule.jobs.notices.close()


@pytest.fixture
def worker(shared: FakeUwsgi, registry: Registry) -> Iterator[Worker]:
    worker = Worker(shared, settings_for(registry))
    yield worker
    worker.channel.close()


def result(shared: FakeUwsgi, job_id: bytes) -> Result:
    return Result.decode(shared.caches["results"][job_id.hex()])


def test_a_job_pushed_while_the_mule_decides_to_sleep_is_still_scored(
    mule: Mule, shared: FakeUwsgi, worker: Worker
) -> None:
    """The worker pushes, then reads the flag; the mule clears the flag, then looks at the queue once more.

    Here the push lands after the mule's last empty pull and before it clears its flag: the worker
    reads "awake" and sends no wake-up, so only the mule's last look can find the job.
    """
    job = worker.job()
    pushed: list[Job] = []

    def push_at_the_worst_moment(item: bytes | None) -> None:
        if item is None and not pushed and shared.area[awake_flag(1)] == AWAKE:
            pushed.append(job)
            worker.send(job)

    shared.after_pull = push_at_the_worst_moment
    shared.mule_msg(CONTROL_WAKE, 1)
    mule.step()
    assert pushed == [job]
    assert shared.inboxes[1].empty(), "the flag read 'awake': no wake-up was sent"
    assert result(shared, job.id).ok
    assert shared.queued() == 0
    with pytest.raises(MuleIdle):  # and the mule then sleeps with nothing left behind
        mule.step()


@pytest.fixture
def closing() -> Iterator[list[Mule | Worker]]:
    """Mules and workers a test makes itself, closed at teardown whatever the test's outcome."""
    made: list[Mule | Worker] = []
    yield made
    for each in made:
        (each.jobs.notices if isinstance(each, Mule) else each.channel).close()


def test_a_reload_met_while_draining_is_served_before_the_rest_of_the_queue(
    two_versions: Registry, shared: FakeUwsgi, closing: list[Mule | Worker]
) -> None:
    settings = settings_for(two_versions, mule_batch_rows=1)
    mule = Mule(settings, shared.mule(1))
    worker = Worker(shared, settings)
    closing += [mule, worker]
    mule.start()
    jobs = [worker.job(store) for store in (1, 2, 3)]
    for job in jobs:
        worker.send(job)
    reload = LoadRequest(worker.channel.new_job_id(), worker.channel.address, "v2", time.time() + 30, "default")
    shared.mule_msg(reload.encode(), 1)  # behind the wake-up the first push sent
    mule.step()  # drains: the first batch (one job) is scored, then the reload is met and kept
    assert [job.id.hex() in shared.caches["results"] for job in jobs] == [True, False, False]
    mule.step()  # the reload: load v2 and serve it by default, answer, then drain the rest
    assert result(shared, reload.job_id).ok
    answered = list(shared.caches["results"])  # in the order the mule wrote them
    assert answered == [jobs[0].key, reload.job_id.hex(), jobs[1].key, jobs[2].key]
    assert mule.models.pinned == ("default", "v2")
    assert set(mule.models.held()) == {("default", "v1"), ("default", "v2")}  # v1's jobs in flight still score


def test_jobs_whose_deadline_passed_are_claimed_and_dropped_unscored(
    mule: Mule, shared: FakeUwsgi, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    expired, fresh = worker.job(deadline_in_s=-1), worker.job()
    worker.send(expired)
    worker.send(fresh)
    with caplog.at_level(logging.WARNING, logger="mules"):
        mule.step()
    assert expired.id.hex() not in shared.caches["results"]
    assert result(shared, fresh.id).ok
    claims = {notice.job_id for notice in worker.channel.received_claims() if notice.kind == NOTICE_CLAIMED}
    assert claims == {expired.id, fresh.id}  # its worker learns who held it, and stops waiting at its deadline
    assert [r.message for r in caplog.records] == [
        f"mule 1 dropped job {expired.key}: deadline passed before it was scored"
    ]


class WatchingPredictor:
    """Records the user harakiri armed while it predicts (and fails when asked)."""

    def __init__(self, mule: Mule, fail: bool) -> None:
        self.mule, self.fail = mule, fail
        self.version = "v1"
        self.armed: list[int] = []

    def predict(self, rows: object) -> np.ndarray:
        self.armed.append(self.mule.uwsgi.harakiri)
        if self.fail:
            raise RuntimeError("boom")
        return np.ones(1)


def test_jobs_of_other_models_load_on_first_use_and_say_so(
    two_versions: Registry, small_model: TrainResult, shared: FakeUwsgi, worker: Worker, mule: Mule
) -> None:
    """One mule pool for every model: a named model's version is loaded by the first job naming it."""
    named = two_versions.named("store-3")
    named.set_alias("production", named.verify(named.register(small_model.model_text, small_model.metadata)).version)
    first, second = worker.job(model="store-3"), worker.job(model="store-3")
    worker.send(first)
    mule.step()
    worker.send(second)
    mule.step()
    assert (result(shared, first.id).loaded, result(shared, second.id).loaded) == (True, False)
    missing = worker.job(model="store-3", version="v7")
    worker.send(missing)
    mule.step()
    refused = result(shared, missing.id)
    assert (refused.ok, refused.unloadable) == (False, True)
    assert refused.error.startswith("model 'store-3' version v7 cannot be loaded: version 'v7' does not exist")


@pytest.mark.parametrize("fail", [False, True])
def test_the_predict_call_runs_under_harakiri_and_disarms_it_after(
    mule: Mule, shared: FakeUwsgi, worker: Worker, fail: bool
) -> None:
    """A predict call that hangs longer than FORECAST_MULE_HARAKIRI_S gets the mule killed and respawned."""
    predictor = WatchingPredictor(mule, fail)
    mule.models.get = lambda key: (predictor, False)  # type: ignore[method-assign,assignment,return-value]
    job = worker.job()
    worker.send(job)
    mule.step()
    assert predictor.armed == [mule.settings.mule_harakiri_s]
    assert mule.uwsgi.harakiri == 0
    assert result(shared, job.id).ok is not fail


def shadow_of(worker: Worker, deadline_in_s: float = 30) -> ShadowJob:
    rows = encode_rows([DAY, DAY + 1], [1, 2], [1, 1])
    return ShadowJob(time.time() + deadline_in_s, "default", "v1", "v1", rows, encode_predictions(np.array([5.0, 6.0])))


def test_production_jobs_go_before_shadow_jobs_and_a_busy_mule_drops_shadows(
    mule: Mule, shared: FakeUwsgi, worker: Worker
) -> None:
    """Shadow work is done in spare time only: every queued job first, then shadows; too many are dropped."""
    scored: list[str] = []
    score_shadow = mule.jobs.score_shadow
    mule.jobs.score_shadow = lambda job: scored.append("shadow") or score_shadow(job)  # type: ignore[method-assign,func-returns-value]
    score = mule.jobs.score
    mule.jobs.score = lambda batch: scored.extend("job" for _ in batch) or score(batch)  # type: ignore[method-assign,func-returns-value]
    dropped: list[str] = []
    mule.metrics.shadow_dropped = lambda model, reason: dropped.append(reason)  # type: ignore[method-assign]
    for _ in range(SHADOW_BACKLOG + 3):  # more than a mule keeps: the oldest are dropped
        shared.mule_msg(shadow_of(worker).encode(), 1)
    shared.mule_msg(shadow_of(worker, deadline_in_s=-1).encode(), 1)  # no longer wanted
    jobs = [worker.job(store) for store in (1, 2, 3)]
    for job in jobs:
        worker.send(job)
    mule.step()
    assert scored[:3] == ["job", "job", "job"]  # production first
    assert scored.count("shadow") == SHADOW_BACKLOG  # what the backlog kept (the expired one is dropped there)
    assert sorted(dropped) == ["backlog"] * 4 + ["expired"]
    assert all(result(shared, job.id).ok for job in jobs)


def test_spare_jobs_wait_for_every_live_job_and_go_before_shadows(mule: Mule, shared: FakeUwsgi,
                                                                   worker: Worker) -> None:  # fmt: skip
    """A spare job (realised accuracy) pushed first is scored after the live jobs pushed after it, one at a time,
    before shadow work; it is answered like any job, and one nobody waits for any more is dropped unscored."""
    scored: list[str] = []
    score_group = mule.jobs.score_group

    def noted(key: tuple[str, str], jobs: list[Job], outputs: tuple[str, ...] = ()) -> None:
        scored.extend("spare" if job.spare else "job" for job in jobs)
        score_group(key, jobs, outputs)

    mule.jobs.score_group = noted  # type: ignore[method-assign]
    score_shadow = mule.jobs.score_shadow
    mule.jobs.score_shadow = lambda job: scored.append("shadow") or score_shadow(job)  # type: ignore[method-assign,func-returns-value]
    spare = dataclasses.replace(worker.job(store=4), spare=True)
    expired = dataclasses.replace(worker.job(store=5, deadline_in_s=0.3), spare=True)
    for job in (spare, expired):
        worker.send(job)
    shared.mule_msg(shadow_of(worker).encode(), 1)
    live = [worker.job(store) for store in (1, 2, 3)]
    for job in live:
        worker.send(job)
    wait_for(lambda: expired.deadline < time.time())  # it waits in the mule, as it would behind live traffic
    mule.step()
    assert scored == ["job", "job", "job", "spare", "shadow"]
    assert result(shared, spare.id).ok
    assert all(result(shared, job.id).ok for job in live)
    assert not shared.cache_exists(expired.key, RESULT_CACHE)


def test_a_mule_whose_socket_is_full_refuses_a_shadow_job_at_once(registry: Registry) -> None:
    """The worker never waits for shadow work: mule_msg answering False drops it (counted as busy)."""
    shared = FakeUwsgi(queue_slots=16, mules=1)
    shared.mule_msg = lambda message, mule_id: False  # type: ignore[method-assign]
    client = MuleClient(settings_for(registry), shared)
    assert client.submit_shadow(ShadowJob(time.time() + 30, "default", "v2", "v1", b"", b"")) is False
