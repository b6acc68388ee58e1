import numpy as np
import pytest

from forecast.features import FEATURE_NAMES, Rows, build_features


def random_rows(n: int, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    days = rng.integers(np.datetime64("2013-01-01").astype(int), np.datetime64("2019-12-31").astype(int), n)
    return Rows(days.astype("datetime64[D]"), rng.integers(1, 11, n), rng.integers(1, 51, n))


def test_one_row_and_batch_give_identical_features() -> None:
    rows = random_rows(100_000)
    batch = build_features(rows)
    assert batch.shape == (100_000, len(FEATURE_NAMES))
    assert batch.flags.c_contiguous
    assert batch.dtype == np.float64
    for i in np.random.default_rng(1).choice(len(rows), 500, replace=False):
        one = build_features(Rows(rows.dates[i : i + 1], rows.stores[i : i + 1], rows.items[i : i + 1]))
        assert np.array_equal(one[0], batch[i])


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        # store, item, dayofweek (Mon=0), month, dayofmonth, dayofyear
        ("2018-01-21", [10, 23, 6, 1, 21, 21]),  # a Sunday
        ("2016-12-31", [10, 23, 5, 12, 31, 366]),  # leap year
        ("2017-03-01", [10, 23, 2, 3, 1, 60]),
        ("1970-01-01", [10, 23, 3, 1, 1, 1]),  # a Thursday
    ],
)
def test_known_dates(date: str, expected: list[int]) -> None:
    features = build_features(Rows.from_columns([date], [10], [23]))
    assert features[0].tolist() == expected


def test_empty_rows() -> None:
    assert build_features(Rows.from_columns([], [], [])).shape == (0, len(FEATURE_NAMES))
