"""/reload: rolling a new version through the mules under load, refusing bad ones, and who may call it."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from forecast.features import Rows
from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import clone_version, crashing_model_text, forge_version, wait_for
from tests.stack.load import Outcome, distinct_rows, hammer, mule_pids
from tests.stack.scrape import scrape_until
from tests.stack.stacks import UNDER_LOAD, start_stack

pytestmark = UNDER_LOAD  # a module under load (tests/stack/stacks.py)


@pytest.fixture
def registry_copy(tmp_path: Path, serving_registry: Registry) -> Registry:
    """A private copy: these tests move 'production'."""
    shutil.copytree(serving_registry.root, tmp_path / "registry")
    return Registry(tmp_path / "registry")


@pytest.fixture
def reload_stack(tmp_path: Path, registry_copy: Registry) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "run", registry_copy)
    yield stack
    stack.stop()


def served_versions(stack: Stack) -> set[str]:
    return {mule["model_version"] for mule in requests.get(f"{stack.url}/status", timeout=5).json()["mules"]}


def test_reload_under_load_switches_version_without_failing_a_request(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    rows = distinct_rows(3000, seed=3)
    dates, stores, items = zip(*rows, strict=True)
    truth = {
        version: dict(
            zip(
                rows, registry_copy.load(version).predict(Rows.from_columns(dates, stores, items)).tolist(), strict=True
            )
        )
        for version in ("v1", "v2")
    }
    outcomes: list[Outcome] = []
    loader = threading.Thread(target=lambda: outcomes.extend(hammer(reload_stack.url, rows, threads=16)))
    loader.start()
    registry_copy.promote("v2")
    response = requests.get(f"{reload_stack.url}/reload", timeout=60)
    loader.join()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v2"
    assert [m["model_version"] for m in body["mules"]] == ["v2", "v2"]
    failures = Counter((o.status, o.body.get("code") if isinstance(o.body, dict) else o.body) for o in outcomes)
    del failures[(200, None)]
    assert not failures, failures
    for outcome in outcomes:
        version = outcome.body["model_version"]
        assert outcome.body["sales"] == pytest.approx(truth[version][outcome.row], rel=1e-12)
    after = requests.post(f"{reload_stack.url}/predict", json={"date": "2018-01-21", "store": 1, "item": 1}, timeout=5)
    assert after.json()["model_version"] == "v2"


def test_a_corrupt_production_version_is_refused_and_the_old_one_keeps_serving(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    clone_version(registry_copy, "v2", "v3")
    registry_copy.model_path("v3").write_text("tampered\n")
    # A registry damaged behind our back: the alias names a version that would never pass promote().
    registry_copy.set_alias("production", "v3")

    response = requests.post(f"{reload_stack.url}/reload", timeout=60)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "reload_refused"
    assert "v3" in error["message"]
    assert "checksum" in error["message"]
    assert served_versions(reload_stack) == {"v1"}
    ok = requests.post(f"{reload_stack.url}/predict", json={"date": "2018-01-21", "store": 1, "item": 1}, timeout=5)
    assert ok.status_code == 200
    assert ok.json()["model_version"] == "v1"


def test_an_incompatible_production_version_is_refused_before_any_mule_loads_it(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    clone_version(registry_copy, "v2", "v3")
    meta = registry_copy.metadata_path("v3")
    meta.write_text(meta.read_text().replace('"feature_version": "1"', '"feature_version": "0"'))
    registry_copy.set_alias("production", "v3")
    response = requests.get(f"{reload_stack.url}/reload", timeout=60)
    assert response.status_code == 422
    assert "feature version" in response.json()["message"]
    assert served_versions(reload_stack) == {"v1"}


@pytest.fixture
def token_stack(tmp_path: Path, registry_copy: Registry) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "run", registry_copy, FORECAST_ADMIN_TOKEN="s3cret")
    yield stack
    stack.stop()


def test_reload_with_a_configured_token_requires_it(token_stack: Stack) -> None:
    missing = requests.get(f"{token_stack.url}/reload", timeout=30)
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.get(f"{token_stack.url}/reload", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    right = requests.get(f"{token_stack.url}/reload", headers={"Authorization": "Bearer s3cret"}, timeout=60)
    assert right.status_code == 200
    assert right.json()["model_version"] == "v1"


def crash_version(registry: Registry, target: str) -> None:
    """``target``: v1's model made to abort LightGBM as it loads, and passing every check that does not load it;
    then ``production`` names it, behind the server's back (what no promote would let through)."""
    forge_version(registry, "v1", target, crashing_model_text(registry.model_path("v1").read_text()))
    registry.set_alias("production", target)


def test_a_version_that_crashes_lightgbm_is_refused_before_any_mule_loads_it(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    pids = mule_pids(reload_stack.url)
    crash_version(registry_copy, "v3")
    response = requests.get(f"{reload_stack.url}/reload", timeout=120)
    assert response.status_code == 422
    assert "version v3: verifying it crashed (killed by signal 6" in response.json()["message"]
    assert mule_pids(reload_stack.url) == pids  # no mule ever saw it
    assert served_versions(reload_stack) == {"v1"}


def test_a_reload_whose_mule_dies_answers_at_once_and_the_others_keep_serving(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    registry_copy.promote("v2")
    victim = mule_pids(reload_stack.url)[1]
    answer: dict[str, requests.Response] = {}
    os.kill(victim, signal.SIGSTOP)  # it will not read the load request: only its death can answer
    reload = threading.Thread(target=lambda: answer.update(r=requests.get(f"{reload_stack.url}/reload", timeout=60)))
    reload.start()
    wait_for(lambda: "rollout of default v2 through mules" in reload_stack.uwsgi_log.read_text())
    os.kill(victim, signal.SIGKILL)
    reload.join()
    refused = answer["r"]
    assert refused.status_code == 422
    assert refused.json()["message"] == f"mule 1 refused version v2: the mule (pid {victim}) died loading it"
    mules = requests.get(f"{reload_stack.url}/status", timeout=5).json()["mules"]
    assert mules[1]["model_version"] == "v1"  # mule 2 was never switched
    ok = requests.post(f"{reload_stack.url}/predict", json={"date": "2018-01-21", "store": 1, "item": 1}, timeout=5)
    assert ok.status_code == 200  # (mule 1's respawn loads production at start, as any respawn does)


def test_a_version_that_kills_a_mule_while_it_loads_is_not_loaded_again(
    reload_stack: Stack, registry_copy: Registry
) -> None:
    """production moved behind the server's back to a model that aborts LightGBM; mule 1 is respawned and
    loads it: it dies once, and its next respawn serves the last version it loaded instead of dying again."""
    crash_version(registry_copy, "v3")
    victim = mule_pids(reload_stack.url)[1]
    os.kill(victim, signal.SIGKILL)

    def mule_1_serves_again() -> bool:
        mule = requests.get(f"{reload_stack.url}/status", timeout=5).json()["mules"][0]
        return mule["pid"] != victim and mule["state"] == "ready" and "v3" in (mule["error"] or "")

    wait_for(mule_1_serves_again, 60)
    status = requests.get(f"{reload_stack.url}/status", timeout=5)
    mule = status.json()["mules"][0]
    assert status.status_code == 200
    assert mule["model_version"] == "v1"
    assert mule["error"] == (
        "production refused (model 'default' version v3 cannot be loaded: version v3 stopped a mule while it "
        "loaded; it is not loaded again); serving v1, the last version this mule loaded"
    )
    starts = scrape_until(reload_stack.url, lambda now: now.value("forecast_mule_starts_total", mule="1") >= 3)
    assert starts.value("forecast_mule_starts_total", mule="1") == 3  # killed once, crashed once, then served
    assert "died while loading default v3" in reload_stack.uwsgi_log.read_text()
