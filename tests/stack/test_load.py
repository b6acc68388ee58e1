"""Concurrency, overload, a killed mule: real nginx + uWSGI + mules under load."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from forecast.features import Rows
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import kaggle_test_rows, wait_for
from tests.stack.load import Outcome, distinct_rows, hammer, mule_pids, mules_stopped
from tests.stack.scrape import scrape, scrape_until
from tests.stack.stacks import UNDER_LOAD, start_stack

# A module under load (tests/stack/stacks.py).
pytestmark = UNDER_LOAD


def expected(registry: Registry, rows: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], float]:
    dates, stores, items = zip(*rows, strict=True)
    sales = registry.load("v1").predict(Rows.from_columns(list(dates), list(stores), list(items)))
    return dict(zip(rows, sales.tolist(), strict=True))


def status(stack: Stack) -> requests.Response:
    return requests.get(f"{stack.url}/status", timeout=5)


def test_thousands_of_concurrent_requests_get_their_own_answers(stack: Stack, serving_registry: Registry) -> None:
    rows = distinct_rows(4000)
    truth = expected(serving_registry, rows)
    outcomes = hammer(stack.url, rows, threads=32)
    assert Counter(o.status for o in outcomes) == {200: len(rows)}
    for outcome in outcomes:
        body = outcome.body
        assert isinstance(body, dict)
        assert (body["date"], body["store"], body["item"]) == outcome.row
        assert body["sales"] == pytest.approx(truth[outcome.row], rel=1e-12)


def burst(
    url: str, rows: list[tuple[str, int, int]], when_sent: Callable[[], None] = lambda: None
) -> list[tuple[int, dict[str, str], Any]]:
    """Send every row at once, one connection each, call ``when_sent``, then read the answers."""
    host, port = url.removeprefix("http://").split(":")
    connections = [socket.create_connection((host, int(port)), timeout=30) for _ in rows]
    answers = []
    try:
        for conn, row in zip(connections, rows, strict=True):
            body = json.dumps({"date": row[0], "store": row[1], "item": row[2]}).encode()
            head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            conn.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        when_sent()
        for conn in connections:
            response = http.client.HTTPResponse(conn)
            response.begin()
            answers.append((response.status, dict(response.getheaders()), json.loads(response.read())))
    finally:
        for conn in connections:
            conn.close()
    return answers


def test_more_simultaneous_requests_than_threads_wait_their_turn(stack: Stack, serving_registry: Registry) -> None:
    """300 requests at once (4 x 16 threads serve 64): the rest wait in the backlog (512), none is refused."""
    rows = distinct_rows(300, seed=2)
    truth = expected(serving_registry, rows)
    for row, (status_code, _, answer) in zip(rows, burst(stack.url, rows), strict=True):
        assert status_code == 200, answer
        assert answer["sales"] == pytest.approx(truth[row], rel=1e-12)


@pytest.fixture
def shallow_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    """A backlog of 16 requests; deadline and staleness far away (its test stops the mules a while)."""
    stack = start_stack(
        tmp_path, serving_registry, FORECAST_LISTEN_BACKLOG="16", FORECAST_DEADLINE_MS="60000",
        FORECAST_WORKER_HARAKIRI_S="90", FORECAST_MULE_STALE_AFTER_S="60",
    )  # fmt: skip
    yield stack
    stack.stop()


def test_a_burst_beyond_the_backlog_gets_nginx_503_in_the_error_shape(
    shallow_stack: Stack, serving_registry: Registry
) -> None:
    """With the mules stopped, 64 threads hold a request each and 16 more wait: nginx refuses the rest."""
    rows = distinct_rows(300, seed=4)
    truth = expected(serving_registry, rows)
    with mules_stopped(shallow_stack.url) as pids:
        answers = burst(shallow_stack.url, rows, when_sent=lambda: resume_after_refusals(shallow_stack, pids, 200))
    refused = [(headers, body) for status_code, headers, body in answers if status_code == 503]
    assert len(refused) >= 300 - 64 - 17  # the worker threads, and the backlog (Linux takes one more)
    assert {status_code for status_code, _, _ in answers} == {200, 503}
    for headers, body in refused:
        assert (body["status"], body["code"]) == (503, "unavailable")
        assert headers["Retry-After"] == "1"
        assert headers["Content-Type"].startswith("application/json")
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
    for row, (status_code, _, body) in zip(rows, answers, strict=True):
        if status_code == 200:
            assert body["sales"] == pytest.approx(truth[row], rel=1e-12)
    assert status(shallow_stack).status_code == 200


def resume_after_refusals(stack: Stack, pids: dict[int, int], count: int) -> None:
    """Once nginx has logged ``count`` refusals (its access log is flushed every second), let the mules go on."""
    wait_for(lambda: stack.access_log.exists() and stack.access_log.read_text().count("status=503") >= count)
    for pid in pids.values():
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def small_stack(tmp_path: Path, serving_registry: Registry) -> Iterator[Stack]:
    """A stack whose 4 workers admit one job each (8 queue slots): easy to overload.

    Deadline and staleness are far away, so stopping the mules for a while costs no request its answer.
    """
    stack = start_stack(
        tmp_path,
        serving_registry,
        FORECAST_UWSGI_PROCESSES="4",
        FORECAST_QUEUE_SLOTS="8",
        FORECAST_DEADLINE_MS="60000",
        FORECAST_WORKER_HARAKIRI_S="90",  # the deadline must stay below harakiri (the launcher refuses it)
        FORECAST_MULE_STALE_AFTER_S="60",
    )
    yield stack
    stack.stop()


def test_at_capacity_requests_are_refused_at_once_with_503_and_retry_after(
    small_stack: Stack, serving_registry: Registry
) -> None:
    """With the mules stopped, each worker's first request holds its one job slot; every other request
    is refused at once, and the held ones are answered once the mules go on."""
    rows = distinct_rows(64, seed=1)
    truth = expected(serving_registry, rows)
    before = scrape(small_stack.url)
    outcomes: list[Outcome] = []
    with mules_stopped(small_stack.url):
        loader = threading.Thread(target=hammer, args=(small_stack.url, rows, 64), kwargs={"done": outcomes})
        loader.start()
        wait_for(lambda: len(outcomes) >= len(rows) - 4)  # at most one held request per worker
    loader.join()
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) == {200, 503}, statuses
    assert 1 <= statuses[200] <= 4
    for outcome in outcomes:
        if outcome.status == 503:
            assert (outcome.body["code"], outcome.headers["Retry-After"]) == ("overloaded", "1")
        else:
            assert outcome.body["sales"] == pytest.approx(truth[outcome.row], rel=1e-12)
    name, reason = "forecast_rejected_requests_total", "overloaded"
    refused = scrape_until(
        small_stack.url, lambda now: now.value(name, reason=reason) - before.value(name, reason=reason) >= statuses[503]
    )
    assert refused.value(name, reason=reason) - before.value(name, reason=reason) == statuses[503]


def test_under_overload_nothing_but_503_fails_and_every_answer_is_right(
    small_stack: Stack, serving_registry: Registry
) -> None:
    rows = distinct_rows(3000, seed=1)
    truth = expected(serving_registry, rows)
    outcomes = hammer(small_stack.url, rows, threads=64)
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses  # no 504, no connection error: nothing hung
    assert statuses[200] > 0
    for outcome in outcomes:
        if outcome.status == 503:
            assert (outcome.body["code"], outcome.headers["Retry-After"]) == ("overloaded", "1")
        else:
            assert outcome.body["sales"] == pytest.approx(truth[outcome.row], rel=1e-12)
    assert status(small_stack).status_code == 200
    after = hammer(small_stack.url, rows[:50], threads=1)
    assert Counter(o.status for o in after) == {200: 50}


@pytest.fixture
def one_batch_stack(tmp_path: Path, heavy_registry: Registry) -> Iterator[Stack]:
    """Mules score up to 50,000 rows per LightGBM call: a big request keeps a mule busy in one call."""
    stack = start_stack(tmp_path, heavy_registry, FORECAST_MULE_BATCH_ROWS="50000", FORECAST_DEADLINE_MS="30000")
    yield stack
    stack.stop()


def test_a_mule_killed_while_scoring_does_not_strand_its_jobs(one_batch_stack: Stack, heavy_registry: Registry) -> None:
    """SIGKILL a mule inside its LightGBM call on a 45,000-row request: the request still succeeds."""
    own_stack = one_batch_stack
    rows = kaggle_test_rows()
    truth = expected(heavy_registry, rows)
    before = mule_pids(own_stack.url)
    answer: dict[str, requests.Response] = {}
    instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]

    def send() -> None:
        answer["response"] = requests.post(f"{own_stack.url}/predict", json=instances, timeout=30)

    sender = threading.Thread(target=send)
    sender.start()
    idle = {pid: cpu_ticks(pid) for pid in before.values()}
    victim: list[int] = []

    def a_mule_is_inside_a_long_predict() -> bool:
        """A mule that has used CPU since the request and is still running holds jobs."""
        victim[:] = [pid for pid in idle if cpu_ticks(pid) >= idle[pid] + 3 and process_state(pid) == "R"][:1]
        return bool(victim)

    wait_for(a_mule_is_inside_a_long_predict)
    os.kill(victim[0], signal.SIGKILL)
    sender.join()
    response = answer["response"]
    assert response.status_code == 200, response.text[:300]
    sales = [p["sales"] for p in response.json()["predictions"]]
    assert np.allclose(sales, [truth[r] for r in rows], rtol=1e-12)
    assert "pushing it again" in own_stack.uwsgi_log.read_text()
    wait_for(lambda: status(own_stack).status_code == 200 and victim[0] not in mule_pids(own_stack.url).values())
    metrics = scrape(own_stack.url)
    assert metrics.value("forecast_jobs_requeued_total") >= 1
    killed = next(mule for mule, pid in before.items() if pid == victim[0])
    assert metrics.value("forecast_mule_starts_total", mule=str(killed)) == 2  # the respawn counts


@pytest.fixture
def harakiri_stack(tmp_path: Path, heavy_registry: Registry) -> Iterator[Stack]:
    """A predict call may take 3 s; whole batches per call; deadline and staleness far away."""
    stack = start_stack(
        tmp_path, heavy_registry, FORECAST_MULE_HARAKIRI_S="3", FORECAST_MULE_BATCH_ROWS="50000",
        FORECAST_DEADLINE_MS="120000", FORECAST_WORKER_HARAKIRI_S="150", FORECAST_MULE_STALE_AFTER_S="120",
    )  # fmt: skip
    yield stack
    stack.stop()


def test_a_mule_stuck_in_a_predict_call_is_killed_by_harakiri_and_its_jobs_answered(
    harakiri_stack: Stack, heavy_registry: Registry
) -> None:
    """A mule stopped (SIGSTOP) inside its LightGBM call is stuck there: uWSGI's harakiri kills it after
    FORECAST_MULE_HARAKIRI_S, the master respawns it, and its jobs are pushed again and answered.
    A mule caught between two calls (harakiri not armed) is let go, and the next request tried."""
    url = harakiri_stack.url
    rows = kaggle_test_rows()[:16_000]  # about half a second of LightGBM: a window to catch a mule in
    truth = expected(heavy_registry, rows)
    before = mule_pids(url)
    for _ in range(10):
        response, victim = send_and_stop_a_scoring_mule(url, rows, list(before.values()))
        if victim is not None:
            break
    assert victim is not None, "no mule was ever caught inside a predict call"
    assert response.status_code == 200, response.text[:300]
    assert np.allclose([p["sales"] for p in response.json()["predictions"]], [truth[r] for r in rows], rtol=1e-12)
    assert "HARAKIRI" in harakiri_stack.uwsgi_log.read_text()
    wait_for(lambda: status(harakiri_stack).status_code == 200 and victim not in mule_pids(url).values())
    killed = next(mule for mule, pid in before.items() if pid == victim)
    assert scrape(url).value("forecast_mule_starts_total", mule=str(killed)) == 2  # respawned once


def send_and_stop_a_scoring_mule(
    url: str, rows: list[tuple[str, int, int]], pids: list[int]
) -> tuple[requests.Response, int | None]:
    """Send ``rows``, SIGSTOP the mule that scores them; (the answer, the pid harakiri killed, or None)."""
    answer: dict[str, requests.Response] = {}
    instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]
    sender = threading.Thread(
        target=lambda: answer.update(response=requests.post(f"{url}/predict", json=instances, timeout=120))
    )
    idle = {pid: cpu_ticks(pid) for pid in pids}
    sender.start()
    busy: list[int] = []

    def a_mule_scores() -> bool:
        """A mule that has used CPU since the request and is running is inside its predict call."""
        busy[:] = [pid for pid in pids if cpu_ticks(pid) >= idle[pid] + 3 and process_state(pid) == "R"][:1]
        return bool(busy) or not sender.is_alive()

    wait_for(a_mule_scores)
    killed = None
    if busy:
        os.kill(busy[0], signal.SIGSTOP)
        try:
            wait_for(lambda: not Path(f"/proc/{busy[0]}").exists() or process_state(busy[0]) == "Z", 8)
            killed = busy[0]
        except AssertionError:  # stopped between two calls: harakiri was not armed
            os.kill(busy[0], signal.SIGCONT)
    sender.join()
    return answer["response"], killed


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks used by ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_a_mule_killed_under_load_costs_at_most_the_requests_in_flight(
    own_stack: Stack, serving_registry: Registry
) -> None:
    rows = distinct_rows(3000, seed=2)
    truth = expected(serving_registry, rows)
    victim = mule_pids(own_stack.url)[2]
    results: list[Outcome] = []
    loader = threading.Thread(target=hammer, args=(own_stack.url, rows, 16), kwargs={"done": results})
    loader.start()
    wait_for(lambda: len(results) >= 300)  # under load: a tenth of the requests answered
    os.kill(victim, signal.SIGKILL)
    loader.join()
    statuses = Counter(o.status for o in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= len(rows) - 16  # at most the requests in flight at the kill may be refused
    for outcome in results:
        if outcome.status == 200:
            assert isinstance(outcome.body, dict)
            assert outcome.body["sales"] == pytest.approx(truth[outcome.row], rel=1e-12)
    wait_for(lambda: status(own_stack).status_code == 200 and mule_pids(own_stack.url)[2] != victim)
    metrics = scrape_until(own_stack.url, lambda now: now.value("forecast_jobs_in_flight") == 0)  # sampled gauge
    assert metrics.value("forecast_mule_starts_total", mule="2") == 2  # the respawn counts
    assert metrics.value("forecast_mule_starts_total", mule="1") == 1
    assert metrics.value("forecast_jobs_in_flight") == 0  # the killed mule's jobs were answered or given up
