"""Turn (date, store, item) rows into the model's feature matrix.

Training and serving call the same :func:`build_features`, so the features a
model was trained on are exactly the ones it is served with.  It is numpy
only (no pandas) and fully vectorised: one row and 100,000 rows go through
the same code and give bit-identical features.

Bump :data:`FEATURE_VERSION` whenever the output of :func:`build_features`
changes for the same input; the registry refuses to serve a model built with
another feature version.
"""

from __future__ import annotations

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
