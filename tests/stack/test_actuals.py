"""``POST /actuals`` and ``python -m forecast actuals load`` through the real stack into a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from forecast.actuals import ActualsStore
from forecast.data import SalesData
from forecast.registry import Registry
from launcher.stack import Stack

CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def year_csv(full_data: SalesData) -> str:
    """2017's sales of every series (182,500 rows) as the Kaggle train file writes them."""
    year = full_data.select(full_data.rows.dates >= np.datetime64("2017-01-01"))
    lines = [f"{d},{s},{i},{n}" for d, s, i, n in zip(np.datetime_as_string(year.rows.dates, unit="D").tolist(),
                                                      year.rows.stores.tolist(), year.rows.items.tolist(),
                                                      year.sales.tolist(), strict=True)]  # fmt: skip
    return "date,store,item,sales\n" + "\n".join(lines) + "\n"


def store_of(registry: Registry) -> ActualsStore:
    return ActualsStore.beside(registry.root)


def test_a_year_of_actuals_loads_once_and_again_changes_nothing(stack: Stack, serving_registry: Registry,
                                                                year_csv: str) -> None:  # fmt: skip
    first = requests.post(f"{stack.url}/actuals", data=year_csv.encode(), headers=CSV, timeout=120)
    assert first.status_code == 200, first.text
    assert first.json() == {"added": 182_500, "replaced": 0, "unchanged": 0}
    again = requests.post(f"{stack.url}/actuals", data=year_csv.encode(), headers=CSV, timeout=120)
    assert again.json() == {"added": 0, "replaced": 0, "unchanged": 182_500}
    stored = store_of(serving_registry).read(17167, 17531)  # 2017-01-01..2017-12-31
    assert len(stored) == 182_500
    assert int(stored.sales.sum()) == sum(int(line.rsplit(",", 1)[1]) for line in year_csv.splitlines()[1:])


def test_a_bad_line_at_the_end_stores_nothing_and_is_named(stack: Stack, serving_registry: Registry) -> None:
    before = store_of(serving_registry).count()
    lines = ["date,store,item,sales"] + [f"2016-03-{day:02d},1,1,5" for day in range(1, 31)] + ["2016-03-31,1,1,-2"]
    answer = requests.post(f"{stack.url}/actuals", data="\n".join(lines).encode(), headers=CSV, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["field"] == "line 32.sales"
    assert store_of(serving_registry).count() == before


def test_json_rows_and_the_cli_load_into_the_same_store(stack: Stack, serving_registry: Registry,
                                                        tmp_path: Path) -> None:  # fmt: skip
    rows = [{"date": "2016-05-01", "store": 2, "item": 3, "sales": 9}, {"date": "2016-05-02", "store": 2, "item": 3,
                                                                          "sales": 11}]  # fmt: skip
    answer = requests.post(f"{stack.url}/actuals", json=rows, timeout=30)
    assert answer.json() == {"added": 2, "replaced": 0, "unchanged": 0}
    csv = tmp_path / "may.csv"
    csv.write_text("date,store,item,sales\n2016-05-02,2,3,12\n2016-05-03,2,3,8\n")
    command = [sys.executable, "-m", "forecast", "--registry", str(serving_registry.root), "actuals", "load", str(csv)]
    loaded = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "added 1, replaced 1, unchanged 0"
    stored = store_of(serving_registry).read(16922, 16924)  # 2016-05-01..03
    assert [(int(d), int(s)) for d, s in zip(stored.days, stored.sales, strict=True)] == [(16922, 9), (16923, 12),
                                                                                         (16924, 8)]  # fmt: skip
