"""The actuals store on a real SQLite file: migrations, idempotent loads, all or nothing, concurrent loads."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from forecast.actuals import Actuals, ActualsStore, Loaded, migrations
from forecast.actuals_input import BadActuals, from_csv, from_json
from tests.helpers import wait_for
from tests.postgres import new_database


def actuals(days: range, store: int = 1, item: int = 1, sales: int = 5) -> Actuals:
    count = len(days)
    return Actuals(np.array(days), np.full(count, store), np.full(count, item), np.full(count, sales))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ActualsStore:
    """The same tests against each database: a SQLite file, and a new database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return ActualsStore(f"sqlite:///{tmp_path / 'actuals.sqlite3'}")
    return ActualsStore(new_database(request.getfixturevalue("postgres")))


def test_the_schema_is_the_migrations_applied_once_each(store: ActualsStore) -> None:
    assert store.schema_version() == len(migrations())
    assert store.migrate() == []  # nothing left to apply
    with store.connection() as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT name FROM schema_migrations ORDER BY version")
        names = [row[0] for row in cursor.fetchall()]
    assert names == [name for _, name, _ in migrations()]


def test_loading_the_same_rows_twice_changes_nothing_and_new_sales_replace(store: ActualsStore) -> None:
    assert store.load(actuals(range(17000, 17365))) == Loaded(added=365, replaced=0, unchanged=0)
    assert store.load(actuals(range(17000, 17365))) == Loaded(added=0, replaced=0, unchanged=365)
    assert store.load(actuals(range(17360, 17370), sales=7)) == Loaded(added=5, replaced=5, unchanged=0)
    assert store.count() == 370
    read = store.read(17360, 17369)
    assert read.sales.tolist() == [7] * 10
    assert read.days.tolist() == list(range(17360, 17370))


def test_a_load_that_fails_stores_nothing(store: ActualsStore) -> None:
    store.load(actuals(range(17000, 17010)))
    broken = actuals(range(17005, 17020))
    broken.sales[-1] = -1  # the database's own check refuses it, after every other row was written
    with pytest.raises(Exception, match=r"(?i)check"):  # the driver's integrity error, whichever database
        store.load(broken)
    assert store.count() == 10
    assert store.read(17000, 17020).days.tolist() == list(range(17000, 17010))


def test_two_concurrent_loads_lose_nothing(store: ActualsStore) -> None:
    results: list[Loaded] = []
    loads = [threading.Thread(target=lambda s=s: results.append(store.load(actuals(range(17000, 17300), store=s))))
             for s in (1, 2)]  # fmt: skip
    for load in loads:
        load.start()
    for load in loads:
        load.join()
    assert sorted(r.added for r in results) == [300, 300]
    assert store.count() == 600


def test_the_default_store_is_a_file_beside_the_registry(tmp_path: Path) -> None:
    store = ActualsStore.beside(tmp_path / "registry")
    assert store.url == f"sqlite:///{tmp_path / 'actuals.sqlite3'}"


def test_csv_in_any_column_order_and_json_rows_read_the_same() -> None:
    csv = from_csv("sales,item,store,date\n5,2,1,2018-01-01\n6,2,1,2018-01-02\n")
    rows = from_json([{"date": "2018-01-01", "store": 1, "item": 2, "sales": 5},
                      {"date": "2018-01-02", "store": 1, "item": 2, "sales": 6}])  # fmt: skip
    for got in (csv, rows):
        assert got.days.tolist() == [17532, 17533]
        assert got.stores.tolist() == [1, 1]
        assert got.items.tolist() == [2, 2]
        assert got.sales.tolist() == [5, 6]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("date,store,item\n2018-01-01,1,1\n", "header", "must name date, store, item and sales"),
        ("date,store,item,sales\n2018-01-01,1,1,5\n2018-02-30,1,1,5\n", "line 3.date", "is not a date"),
        ("date,store,item,sales\n2018-01-01,1,1,-5\n", "line 2.sales", "0 or more"),
        ("date,store,item,sales\n2018-01-01,1,1,4.5\n", "line 2.sales", "a whole number"),
        ("date,store,item,sales\n2018-01-01,11,1,5\n", "line 2.store", "not known"),
        ("date,store,item,sales\n2018-01-01,1,51,5\n", "line 2.item", "not known"),
        ("date,store,item,sales\n2018-01-01,1,1\n", "line 2", "3 cells"),
        ("date,store,item,sales\n2018-01-01,1,1,5\n2018-01-01,1,1,6\n", "line 3", "the same date, store and item"),
        ("date,store,item,sales\n", "body", "no rows"),
    ],
)
def test_a_bad_line_is_named_by_line_and_field(text: str, field: str, message: str) -> None:
    with pytest.raises(BadActuals) as error:
        from_csv(text, stores=range(1, 11), items=range(1, 51))
    assert error.value.field == field
    assert message in error.value.message


KILLED_LOAD = """
import sys
import numpy as np
from forecast.actuals import Actuals, ActualsStore
days = np.repeat(np.arange(10_000, 12_000), 1_000)
store = ActualsStore(sys.argv[1])
print("loading", flush=True)
store.load(Actuals(days, np.full(len(days), 9), np.tile(np.arange(1, 1_001), 2_000), np.full(len(days), 1)))
"""


def test_a_killed_load_leaves_the_store_as_it_was(store: ActualsStore) -> None:
    store.load(actuals(range(17000, 17010)))
    with subprocess.Popen([sys.executable, "-c", KILLED_LOAD, store.url], stdout=subprocess.PIPE,
                          cwd=Path(__file__).resolve().parents[2]) as loader:  # fmt: skip
        assert loader.stdout is not None
        assert loader.stdout.readline() == b"loading\n"
        wait_for(lambda: writing(store), timeout_s=60, explain=lambda: "the load never started writing")
        loader.kill()
    assert store.count() == 10


def writing(store: ActualsStore) -> bool:
    """Whether a load is inside its transaction, writing: SQLite's write-ahead log grows; PostgreSQL shows it."""
    if not store.postgres:
        wal = Path(store.url.removeprefix("sqlite:///") + "-wal")
        return wal.exists() and wal.stat().st_size > 4 << 20
    with store.connection() as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO staging%' AND "
                       "state = 'active' AND pid <> pg_backend_pid()")  # fmt: skip
        return bool(cursor.fetchone()[0])
