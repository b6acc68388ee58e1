import itertools
from pathlib import Path

import numpy as np
import pytest

from forecast.data import ITEMS, STORES, SalesData, generate, load_csv, write_csv


def test_generated_shape_matches_kaggle(full_data: SalesData) -> None:
    rows = full_data.rows
    assert len(full_data) == 913_000
    assert rows.dates.min() == np.datetime64("2013-01-01")
    assert rows.dates.max() == np.datetime64("2017-12-31")
    assert set(np.unique(rows.stores)) == set(range(1, STORES + 1))
    assert set(np.unique(rows.items)) == set(range(1, ITEMS + 1))
    assert len(np.unique(rows.dates)) == 1826
    assert full_data.sales.min() >= 0
    # ordered like Kaggle's train.csv: item, then store, then date
    assert rows.items[0] == 1
    assert rows.stores[0] == 1
    assert rows.items[-1] == ITEMS
    assert rows.stores[-1] == STORES


def test_generated_data_has_the_known_structure(full_data: SalesData) -> None:
    rows, sales = full_data.rows, full_data.sales.astype(float)
    weekday = (rows.days + 3) % 7
    year = rows.dates.astype("datetime64[Y]").astype(int) + 1970
    month = rows.dates.astype("datetime64[M]").astype(int) % 12 + 1
    assert 40 < sales.mean() < 65  # the real data: 52.25
    assert sales[weekday == 6].mean() > 1.3 * sales[weekday == 0].mean()  # Sunday vs Monday
    assert sales[month == 7].mean() > 1.3 * sales[month == 1].mean()  # summer vs winter
    yearly = [sales[year == y].sum() for y in range(2013, 2018)]
    assert all(later > earlier for earlier, later in itertools.pairwise(yearly))


def test_generator_is_deterministic() -> None:
    first, again, other = generate(seed=7), generate(seed=7), generate(seed=8)
    assert np.array_equal(first.sales, again.sales)
    assert first.fingerprint == again.fingerprint
    assert not np.array_equal(first.sales, other.sales)
    assert first.fingerprint != other.fingerprint


def test_csv_round_trip(tmp_path: Path, small_data: SalesData) -> None:
    path = tmp_path / "train.csv"
    write_csv(small_data, path)
    assert path.read_text().splitlines()[0] == "date,store,item,sales"
    loaded = load_csv(path)
    assert np.array_equal(loaded.rows.dates, small_data.rows.dates)
    assert np.array_equal(loaded.rows.stores, small_data.rows.stores)
    assert np.array_equal(loaded.rows.items, small_data.rows.items)
    assert np.array_equal(loaded.sales, small_data.sales)
    assert loaded.fingerprint.startswith("sha256:")


def test_load_csv_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("date,store,item\n2013-01-01,1,1\n")
    with pytest.raises(ValueError, match="sales"):
        load_csv(path)
