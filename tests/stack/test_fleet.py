"""Two pods sharing one registry: a promote reaches both by itself, one pod at a time, and neither leaves.

Two real stacks (nginx + uWSGI + mules each) serve one registry directory, as pods of a
Deployment share a volume.  Nobody calls ``/reload``: each pod's poller picks the promote up.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import wait_for
from tests.stack.stacks import UNDER_LOAD, start_stack

pytestmark = UNDER_LOAD  # a module under load (tests/stack/stacks.py)

ROW = {"date": "2018-01-21", "store": 3, "item": 7}


@pytest.fixture
def fleet(tmp_path: Path, serving_registry: Registry) -> Iterator[tuple[Stack, Stack, Registry]]:
    shutil.copytree(serving_registry.root, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    settings = {"FORECAST_REGISTRY_POLL_S": "1", "FORECAST_ROLLOUT_MAX_PODS": "1"}
    first = start_stack(tmp_path / "pod-a", registry, **settings)
    try:
        second = start_stack(tmp_path / "pod-b", registry, **settings)
    except BaseException:
        first.stop()
        raise
    yield first, second, registry
    second.stop()
    first.stop()


def production(stack: Stack) -> str:
    routes = requests.get(f"{stack.url}/models", timeout=5).json()["models"]["default"]["routes"]
    return str(routes["production"]) if routes else ""


def rollout_window(stack: Stack, version: str) -> tuple[dt.datetime, dt.datetime]:
    """When this pod rolled ``version`` through its mules, from its log lines."""
    log = stack.uwsgi_log.read_text()

    def at(pattern: str) -> dt.datetime:
        match = re.search(r"^(\S+ \S+) INFO \[worker\] app.rollout: " + pattern, log, re.M)
        assert match is not None, pattern
        return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")

    return at(f"rollout of default {version} through mules"), at(f"rollout of default {version} done")


def test_a_promote_reaches_every_pod_one_at_a_time_and_no_pod_leaves(fleet: tuple[Stack, Stack, Registry]) -> None:
    first, second, registry = fleet
    wait_for(lambda: production(first) == production(second) == "v1")
    answers: Counter[tuple[str, int]] = Counter()
    statuses: Counter[tuple[str, int]] = Counter()
    stop = threading.Event()

    def traffic(stack: Stack, name: str) -> None:
        session = requests.Session()
        while not stop.is_set():
            answers[name, session.post(f"{stack.url}/predict", json=ROW, timeout=30).status_code] += 1
            statuses[name, session.get(f"{stack.url}/status", timeout=30).status_code] += 1

    threads = [threading.Thread(target=traffic, args=(stack, name)) for stack, name in ((first, "a"), (second, "b"))
               for _ in range(3)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        registry.promote("v2")
        wait_for(lambda: production(first) == production(second) == "v2", 60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(answers) == {("a", 200), ("b", 200)}, answers  # no failed request
    assert set(statuses) == {("a", 200), ("b", 200)}, statuses  # /status never 503: no pod left its Service
    windows = sorted(rollout_window(stack, "v2") for stack in (first, second))
    assert windows[0][1] <= windows[1][0], windows  # one pod at a time (FORECAST_ROLLOUT_MAX_PODS=1)
    # every worker routes by the new routes within ROUTES_TTL_S of their publication
    wait_for(lambda: requests.post(f"{second.url}/predict", json=ROW, timeout=5).json()["model_version"] == "v2", 5)
