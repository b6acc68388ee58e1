"""The stack file on a real (single-node) Docker Swarm, under steady load through its front.

In order, on one deployment: the stack deployed, every replica ready, predictions correct; a rolling
image update (start-first, health-gated) and ``docker service rollback``, with no failed request; an
image whose healthcheck never passes, rolled back by Swarm itself with no failed request; a replica's
container killed and replaced, only the requests in flight on it lost; scaled 2 -> 4 -> 2 with no
failed request; a promote from a one-off Swarm job on the shared registry volume followed by every
replica, ``/status`` 200 throughout. Each phase's requests (sent, answered 2xx, failed) are printed
at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests

from forecast.registry import Registry
from tests.docker.conftest import measured
from tests.docker.containers import TRAIN_A_SMALL_MODEL
from tests.docker.engine import docker
from tests.docker.load import REFUSED, Load, Outcome
from tests.docker.test_image import ROWS, lightgbm_sales
from tests.helpers import wait_for
from tests.swarm.conftest import Deployed
from tests.swarm.swarm import derived_image, memory_mib

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image (minutes on a clean machine)

THREADS = 8
NEXT, BROKEN = "forecast:swarm-test-next", "forecast:swarm-test-broken"
ENDED = {"completed", "rollback_completed", "paused", "rollback_paused"}  # Swarm's update states that end one
NEVER_HEALTHY = "HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=2 CMD false"


@contextmanager
def load_through(deployed: Deployed, phase: str) -> Iterator[Load]:
    """Steady load on the front for the block; the phase's counts noted for the summary."""
    with Load(deployed.url, threads=THREADS) as load:
        load.wait_for_answers(100)
        yield load
        load.wait_for_answers(100)
    sent = len(load.snapshot())
    failed = len(load.failures())
    measured(f"{phase}: {sent} sent, {load.count(200)} answered 200, {failed} failed ({load.summary()})")


def test_the_stack_deploys_every_replica_ready_and_predicting_correctly(deployed: Deployed, tmp_path: Path) -> None:
    replicas = deployed.stack.replicas()
    assert len(replicas) == 2
    assert all(r.status()["ready"] for r in replicas)
    instances = [{"date": d, "store": s, "item": i} for d, s, i in ROWS]
    answer = requests.post(f"{deployed.url}/predict", json=instances, timeout=10)
    assert answer.status_code == 200, answer.text
    docker("cp", f"{replicas[0].container}:/var/lib/forecast/registry", str(tmp_path))
    expected = lightgbm_sales(Registry(tmp_path / "registry"), ROWS)
    sales = np.array([p["sales"] for p in answer.json()["predictions"]])
    assert np.max(np.abs(sales - expected)) <= 1e-9


def test_a_rolling_image_update_and_a_rollback_by_hand_fail_no_request(deployed: Deployed) -> None:
    stack = deployed.stack
    before = {r.container for r in stack.replicas()}
    derived_image(deployed.image, NEXT)
    with load_through(deployed, "rolling image update") as load:
        started = time.monotonic()
        stack.deploy(NEXT)
        assert stack.wait_update(ENDED) == "completed", stack.explain()
        replicas = stack.wait_replicas(2, NEXT)
        measured(f"rolling image update: both replicas on the new image {time.monotonic() - started:.1f} s after "
                 "docker stack deploy")  # fmt: skip
    assert not before & {r.container for r in replicas}  # every replica replaced
    assert load.failures() == [], load.summary()
    with load_through(deployed, "docker service rollback") as load:
        started = time.monotonic()
        docker("service", "rollback", "--detach", stack.service)
        assert stack.wait_update(ENDED) == "rollback_completed", stack.explain()
        stack.wait_replicas(2, deployed.image)
        measured(f"docker service rollback: both replicas on the first image {time.monotonic() - started:.1f} s after")
    assert load.failures() == [], load.summary()


def test_an_image_that_never_gets_healthy_is_rolled_back_by_swarm(deployed: Deployed) -> None:
    stack = deployed.stack
    derived_image(deployed.image, BROKEN, NEVER_HEALTHY)
    with load_through(deployed, "update to a never-healthy image, rolled back") as load:
        stack.deploy(BROKEN)
        assert stack.wait_update(ENDED) == "rollback_completed", stack.explain()
        stack.wait_replicas(2, deployed.image)  # the old version, still serving
    assert load.failures() == [], load.summary()


def test_a_killed_replica_is_replaced_losing_at_most_the_requests_in_flight(deployed: Deployed) -> None:
    stack = deployed.stack
    killed, kept = stack.replicas()
    with load_through(deployed, "a replica's container killed") as load:
        docker("kill", "--signal", "KILL", killed.container)
        replicas = stack.wait_replicas(2, deployed.image)
    assert killed.container not in {r.container for r in replicas}
    assert kept.container in {r.container for r in replicas}
    lost: list[Outcome] = load.failures()
    assert len(lost) <= THREADS, load.summary()  # at most one in flight per load thread
    assert {o.result for o in lost} <= {"502"}, load.summary()
    assert load.count(REFUSED) == 0


def test_scaling_out_and_back_in_fails_no_request(deployed: Deployed) -> None:
    stack = deployed.stack
    with load_through(deployed, "scaled 2 -> 4 -> 2") as load:
        docker("service", "scale", "--detach", f"{stack.service}=4")
        replicas = stack.wait_replicas(4, deployed.image)
        load.wait_for_answers(200)
        memory = ", ".join(f"{mib:.0f}" for mib in memory_mib([r.container for r in replicas]))
        measured(f"memory per replica under load, 4 replicas (docker stats, MiB): {memory}")
        docker("service", "scale", "--detach", f"{stack.service}=2")
        stack.wait_replicas(2, deployed.image)
    assert load.failures() == [], load.summary()


def test_a_promote_from_a_one_off_job_reaches_every_replica(deployed: Deployed) -> None:
    stack = deployed.stack
    statuses: list[int | str] = []
    stop = threading.Event()

    def watch_status() -> None:
        while not stop.wait(0.2):
            try:
                statuses.append(requests.get(f"{deployed.url}/status", timeout=10).status_code)
            except requests.RequestException as exc:
                statuses.append(type(exc).__name__)

    watcher = threading.Thread(target=watch_status, daemon=True)
    with load_through(deployed, "a promote followed by every replica") as load:
        watcher.start()
        output = stack.run_job(deployed.image, *TRAIN_A_SMALL_MODEL)
        assert "production -> v2" in output, output
        promoted = time.monotonic()
        # within the poll interval (2 s here) plus a rollout through each replica's mules ("v1,v2" meanwhile)
        wait_for(lambda: [r.status()["model_version"] for r in stack.replicas()] == ["v2", "v2"], 120, stack.explain)
        measured(f"a promote reached both replicas {time.monotonic() - promoted:.1f} s after the job ended")
        stop.set()
        watcher.join(15)
    assert load.failures() == [], load.summary()
    assert statuses
    assert set(statuses) == {200}, statuses
