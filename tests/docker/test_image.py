"""The project's image, built and run for real: serving, health, logs, graceful stop, the registry volume."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from forecast.features import Rows
from forecast.registry import Registry
from tests.docker.conftest import measured, tmp_registry_copy
from tests.docker.containers import TRAIN_A_SMALL_MODEL, Fleet, run_once
from tests.docker.engine import docker
from tests.docker.load import Load
from tests.helpers import wait_for

# the first test also builds the stand-in and the image (minutes on a clean machine)
pytestmark = pytest.mark.timeout(900)


ROWS = [("2018-01-21", 10, 23), ("2017-12-31", 1, 1), ("2018-03-31", 5, 50), ("2016-02-29", 7, 12)]


def lightgbm_sales(registry: Registry, rows: list[tuple[str, int, int]]) -> np.ndarray:
    """What LightGBM itself predicts for ``rows`` with the registry's production version."""
    dates, stores, items = zip(*rows, strict=True)
    rows_in = Rows.from_columns(list(dates), list(stores), list(items))
    return registry.load("production", compiled=False).predict(rows_in)


def test_the_image_serves_a_correct_prediction_reaches_healthy_and_logs_on_its_streams(
    containers: Fleet, tmp_path: Path
) -> None:
    container = containers.start()
    measured(f"time to a ready container (docker run -> /status 200): {container.wait_ready():.1f} s")

    request_id = f"docker-test-{uuid.uuid4().hex[:8]}"
    instances = [{"date": d, "store": s, "item": i} for d, s, i in ROWS]
    answer = requests.post(f"{container.url}/predict", json=instances, headers={"X-Request-ID": request_id}, timeout=10)
    assert answer.status_code == 200, answer.text
    sales = [p["sales"] for p in answer.json()["predictions"]]
    expected = lightgbm_sales(Registry(tmp_registry_copy(container, tmp_path)), ROWS)
    assert np.max(np.abs(np.array(sales) - expected)) <= 1e-9
    date, store, item = ROWS[0]
    legacy = requests.post(f"{container.url}/predict", params={"date": date, "store": store, "item": item}, timeout=10)
    assert float(legacy.text) == sales[0]
    # the planner page and its chart library are in the image (app/ui/vendor.py fetched it at build)
    page, library = (
        requests.get(f"{container.url}{path}", timeout=10) for path in ("/ui", "/ui/vendor/uPlot.iife.min.js")
    )
    assert (page.status_code, library.status_code) == (200, 200)
    assert "uPlot" in library.text

    # the image's own HEALTHCHECK (interval 10 s), as Docker runs it
    wait_for(lambda: container.state()["Health"]["Status"] == "healthy", 60, container.logs)

    # docs/operating.md, "Logs": the access lines (nginx) and the app's and mules' lines (uWSGI) on stdout
    wait_for(lambda: request_id in container.streams()[0], 15, container.logs)
    stdout, stderr = container.streams()
    access = next(line for line in stdout.splitlines() if request_id in line)
    assert re.search(r"\[nginx\] access: request .*method=POST path=/predict status=200 .*rows=4", access), access
    for mule in (1, 2):
        assert re.search(rf"INFO \[mule {mule}\] mules.loop: mule {mule} loaded model v1", stdout), stdout[-3000:]
    assert re.search(r"INFO \[worker\] app.rollout: routes published \(generation 1\): default v1", stdout), stdout[
        -3000:
    ]
    assert not re.search(r"\[(mule \d+|worker)\]", stderr), stderr[-3000:]
    assert "Traceback" not in stdout + stderr


def test_docker_stop_under_load_answers_every_request_it_accepted_and_exits_0(containers: Fleet) -> None:
    """Every request nginx accepted is answered 200; the rest were refused, or reset unread.

    nginx closes its port at once on the stop: connections the kernel had queued and nginx had not
    accepted yet are reset then, before a byte of answer (the client retries; nothing was scored).
    Behind a balancer the replica is taken out first and there are none (test_replicas.py).
    """
    container = containers.start()
    container.wait_ready()
    with Load(container.url, threads=8) as load:
        load.wait_for_answers(300)
        stop_s = container.stop(grace_s=10)
    state = container.state()
    measured(f"docker stop under load: {stop_s:.1f} s; {load.summary()}")
    assert state["Running"] is False
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']} (137: killed after the grace period)"
    assert docker_top_is_empty(container.id)
    served = [line for line in container.streams()[0].splitlines() if "method=POST path=/predict" in line]
    assert [line for line in served if "status=200" not in line] == []
    assert len(served) == load.count(200) >= 300  # every request nginx read, the client got its 200
    assert {o.result for o in load.failures()} <= {"ConnectionResetError"}, load.summary()


def docker_top_is_empty(container_id: str) -> bool:
    """No process of the container is left (``docker top`` refuses a container that is not running)."""
    return docker("top", container_id, check=False).returncode != 0


def test_a_named_volume_keeps_the_registry_and_a_model_trained_with_the_image_is_served_after_reload(
    containers: Fleet, volume: str
) -> None:
    token = "docker-test-token"
    env = {"FORECAST_ADMIN_TOKEN": token, "FORECAST_REGISTRY_POLL_S": "0"}  # polling off: only /reload switches
    first = containers.start(env, volume)
    first.wait_ready()
    assert first.status()["model_version"] == "v1"

    output = run_once(first.image, volume, *TRAIN_A_SMALL_MODEL)
    assert "registered v2" in output, output
    assert requests.get(f"{first.url}/reload", timeout=30).status_code in (401, 403)
    assert first.status()["model_version"] == "v1"
    reload = requests.get(f"{first.url}/reload", headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert reload.status_code == 200, reload.text
    assert first.status()["model_version"] == "v2"

    first.stop()
    second = containers.start(env, volume)
    second.wait_ready()
    assert second.status()["model_version"] == "v2"
