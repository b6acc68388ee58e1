"""Replicas of the image behind a balancer, under load: a rolling update, a promote, a replica killed.

The Kubernetes Deployment in miniature (k8s/deployment.yaml: maxSurge 1, maxUnavailable 0, a
readiness probe on /status, the endpoint removed before SIGTERM), on one shared registry volume.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docker.balancer import Balancer
from tests.docker.conftest import measured
from tests.docker.containers import TRAIN_A_SMALL_MODEL, Container, Fleet, run_once
from tests.docker.load import REFUSED, Load, Outcome
from tests.helpers import wait_for

# the first test also builds the stand-in and the image (minutes on a clean machine)
pytestmark = pytest.mark.timeout(900)


THREADS = 8
ENV = {"FORECAST_REGISTRY_POLL_S": "1"}  # replicas follow the registry's aliases every second


def replace(old: Container, containers: Fleet, volume: str, balancer: Balancer, load: Load) -> Container:
    """One step of a rolling update: a new replica ready and routed, then the old one out and stopped."""
    new = containers.start(ENV, volume)
    new.wait_ready()
    routed = [*balancer.routed, new.port]
    balancer.add(new.port)
    balancer.wait_routed(routed)
    balancer.take_out(old.port)
    stop_s = old.stop(grace_s=30)
    assert old.state()["ExitCode"] == 0
    measured(f"rolling update: replica on {old.port} stopped in {stop_s:.1f} s, replaced by {new.port}")
    load.wait_for_answers(200)
    return new


def test_a_rolling_update_a_promote_and_a_killed_replica_under_load(
    containers: Fleet, volume: str, tmp_path: Path
) -> None:
    first = containers.start(ENV, volume)  # fills the empty volume with the image's registry
    first.wait_ready()
    second = containers.start(ENV, volume)
    second.wait_ready()
    with Balancer(tmp_path / "balancer") as balancer:
        balancer.add(first.port)
        balancer.add(second.port)
        balancer.wait_routed([first.port, second.port])
        with Load(balancer.url, threads=THREADS) as load:
            third, lost = update_promote_and_kill(first, second, containers, volume, balancer, load)
    measured(f"... and one replica killed: {len(lost)} lost ({load.summary()})")
    assert len(lost) <= THREADS, load.summary()
    assert {o.result for o in lost} <= {"502"}, load.summary()
    assert load.count(REFUSED) == 0
    routed_by = balancer.workers
    assert {r.worker_pid for r in balancer.log()} <= set(routed_by)
    killed = f":{third.port}"
    assert [r for r in balancer.log() if killed in r.upstreams and third.port not in routed_by[r.worker_pid]] == []


def update_promote_and_kill(
    first: Container, second: Container, containers: Fleet, volume: str, balancer: Balancer, load: Load
) -> tuple[Container, list[Outcome]]:
    """The three phases under load; the replica killed and the requests lost."""
    load.wait_for_answers(200)
    third = replace(first, containers, volume, balancer, load)
    fourth = replace(second, containers, volume, balancer, load)
    assert load.failures() == [], load.summary()
    measured(f"rolling update of 2 replicas under load: {load.summary()}")

    # a promote made by a third container reaches both replicas, which nobody calls
    output = run_once(third.image, volume, *TRAIN_A_SMALL_MODEL)
    assert "production -> v2" in output, output
    wait_for(lambda: third.status()["model_version"] == fourth.status()["model_version"] == "v2", 120)
    load.wait_for_answers(200)
    assert load.failures() == [], load.summary()
    measured(f"... and a promote followed by both: {load.summary()}")

    # one replica killed: only the requests in flight on it may fail, then the balancer stops sending to it
    third.kill()
    balancer.wait_routed([fourth.port])
    load.wait_for_answers(300)
    return third, load.failures()  # none before the kill
