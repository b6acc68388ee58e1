"""``POST /actuals`` and ``python -m forecast actuals load`` through the real stack into a real SQLite file and a
real PostgreSQL database: the same tests against each."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from forecast.actuals import ActualsStore
from forecast.data import SalesData
from forecast.registry import Registry
from launcher.stack import Stack
from tests.postgres import new_database
from tests.stack.stacks import start_stack

CSV = {"Content-Type": "text/csv"}
pytestmark = pytest.mark.xdist_group("actuals")  # the PostgreSQL stack is started once, for the whole module


@dataclass(frozen=True)
class Served:
    """A stack and the store it loads into (its registry's SQLite file, or a PostgreSQL database)."""

    stack: Stack
    registry: Registry
    url: str | None  # FORECAST_ACTUALS_URL; None: SQLite beside the registry

    def store(self) -> ActualsStore:
        return ActualsStore.beside(self.registry.root, self.url)


@pytest.fixture(scope="module")
def postgres_stack(tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry,
                   postgres: str) -> Iterator[Served]:  # fmt: skip
    where = tmp_path_factory.mktemp("actuals-postgres")
    shutil.copytree(serving_registry.root, where / "registry")
    registry, url = Registry(where / "registry"), new_database(postgres)
    stack = start_stack(where, registry, FORECAST_ACTUALS_URL=url)
    yield Served(stack, registry, url)
    stack.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, stack: Stack, serving_registry: Registry) -> Served:
    if request.param == "sqlite":
        return Served(stack, serving_registry, None)
    found: Served = request.getfixturevalue("postgres_stack")
    return found


@pytest.fixture(scope="module")
def year_csv(full_data: SalesData) -> str:
    """2017's sales of every series (182,500 rows) as the Kaggle train file writes them."""
    year = full_data.select(full_data.rows.dates >= np.datetime64("2017-01-01"))
    lines = [f"{d},{s},{i},{n}" for d, s, i, n in zip(np.datetime_as_string(year.rows.dates, unit="D").tolist(),
                                                      year.rows.stores.tolist(), year.rows.items.tolist(),
                                                      year.sales.tolist(), strict=True)]  # fmt: skip
    return "date,store,item,sales\n" + "\n".join(lines) + "\n"


def cli_load(served: Served, csv: Path) -> subprocess.CompletedProcess[str]:
    """``python -m forecast actuals load CSV`` into the served stack's store, as a Job would run it."""
    command = [sys.executable, "-m", "forecast", "--registry", str(served.registry.root), "actuals", "load", str(csv)]
    env = {**os.environ, **({"FORECAST_ACTUALS_URL": served.url} if served.url else {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_a_year_of_actuals_loads_once_and_again_changes_nothing(served: Served, year_csv: str,
                                                                tmp_path: Path) -> None:  # fmt: skip
    stack = served.stack
    first = requests.post(f"{stack.url}/actuals", data=year_csv.encode(), headers=CSV, timeout=120)
    assert first.status_code == 200, first.text
    assert first.json() == {"added": 182_500, "replaced": 0, "unchanged": 0}
    again = requests.post(f"{stack.url}/actuals", data=year_csv.encode(), headers=CSV, timeout=120)
    assert again.json() == {"added": 0, "replaced": 0, "unchanged": 182_500}
    stored = served.store().read(17167, 17531)  # 2017-01-01..2017-12-31
    assert len(stored) == 182_500
    assert int(stored.sales.sum()) == sum(int(line.rsplit(",", 1)[1]) for line in year_csv.splitlines()[1:])
    (tmp_path / "2017.csv").write_text(year_csv)
    by_cli = cli_load(served, tmp_path / "2017.csv")  # the same year from a shell or a Job: nothing new
    assert (by_cli.returncode, by_cli.stdout.strip()) == (0, "added 0, replaced 0, unchanged 182500"), by_cli.stderr


def test_a_bad_line_at_the_end_stores_nothing_and_is_named(served: Served) -> None:
    stack = served.stack
    before = served.store().count()
    lines = ["date,store,item,sales"] + [f"2016-03-{day:02d},1,1,5" for day in range(1, 31)] + ["2016-03-31,1,1,-2"]
    answer = requests.post(f"{stack.url}/actuals", data="\n".join(lines).encode(), headers=CSV, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["field"] == "line 32.sales"
    assert served.store().count() == before


def test_json_rows_and_the_cli_load_into_the_same_store(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    rows = [{"date": "2016-05-01", "store": 2, "item": 3, "sales": 9}, {"date": "2016-05-02", "store": 2, "item": 3,
                                                                          "sales": 11}]  # fmt: skip
    answer = requests.post(f"{stack.url}/actuals", json=rows, timeout=30)
    assert answer.json() == {"added": 2, "replaced": 0, "unchanged": 0}
    csv = tmp_path / "may.csv"
    csv.write_text("date,store,item,sales\n2016-05-02,2,3,12\n2016-05-03,2,3,8\n")
    loaded = cli_load(served, csv)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "added 1, replaced 1, unchanged 0"
    stored = served.store().read(16922, 16924)  # 2016-05-01..03
    assert [(int(d), int(s)) for d, s in zip(stored.days, stored.sales, strict=True)] == [(16922, 9), (16923, 12),
                                                                                         (16924, 8)]  # fmt: skip


def test_two_loads_at_once_lose_nothing(served: Served) -> None:
    """Two clients load 2014's January at the same time, overlapping on its middle ten days: every row is stored
    once, with the sales of whichever load committed last (they agree on the overlap)."""
    days = [f"2014-01-{day:02d}" for day in range(1, 32)]
    first = [f"{d},{s},{i},{s + i}" for d in days[:20] for s in (1, 2) for i in range(1, 11)]
    second = [f"{d},{s},{i},{s + i}" for d in days[10:] for s in (1, 2) for i in range(1, 11)]
    answers: list[dict[str, int]] = []

    def load(lines: list[str]) -> None:
        body = ("date,store,item,sales\n" + "\n".join(lines) + "\n").encode()
        answers.append(requests.post(f"{served.stack.url}/actuals", data=body, headers=CSV, timeout=60).json())

    threads = [threading.Thread(target=load, args=(lines,)) for lines in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a["added"] + a["unchanged"] for a in answers) == [400, 420]
    assert sum(a["added"] for a in answers) == 31 * 20  # the overlap is added by one, found unchanged by the other
    stored = served.store().read(16071, 16101)  # 2014-01-01..31
    assert len(stored) == 31 * 20
    assert (stored.sales == stored.stores + stored.items).all()


def test_stored_actuals_read_back_by_series_item_and_window(served: Served) -> None:
    stack = served.stack
    body = "date,store,item,sales\n2016-06-01,4,7,11\n2016-06-02,4,7,12\n2016-06-02,5,7,13\n2016-06-02,4,8,14\n"
    assert requests.post(f"{stack.url}/actuals", data=body, headers=CSV, timeout=30).status_code == 200

    def read(query: str) -> Any:
        answer = requests.get(f"{stack.url}/actuals?{query}", timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    series = read("store=4&item=7&start=2016-06-01&end=2016-06-02")
    assert series == {"start": "2016-06-01", "end": "2016-06-02", "source": "actuals", "actuals": [
        {"date": "2016-06-01", "store": 4, "item": 7, "sales": 11},
        {"date": "2016-06-02", "store": 4, "item": 7, "sales": 12}]}  # fmt: skip
    by_item = read("item=7&start=2016-06-02&end=2016-06-02")["actuals"]
    assert [(row["store"], row["sales"]) for row in by_item] == [(4, 12), (5, 13)]
    assert len(read("start=2016-06-02&end=2016-06-02")["actuals"]) >= 3  # all series (other tests' days aside)
    default = read("store=4&item=7")  # the last 56 days with actuals
    assert (dt.date.fromisoformat(default["end"]) - dt.date.fromisoformat(default["start"])).days == 55
    for query, field in (("store=x", "store"), ("start=2016-06-03&end=2016-06-01", "start"), ("bogus=1", "bogus"),
                         ("end=June", "end"), ("item=99999999999", "item")):  # fmt: skip
        refused = requests.get(f"{stack.url}/actuals?{query}", timeout=30)
        assert (refused.status_code, refused.json()["field"]) == (422, field), query
