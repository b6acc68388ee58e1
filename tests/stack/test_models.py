"""Many models in one mule pool, canary traffic and shadow scoring, against real nginx + uWSGI + mules.

Models are small real ones (``serving_registry``'s two versions and models trained here on
slices of the generated data); every answer is compared with its own version's offline prediction.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from forecast.data import SalesData
from forecast.features import Rows
from forecast.registry import Registry
from forecast.train import train
from launcher.stack import Stack
from mules.models import PER_MODEL_OVERHEAD_BYTES
from tests.helpers import kaggle_test_rows, wait_for
from tests.stack.scrape import scrape, scrape_until
from tests.stack.stacks import UNDER_LOAD, start_stack

# A module under load (tests/stack/stacks.py).
pytestmark = UNDER_LOAD


def rows_2016(count: int, seed: int) -> list[tuple[str, int, int]]:
    """Distinct rows in the second half of 2016: inside every test model's dates."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(184 * 500, size=count, replace=False)
    start = np.datetime64("2016-07-01")
    return [(str(start + int(k // 500)), int(k % 500 // 50) + 1, int(k % 50) + 1) for k in keys]


ROWS = rows_2016(200, seed=11)


def as_body(row: tuple[str, int, int]) -> dict[str, Any]:
    return {"date": row[0], "store": row[1], "item": row[2]}


@pytest.fixture(scope="module")
def named_texts(full_data: SalesData) -> dict[str, tuple[str, dict[str, Any]]]:
    """Two models that forecast differently: trained on different years, with different rounds."""
    found = {}
    for name, year, rounds in (("alpha", "2016", 20), ("beta", "2015", 35)):
        rows = full_data.rows
        data = full_data.select(rows.dates.astype("datetime64[Y]") == np.datetime64(year, "Y"))
        result = train(data, rounds=rounds, refit=False, log=lambda _: None, backtest_origins=0)
        found[name] = (result.model_text, result.metadata)
    return found


def add_model(registry: Registry, name: str, text: str, metadata: dict[str, Any]) -> Registry:
    named = registry.named(name)
    version = named.register(text, metadata)
    named.set_alias("production", named.verify(version).version)
    return named


@pytest.fixture
def models_registry(
    tmp_path: Path, serving_registry: Registry, named_texts: dict[str, tuple[str, dict[str, Any]]]
) -> Registry:
    """The default model (v1 production, v2) beside the models alpha and beta."""
    shutil.copytree(serving_registry.root, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    for name, (text, metadata) in named_texts.items():
        add_model(registry, name, text, metadata)
    return registry


def offline(registry: Registry, rows: list[tuple[str, int, int]], version: str = "production") -> list[float]:
    dates, stores, items = zip(*rows, strict=True)
    predictor = registry.load(version)
    return [float(v) for v in predictor.predict(Rows.from_columns(list(dates), list(stores), list(items)))]


def routes(stack: Stack, model: str) -> dict[str, Any]:
    """What the pod routes ``model``'s rows to (GET /models)."""
    found: dict[str, Any] = requests.get(f"{stack.url}/models", timeout=5).json()["models"][model]["routes"]
    return found


def post(stack: Stack, model: str, body: Any, **kwargs: Any) -> requests.Response:
    path = "/predict" if model == "default" else f"/models/{model}/predict"
    return requests.post(f"{stack.url}{path}", json=body, timeout=30, **kwargs)


@pytest.fixture
def models_stack(tmp_path: Path, models_registry: Registry) -> Iterator[Stack]:
    stack = start_stack(tmp_path / "run", models_registry, FORECAST_REGISTRY_POLL_S="1")
    yield stack
    stack.stop()


def test_named_models_side_by_side_under_mixed_concurrent_traffic(
    models_stack: Stack, models_registry: Registry
) -> None:
    """Every answer equals its own model's offline prediction: no cross-talk in one mule pool."""
    names = ("default", "alpha", "beta")
    truth = {name: offline(models_registry.named(name), ROWS) for name in names}
    assert truth["alpha"] != truth["beta"]
    # Each model answered once first: in one CI run every job of this first burst ended in 504 at the 5 s
    # deadline, the mules logging no load, on a busy machine beside the pod's first rollout (verifying and
    # compiling in a child). What is tested here is the answers, not a cold start's latency.
    for name in names:

        def answered(name: str = name) -> bool:
            return post(models_stack, name, as_body(ROWS[0])).status_code == 200

        wait_for(answered, 60)
    outcomes: list[tuple[str, int, float, str]] = []

    def client(name: str) -> None:
        session = requests.Session()
        for n, (date, store, item) in enumerate(ROWS):
            path = "/predict" if name == "default" else f"/models/{name}/predict"
            body = session.post(f"{models_stack.url}{path}", json={"date": date, "store": store, "item": item},
                                timeout=30).json()  # fmt: skip
            outcomes.append((name, n, body["sales"], body["model_version"]))

    threads = [threading.Thread(target=client, args=(name,)) for name in names for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 9 * len(ROWS)
    for name, n, sales, version in outcomes:
        assert sales == pytest.approx(truth[name][n], rel=1e-12), (name, n)
        assert version == "v1"
    batch = post(models_stack, "beta", {"instances": [as_body(r) for r in ROWS]})
    assert [p["sales"] for p in batch.json()["predictions"]] == pytest.approx(truth["beta"], rel=1e-12)
    listing = requests.get(f"{models_stack.url}/models", timeout=5).json()["models"]
    assert set(listing) == {"default", "alpha", "beta"}
    assert listing["alpha"]["aliases"]["production"] == {"version": "v1", "weight": None}
    assert sorted(listing["alpha"]["mules"]["v1"]) in ([1], [2], [1, 2])  # held where its jobs were scored
    missing = post(models_stack, "gamma", {"date": "2017-05-01", "store": 1, "item": 1})
    assert (missing.status_code, missing.json()["code"]) == (404, "model_not_found")


def test_a_model_that_cannot_load_answers_503_naming_it_and_the_others_serve(
    models_stack: Stack, models_registry: Registry
) -> None:
    broken = models_registry.named("beta")
    broken.model_path("v1").chmod(0o644)
    broken.model_path("v1").write_text("tampered\n")  # fails its checksum on load
    row = {"date": "2017-05-01", "store": 2, "item": 3}
    refused = post(models_stack, "beta", row)
    assert refused.status_code == 503
    assert refused.json()["code"] == "model_unavailable"
    assert refused.json()["message"].startswith("model 'beta' version v1 cannot be loaded")
    assert refused.headers["Retry-After"] == "1"
    for name in ("default", "alpha"):
        assert post(models_stack, name, row).status_code == 200
    assert requests.get(f"{models_stack.url}/status", timeout=5).status_code == 200


@pytest.fixture
def crowded_stack(
    tmp_path: Path, models_registry: Registry, named_texts: dict[str, tuple[str, dict[str, Any]]]
) -> Iterator[tuple[Stack, Registry, int]]:
    """Twelve more models than a mule's 1 MB budget holds (each model text is about 100 KB)."""
    text, metadata = named_texts["alpha"]
    for n in range(12):
        add_model(models_registry, f"m{n:02d}", text, metadata)
    models_registry.named("m00").compile("production")  # compiled trees a mule must leave unused (a named model)
    size = len(text.encode()) + PER_MODEL_OVERHEAD_BYTES  # what a mule counts against its budget
    stack = start_stack(
        tmp_path / "run", models_registry, FORECAST_MULE_MODEL_BUDGET_MB="1", FORECAST_REGISTRY_POLL_S="1"
    )
    yield stack, models_registry, size
    stack.stop()


def test_more_models_than_fit_are_all_served_within_the_budget(crowded_stack: tuple[Stack, Registry, int]) -> None:
    stack, registry, size = crowded_stack
    names = [f"m{n:02d}" for n in range(12)]
    truth = offline(registry.named("m00"), ROWS[:20])
    for round_ in range(3):  # round after round over every model: more than the budget holds, evicting
        for name in names:
            for n, (date, store, item) in enumerate(ROWS[round_ * 5 : round_ * 5 + 5]):
                answer = post(stack, name, {"date": date, "store": store, "item": item})
                assert answer.json()["sales"] == pytest.approx(truth[round_ * 5 + n], rel=1e-12), (name, round_)
    budget = 2**20

    def named_held() -> dict[int, list[str]]:
        """Mule id -> the named models it holds, from the mules' heartbeats (``GET /models``)."""
        listing = requests.get(f"{stack.url}/models", timeout=5).json()["models"]
        found: dict[int, list[str]] = {}
        for name, model in listing.items():
            for mule in (mule for mules in model["mules"].values() for mule in mules if name != "default"):
                found.setdefault(mule, []).append(name)
        return found

    wait_for(named_held, 10, lambda: "no mule's heartbeat reports a named model")  # heartbeats come every second
    held = named_held()
    for names_held in held.values():
        assert len(names_held) * size <= budget, held
    log = stack.uwsgi_log.read_text()
    assert re.search(r"loaded model m00 version \w+ \(lightgbm;", log)  # named models: LightGBM (mules/models.py)
    assert not re.search(r"loaded model m\d\d version \w+ \(compiled;", log)
    mules = requests.get(f"{stack.url}/status", timeout=5).json()["mules"]
    libraries = [Path(f"/proc/{mule['pid']}/maps").read_text() for mule in mules]
    assert any("lib_lightgbm" in maps for maps in libraries)  # loaded for the named models ...
    assert not any("/pandas/" in maps for maps in libraries)  # ... without pandas, which it imports when installed
    loads = scrape(stack.url)
    # every model was loaded at least once; far fewer loads than requests: a model's jobs went to its holder
    assert 12 <= loads.value("forecast_mule_model_loads_total") < 12 * 3 * 5


@pytest.fixture
def canary_registry(models_registry: Registry) -> Registry:
    models_registry.promote("v2", alias="canary", weight=10)
    return models_registry


def test_the_canary_scores_its_share_of_series_and_a_series_stays_on_one_version(
    canary_registry: Registry, tmp_path: Path
) -> None:
    stack = start_stack(tmp_path / "run", canary_registry, FORECAST_REGISTRY_POLL_S="1")
    try:
        wait_for(lambda: routes(stack, "default")["canary"] == "v2")
        rows = kaggle_test_rows()
        instances = [{"date": d, "store": s, "item": i} for d, s, i in rows]
        batch: list[dict[str, Any]] = []

        def split() -> bool:  # a worker trusts the routes it read for ROUTES_TTL_S: the one answering may not know yet
            batch[:] = post(stack, "default", {"instances": instances}).json()["predictions"]
            return {p["model_version"] for p in batch} == {"v1", "v2"}

        wait_for(split)
        versions = Counter(p["model_version"] for p in batch)
        assert abs(versions["v2"] / len(rows) - 0.10) <= 0.03
        by_series: dict[tuple[int, int], set[str]] = {}
        for p in batch:
            by_series.setdefault((p["store"], p["item"]), set()).add(p["model_version"])
        assert all(len(v) == 1 for v in by_series.values())
        truth = {v: offline(canary_registry, rows, v) for v in ("v1", "v2")}
        for n, p in enumerate(batch):
            assert p["sales"] == pytest.approx(truth[p["model_version"]][n], rel=1e-12)
        # single rows: each series on the version the batch gave it
        for n in range(0, len(rows), 97):
            one = post(stack, "default", instances[n]).json()
            assert one["model_version"] == batch[n]["model_version"]
    finally:
        stack.stop()


def test_canary_weight_promote_and_rollback_under_load_fail_no_request(
    models_stack: Stack, models_registry: Registry
) -> None:
    """Each change is one command, picked up by the pod's poller (1 s here) and rolled through its mules."""
    rows = [as_body(row) for row in ROWS]
    outcomes: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            for row in rows[:50]:
                outcomes[session.post(f"{models_stack.url}/predict", json=row, timeout=30).status_code] += 1

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for loader in loaders:
        loader.start()
    try:
        models_registry.promote("v2", alias="canary", weight=30)
        wait_for(lambda: routes(models_stack, "default")["canary_weight"] == 30)
        models_registry.promote("v2", alias="canary", weight=60)
        wait_for(lambda: routes(models_stack, "default")["canary_weight"] == 60)
        models_registry.promote("v2")  # the canary becomes production
        wait_for(lambda: routes(models_stack, "default")["production"] == "v2")
        models_registry.rollback()  # and back
        wait_for(lambda: routes(models_stack, "default")["production"] == "v1")
        models_registry.rollback("canary")
        wait_for(lambda: routes(models_stack, "default")["canary"] is None)
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
    assert set(outcomes) == {200}, outcomes
    assert outcomes[200] > 200


def test_the_access_line_says_a_request_waited_for_a_load(models_stack: Stack) -> None:
    first = post(models_stack, "alpha", as_body(ROWS[0]), headers={"X-Request-ID": "first-alpha"})
    # a mule that does not hold alpha forwards its jobs to the holder once the holder's heartbeat says so
    wait_for(lambda: bool(requests.get(f"{models_stack.url}/models", timeout=5).json()["models"]["alpha"]["mules"]))
    second = post(models_stack, "alpha", as_body(ROWS[1]), headers={"X-Request-ID": "second-alpha"})
    assert (first.status_code, second.status_code) == (200, 200)
    lines: dict[str, str] = {}

    def both_logged() -> bool:
        text = models_stack.access_log.read_text() if models_stack.access_log.exists() else ""
        lines.update({rid: line for line in text.splitlines() for rid in ("first-alpha", "second-alpha")
                      if f"request_id={rid} " in line})  # fmt: skip
        return len(lines) == 2

    wait_for(both_logged)
    assert "model=alpha load=1" in lines["first-alpha"]
    assert "model=alpha load=-" in lines["second-alpha"]


def test_a_model_name_with_control_characters_is_a_404_not_a_broken_answer(models_stack: Stack) -> None:
    answer = requests.post(f"{models_stack.url}/models/alpha%0D%0AX-Evil:%201/predict", json=as_body(ROWS[0]),
                           timeout=10)  # fmt: skip
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "model_not_found"
    assert "X-Evil" not in answer.headers


@pytest.fixture
def shadow_registry(models_registry: Registry) -> Registry:
    models_registry.promote("v2", alias="shadow", weight=50)
    return models_registry


def test_the_shadow_scores_a_sample_after_the_answer_and_changes_no_answer(
    shadow_registry: Registry, tmp_path: Path
) -> None:
    stack = start_stack(tmp_path / "run", shadow_registry, FORECAST_REGISTRY_POLL_S="1")
    try:
        wait_for(lambda: routes(stack, "default")["shadow"] == "v2")
        truth = offline(shadow_registry, ROWS)
        for n, row in enumerate(ROWS):
            answer = post(stack, "default", as_body(row)).json()
            assert (answer["sales"], answer["model_version"]) == (pytest.approx(truth[n], rel=1e-12), "v1")
        name = "forecast_shadow_rows_total"
        scraped = scrape_until(stack.url, lambda now: now.value(name, model="default", version="v2") >= 50)
        assert 50 <= scraped.value(name, model="default", version="v2") <= 150  # about half of 200 rows
        compared = scraped.value("forecast_shadow_relative_difference_count", production="v1", shadow="v2")
        assert compared == scraped.value(name, model="default", version="v2")
        assert scraped.value("forecast_shadow_relative_difference_sum", production="v1", shadow="v2") > 0
    finally:
        stack.stop()


def test_a_busy_pool_drops_shadow_work_and_no_production_job(shadow_registry: Registry, tmp_path: Path) -> None:
    """Every row shadowed, big batches from many clients: the mules are never idle, so shadows pile up.

    The mules score with LightGBM here: compiled trees score so fast that the web workers, not the
    mules, would be the busy ones.
    """
    shadow_registry.promote("v2", alias="shadow", weight=100)
    stack = start_stack(
        tmp_path / "run", shadow_registry, FORECAST_REGISTRY_POLL_S="1", FORECAST_COMPILED_TREES="false"
    )
    batch = {"instances": [as_body(row) for row in rows_2016(2000, seed=5)]}
    outcomes: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            outcomes[session.post(f"{stack.url}/predict", json=batch, timeout=30).status_code] += 1

    loaders = [threading.Thread(target=load) for _ in range(12)]
    try:
        wait_for(lambda: routes(stack, "default")["shadow"] == "v2")
        for loader in loaders:
            loader.start()
        dropped = scrape_until(stack.url, lambda now: now.value("forecast_shadow_dropped_total") > 0, timeout_s=120)
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
        stack.stop()
    assert dropped.value("forecast_shadow_dropped_total") > 0
    assert set(outcomes) == {200}, outcomes  # production was never shed, failed or late
