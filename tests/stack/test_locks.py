"""A process killed while it holds one of uWSGI's shared locks: real nginx + uWSGI + mules, and gdb.

The queue and each cache have one lock, shared by every worker and mule. A process that dies
holding one (SIGKILL, the OOM killer, harakiri) must not take the others with it. uWSGI's default
lock engine makes these read-write locks pthread rwlocks, which are not robust: its deadlock
detector frees one only if the dead process was the last to take it, and only a reader's (glibc
lets only the writer's own thread release a write lock), so requests then hang or time out
(docs/how-it-works.md).
``lock-engine = ipcsem`` in uwsgi.ini makes them SysV semaphores taken with ``SEM_UNDO``, which
the kernel gives back when their holder dies. These tests stop a process, with gdb, at the entry
of a uWSGI function its callers enter only with the lock held, kill it there, and ask for answers.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from forecast.features import Rows
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import wait_for
from tests.stack.load import distinct_rows, mule_pids
from tests.stack.stacks import UNDER_LOAD

pytestmark = UNDER_LOAD  # a module under load (tests/stack/stacks.py)

# (whose lock, a uWSGI function entered with it held: its caller takes the lock around the call)
LOCKED_CALLS = [
    pytest.param("mule", "uwsgi_queue_pull", id="mule-in-queue-pull"),  # the queue's, taking a job
    pytest.param("mule", "uwsgi_cache_set2", id="mule-in-cache-set"),  # a cache's, writing a result or heartbeat
    # a cache's read lock: the results cache's (an answer) or the state cache's (the mules' view), whichever comes first
    pytest.param("worker", "uwsgi_cache_get3", id="worker-in-cache-get"),
]


@pytest.mark.parametrize(("who", "function"), LOCKED_CALLS)
def test_a_process_killed_holding_a_shared_lock_leaves_the_server_whole(
    own_stack: Stack, serving_registry: Registry, who: str, function: str
) -> None:
    url = own_stack.url
    before = serving_pids(own_stack)
    victim = mule_pids(url)[1] if who == "mule" else worker_pids(own_stack)[0]
    output = kill_inside(victim, function, url)
    assert "Breakpoint 1, " in output, output[-2000:]  # stopped there, then killed
    assert function in output, output[-2000:]
    wait_for(lambda: victim not in (now := serving_pids(own_stack)) and len(now) == len(before))  # respawned
    # Whole again: the respawned process loaded its model and its heartbeat reached the state cache.
    wait_for(lambda: requests.get(f"{url}/status", timeout=10).status_code == 200)
    rows = distinct_rows(20, seed=5)
    dates, stores, items = zip(*rows, strict=True)
    truth = serving_registry.load("v1").predict(Rows.from_columns(list(dates), list(stores), list(items)))
    for (date, store, item), sales in zip(rows, truth.tolist(), strict=True):  # no process hangs at the lock
        response = requests.post(f"{url}/predict", json={"date": date, "store": store, "item": item}, timeout=10)
        assert response.status_code == 200, response.text[:300]
        assert response.json()["sales"] == pytest.approx(sales, rel=1e-12)


def kill_inside(pid: int, function: str, url: str) -> str:
    """Stop ``pid`` with gdb at the entry of ``function`` and kill it there; gdb's output.

    Single-row requests are sent meanwhile, so that the function is reached (a mule's heartbeat
    reaches ``uwsgi_cache_set2`` on its own)."""
    command = ["gdb", "-nx", "-batch", "-p", str(pid), "-ex", f"break {function}", "-ex", "continue", "-ex", "kill"]
    with Traffic(url):
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout


class Traffic:
    """Single-row requests, one at a time, from a thread for the block; their answers are not checked
    (a request on the stopped process's path waits for it, or is refused once it is killed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        body = json.dumps({"date": "2018-01-01", "store": 1, "item": 1})
        while not self._stop.is_set():
            with contextlib.suppress(requests.RequestException):  # held by the stopped process, or refused
                requests.post(f"{self.url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=2)


def worker_pids(stack: Stack) -> list[int]:
    """The uWSGI web workers: the master's children that are not mules."""
    mules = set(mule_pids(stack.url).values())
    return [pid for pid in children(master_pid(stack)) if pid not in mules]


def serving_pids(stack: Stack) -> set[int]:
    return set(children(master_pid(stack)))


def master_pid(stack: Stack) -> int:
    assert stack.uwsgi is not None
    return stack.uwsgi.pid


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)
