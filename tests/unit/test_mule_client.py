"""The mule client, in-process: dead-mule rescue, the admission bound and its release, results in order.

The real :class:`app.mule_client.MuleClient` against the fake ``uwsgi`` module, with
scripted mules in threads standing in for mule processes: each waits for its wake-up
message (no polling, no sleeps), pulls a job, and either answers it or "dies" holding it
(claims it under a pid the client's liveness check calls dead).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from app.errors import DeadlineExceeded, Unavailable
from app.mule_client import MuleClient
from app.prediction import Part
from serving.columns import Columns
from serving.messages import (
    NOTICE_CLAIMED,
    NOTICE_DONE,
    STATE_CACHE,
    Heartbeat,
    Job,
    LoadRequest,
    MuleState,
    Notice,
    Result,
    claims_address,
    decode_rows,
    encode_predictions,
    heartbeat_key,
)
from serving.settings import Settings
from tests.helpers import wait_for
from tests.unit.fake_uwsgi import FakeUwsgi

ALIVE, DEAD = 1001, 1002  # pids of the scripted mules, as the client's liveness check sees them


@dataclass
class ScriptedMule:
    """A mule in a thread: for each job it pulls, the next step of ``script`` ("answer", "die", "vanish")."""

    shared: FakeUwsgi
    script: list[str]
    release: threading.Event = field(default_factory=threading.Event)  # set: start pulling
    seen: list[Job] = field(default_factory=list)
    mule_id: int = 1

    def __post_init__(self) -> None:
        self.release.set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notices:
            while self.script:
                self.shared.inboxes[self.mule_id].get()  # a wake-up: the client pushed something
                self.release.wait()
                while self.script and (data := self.shared.queue_pull()) is not None:
                    self._handle(Job.decode(data), self.script.pop(0), notices)

    def _handle(self, job: Job, step: str, notices: socket.socket) -> None:
        self.seen.append(job)
        if step == "vanish":  # killed between pulling the job and claiming it
            return
        pid = DEAD if step == "die" else ALIVE
        notify(notices, Notice(NOTICE_CLAIMED, job.id, pid), claims_address(job.reply_to))
        if step == "die":
            return
        stores = decode_rows(job.rows)[:, 1].astype(float)
        if step == "unloadable":
            error = f"model {job.model!r} version {job.version} cannot be loaded: no such version"
            result = Result(job.id, 1, ALIVE, job.version, error=error, unloadable=True)
        else:  # version v2 answers 1000 more, so a test can tell which version scored a row
            offset = 1000 if job.version == "v2" else 0
            result = Result(job.id, 1, ALIVE, job.version, predictions=encode_predictions(100 + offset + stores))
        self.shared.cache_update(job.key, result.encode(), 0, "results")
        notify(notices, Notice(NOTICE_DONE, job.id, ALIVE), job.reply_to)


def notify(notices: socket.socket, notice: Notice, address: bytes) -> None:
    """As a real mule does: a worker that already left (its tick found the result first) is no error."""
    with contextlib.suppress(OSError):
        notices.sendto(notice.encode(), address)


def make_client(shared: FakeUwsgi, **overrides: int) -> MuleClient:
    settings = Settings(mules=1, queue_slots=shared.queue_size, mule_check_interval_ms=5, metrics_enabled=False,
                        **overrides)  # fmt: skip
    return MuleClient(settings, shared, alive=lambda pid: pid != DEAD)


@pytest.fixture
def shared() -> FakeUwsgi:
    return FakeUwsgi(queue_slots=16, mules=1)


def start(mule: ScriptedMule) -> ScriptedMule:
    mule.thread.start()
    return mule


@pytest.fixture
def client(shared: FakeUwsgi) -> Iterator[MuleClient]:
    client = make_client(shared)
    yield client
    client.jobs.channels.mine().close()


def columns(stores: list[int]) -> Columns:
    return Columns.of([16_161] * len(stores), stores, [1] * len(stores))


def rows_of(stores: list[int]) -> tuple[str, list[Part]]:
    """The default model's rows of ``stores``, all for v1."""
    return "default", [Part("v1", columns(stores))]


def test_a_job_whose_mule_dies_holding_it_is_pushed_again_once_and_answered(
    shared: FakeUwsgi, client: MuleClient
) -> None:
    mule = start(ScriptedMule(shared, ["die", "answer"]))
    prediction = client.predict(*rows_of([7]), time.time() + 10)
    assert prediction.sales.tolist() == [107.0]
    assert [job.attempt for job in mule.seen] == [1, 2]
    assert mule.seen[0].id == mule.seen[1].id
    assert client.admission.in_flight == 0


def test_a_job_whose_mule_dies_before_claiming_it_is_pushed_again_once_and_answered(
    shared: FakeUwsgi, client: MuleClient
) -> None:
    """The mule pulled the job and was killed before its claim: no owner to check, the job out of the queue."""
    beat = Heartbeat(1, DEAD, MuleState.READY, "v1", time.time(), 0.0, 0)  # the mule about to die
    shared.cache_update(heartbeat_key(1), beat.encode(), 0, STATE_CACHE)
    mule = start(ScriptedMule(shared, ["vanish", "answer"]))
    prediction = client.predict(*rows_of([7]), time.time() + 10)
    assert prediction.sales.tolist() == [107.0]
    assert [job.attempt for job in mule.seen] == [1, 2]
    assert client.admission.in_flight == 0


def test_one_death_pushes_one_unclaimed_job_again_however_many_wait(shared: FakeUwsgi) -> None:
    """A mule claims each job as it pulls it: one death can lose one unclaimed job, and the queue never grows more."""
    shared.cache_update(heartbeat_key(1), Heartbeat(1, DEAD, MuleState.READY, "v1", time.time(), 0.0, 0).encode(),
                        0, STATE_CACHE)  # fmt: skip
    client = make_client(shared, mule_batch_rows=1, uwsgi_processes=1)  # three one-row jobs, sent at once
    mule = ScriptedMule(shared, ["vanish", "answer", "answer", "answer"])
    mule.release.clear()  # all three jobs queued before the mule pulls
    start(mule)
    try:
        threading.Timer(0.05, mule.release.set).start()
        prediction = client.predict(*rows_of([7, 8, 9]), time.time() + 10)
    finally:
        client.jobs.channels.mine().close()
    assert prediction.sales.tolist() == [107.0, 108.0, 109.0]
    assert [(job.attempt, decode_rows(job.rows)[0, 1]) for job in mule.seen] == [(1, 7), (1, 8), (1, 9), (2, 7)]
    assert shared.queued() == 0  # nothing else was pushed again


def test_a_job_the_woken_mule_never_takes_is_taken_by_another_mule_woken_at_the_next_tick() -> None:
    shared = FakeUwsgi(queue_slots=16, mules=2)
    client = MuleClient(Settings(mules=2, queue_slots=16, mule_check_interval_ms=5, metrics_enabled=False),
                        shared, alive=lambda pid: pid != DEAD)  # fmt: skip
    second = start(ScriptedMule(shared, ["answer"], mule_id=2))  # mule 1 is "respawning": it never pulls
    try:
        prediction = client.predict(*rows_of([4]), time.time() + 5)
    finally:
        client.jobs.channels.mine().close()
    assert prediction.sales.tolist() == [104.0]
    assert [job.attempt for job in second.seen] == [1]  # the same job, not pushed again
    assert shared.inboxes[1].qsize() >= 2  # mule 1 was woken first, then again with mule 2


def test_a_second_death_answers_503_mule_died(shared: FakeUwsgi, client: MuleClient) -> None:
    mule = start(ScriptedMule(shared, ["die", "die"]))
    with pytest.raises(Unavailable) as refused:
        client.predict(*rows_of([7]), time.time() + 10)
    assert (refused.value.code, refused.value.job) == ("mule_died", mule.seen[0].key)
    assert [job.attempt for job in mule.seen] == [1, 2]
    assert client.admission.in_flight == 0


def test_a_request_split_into_jobs_is_reassembled_in_order(shared: FakeUwsgi) -> None:
    client = make_client(shared, mule_batch_rows=2)  # two rows per job
    start(ScriptedMule(shared, ["answer"] * 3))
    assert client.predict(*rows_of([1, 2, 3, 4, 5]), time.time() + 10).sales.tolist() == [101, 102, 103, 104, 105]
    client.jobs.channels.mine().close()


def test_rows_of_two_versions_come_back_in_request_order(shared: FakeUwsgi, client: MuleClient) -> None:
    """A canary split: each version's rows are one job, the answer is in the request's order."""
    whole = columns([1, 2, 3, 4])
    production = Part("v1", whole.take(np.array([0, 2])), np.array([0, 2]))
    canary = Part("v2", whole.take(np.array([1, 3])), np.array([1, 3]))
    start(ScriptedMule(shared, ["answer", "answer"]))
    prediction = client.predict("default", [production, canary], time.time() + 10)
    assert prediction.sales.tolist() == [101, 1102, 103, 1104]
    assert prediction.versions == ["v1", "v2", "v1", "v2"]
    assert prediction.version_label() == "v1,v2"


def test_a_model_that_does_not_load_is_a_503_naming_it(shared: FakeUwsgi, client: MuleClient) -> None:
    start(ScriptedMule(shared, ["unloadable"]))
    with pytest.raises(Unavailable) as refused:
        client.predict("store-7", [Part("v9", columns([1]))], time.time() + 10)
    assert refused.value.code == "model_unavailable"
    assert refused.value.message == "model 'store-7' version v9 cannot be loaded: no such version"


def test_jobs_past_the_share_are_refused_at_once_and_nothing_is_pushed(shared: FakeUwsgi) -> None:
    client = make_client(shared, mule_batch_rows=1, uwsgi_processes=1)  # a share of 15 jobs
    assert client.admission.acquire(14)  # the worker's other threads hold all but one
    with pytest.raises(Unavailable) as refused:
        client.predict(*rows_of([1, 2]), time.time() + 10)
    assert refused.value.code == "overloaded"
    assert (shared.queued(), client.admission.in_flight) == (0, 14)


def test_a_request_of_more_jobs_than_half_the_share_is_sent_in_rounds(shared: FakeUwsgi) -> None:
    client = make_client(shared, mule_batch_rows=1, uwsgi_processes=1)  # a share of 15 jobs: rounds of 7
    held: list[int] = []
    acquire = client.admission.acquire

    def recording(jobs: int) -> bool:
        held.append(jobs)
        return acquire(jobs)

    client.admission.acquire = recording  # type: ignore[method-assign]
    start(ScriptedMule(shared, ["answer"] * 16))
    stores = list(range(1, 17))
    assert client.predict(*rows_of(stores), time.time() + 10).sales.tolist() == [100 + s for s in stores]
    assert held == [7, 7, 2]
    assert client.admission.in_flight == 0
    client.jobs.channels.mine().close()


def test_jobs_are_released_when_the_wait_gives_up(shared: FakeUwsgi, client: MuleClient) -> None:
    with pytest.raises(DeadlineExceeded):  # no mule answers
        client.predict(*rows_of([1]), time.time() + 0.05)
    assert client.admission.in_flight == 0


def test_the_queue_never_wraps_under_concurrent_requests(shared: FakeUwsgi) -> None:
    """uWSGI's queue overwrites unread slots silently; the admission bound keeps jobs in flight below it."""
    client = make_client(shared, mule_batch_rows=1, uwsgi_processes=1)
    limit = client.admission.limit
    mule = ScriptedMule(shared, ["answer"] * limit)
    mule.release.clear()  # the mule sits on the queue until every request has been admitted or refused
    start(mule)
    outcomes: list[str] = []

    def request(store: int) -> None:
        try:
            sales = client.predict(*rows_of([store]), time.time() + 30).sales.tolist()
            outcomes.append("ok" if sales == [100 + store] else f"wrong answer {sales}")
        except Unavailable as refused:
            outcomes.append(refused.code)
        finally:
            client.jobs.channels.mine().close()

    threads = [threading.Thread(target=request, args=(store,)) for store in range(1, 2 * limit + 3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: outcomes.count("overloaded") == len(threads) - limit, explain=lambda: str(outcomes))
    wait_for(lambda: shared.queued() == limit, explain=lambda: f"{shared.queued()} jobs queued")
    mule.release.set()
    for thread in threads:
        thread.join()
    assert sorted(set(outcomes)) == ["ok", "overloaded"]
    assert outcomes.count("ok") == limit
    assert shared.overwrites == 0
    assert client.admission.in_flight == 0


def answer_load(shared: FakeUwsgi, answering_pid: int) -> threading.Thread:
    """Mule 1 in a thread: reads one load request from its inbox and answers it as ``answering_pid``."""

    def run() -> None:
        request = LoadRequest.decode(shared.inboxes[1].get())
        result = Result(request.job_id, 1, answering_pid, request.version)
        shared.cache_update(request.job_id.hex(), result.encode(), 0, "results")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notices:
            notify(notices, Notice(NOTICE_DONE, request.job_id, answering_pid), request.reply_to)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_load_answered_by_the_mule_asked_is_its_answer(shared: FakeUwsgi, client: MuleClient) -> None:
    answer_load(shared, ALIVE)
    result = client.load(1, "v2", ALIVE)
    assert (result.mule_pid, result.model_version, result.ok) == (ALIVE, "v2", True)


def test_a_load_answered_by_a_respawn_of_the_mule_asked_is_its_death(shared: FakeUwsgi, client: MuleClient) -> None:
    """The asked mule died; its respawn read the same message and answered before any owner check ran."""
    answer_load(shared, ALIVE + 7)
    result = client.load(1, "v2", ALIVE)
    assert result.error == f"the mule (pid {ALIVE}) died loading it"
    assert result.mule_pid == ALIVE


def test_admission_counts_and_releases() -> None:
    from app.admission import Admission

    admission = Admission(limit=3)
    assert admission.acquire(2)
    assert not admission.acquire(2)  # nothing added when it does not fit
    assert admission.in_flight == 2
    assert admission.acquire(1)
    admission.release(3)
    assert admission.in_flight == 0
    assert np.all([admission.acquire(1) for _ in range(3)])
