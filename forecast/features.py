"""Turn (date, store, item) rows into a model's feature matrix: the feature sets a version may use.

Training and serving call the same builder, so the features a model was trained on
are exactly the ones it is served with.  Builders are numpy only (no pandas) and
fully vectorised: one row and 100,000 rows go through the same code and give
bit-identical features.

Two feature sets exist, named by the ``feature_version`` a version's metadata records
(:data:`FEATURE_SETS`):

* ``"1"`` (:data:`FEATURE_VERSION`), ours: calendar features around a fitted trend,
  the trees predicting ``log1p(sales)`` minus the trend (:mod:`forecast.trend`);
* ``"legacy-1"``, the Ray Serve service's: ``[store, item, month, weekday, year]``
  as one float row, raw daily sales out (models imported with ``import-legacy``).

Bump a set's version whenever its builder's output changes for the same input; the
registry refuses to serve a model built with a feature set this code does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FEATURE_VERSION = "1"
FEATURE_NAMES = ("store", "item", "dayofweek", "month", "dayofmonth", "dayofyear")
# store and item are labels, not quantities: LightGBM splits them as categories.
CATEGORICAL_FEATURES = ("store", "item")

# 1970-01-01 (day 0 of datetime64[D]) was a Thursday; Monday is 0.
_EPOCH_WEEKDAY = 3


@dataclass(frozen=True)
class Rows:
    """Columns of rows to forecast: one date, store and item per row."""

    dates: np.ndarray  # datetime64[D]
    stores: np.ndarray  # integer
    items: np.ndarray  # integer

    @classmethod
    def from_columns(cls, dates: object, stores: object, items: object) -> Rows:
        """Build rows from array-likes; dates may be ISO strings or datetime64."""
        return cls(
            dates=np.asarray(dates, dtype="datetime64[D]"),
            stores=np.asarray(stores, dtype=np.int64),
            items=np.asarray(items, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def days(self) -> np.ndarray:
        """Days since 1970-01-01, as int64."""
        return self.dates.astype(np.int64)


def build_features(rows: Rows) -> np.ndarray:
    """Return a C-contiguous float64 matrix, one row per input row.

    Columns follow :data:`FEATURE_NAMES`.  Pure function of its input.
    """
    dates = rows.dates
    months = dates.astype("datetime64[M]")
    years = dates.astype("datetime64[Y]")
    out = np.empty((len(dates), len(FEATURE_NAMES)), dtype=np.float64)
    out[:, 0] = rows.stores
    out[:, 1] = rows.items
    out[:, 2] = (rows.days + _EPOCH_WEEKDAY) % 7
    out[:, 3] = months.astype(np.int64) % 12 + 1
    out[:, 4] = (dates - months).astype(np.int64) + 1
    out[:, 5] = (dates - years).astype(np.int64) + 1
    return out


def build_legacy_features(rows: Rows) -> np.ndarray:
    """The original service's row: store, item, month (1-12), weekday (Monday = 0), year; float64."""
    dates = rows.dates
    out = np.empty((len(dates), len(LEGACY_FEATURE_NAMES)), dtype=np.float64)
    out[:, 0] = rows.stores
    out[:, 1] = rows.items
    out[:, 2] = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    out[:, 3] = (rows.days + _EPOCH_WEEKDAY) % 7
    out[:, 4] = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    return out


# The names the original service's model file carries (its `day` is the weekday, as trained).
LEGACY_FEATURE_VERSION = "legacy-1"
LEGACY_FEATURE_NAMES = ("store", "item", "month", "day", "year")
# The same features as a model trained on a frame with a `weekday` column names them (one logged to MLflow, say).
LEGACY_WEEKDAY_FEATURE_VERSION = "legacy-1-weekday"
LEGACY_WEEKDAY_FEATURE_NAMES = ("store", "item", "month", "weekday", "year")


@dataclass(frozen=True)
class FeatureSet:
    """How a version's rows become its features, and what its trees predict."""

    version: str
    names: tuple[str, ...]
    build: Callable[[Rows], np.ndarray]
    log_target: bool  # True: the trees predict log1p(sales) around the version's trend; False: sales
    # True: compiled trees must forecast LightGBM's own doubles, to the last bit (the Ray Serve service's
    # models: its answers are compared byte for byte); False: to rounding (forecast/compiled.py).
    exact_sum: bool = False


FEATURE_SETS = {
    FEATURE_VERSION: FeatureSet(FEATURE_VERSION, FEATURE_NAMES, build_features, log_target=True),
    LEGACY_FEATURE_VERSION: FeatureSet(LEGACY_FEATURE_VERSION, LEGACY_FEATURE_NAMES, build_legacy_features,
                                       log_target=False, exact_sum=True),
    LEGACY_WEEKDAY_FEATURE_VERSION: FeatureSet(LEGACY_WEEKDAY_FEATURE_VERSION, LEGACY_WEEKDAY_FEATURE_NAMES,
                                               build_legacy_features, log_target=False, exact_sum=True),
}  # fmt: skip
