"""Sales data: a generator with the Kaggle schema, and a CSV loader.

The real Kaggle "Store Item Demand Forecasting Challenge" ``train.csv`` cannot
be downloaded here, so :func:`generate` builds a data set with the same schema
(``date,store,item,sales``) and shape (10 stores x 50 items x every day of
2013-2017 = 913,000 rows) and the structure the real one is known to have:
multiplicative store and item levels, weekly and yearly seasonality, year on
year growth that slows down, and Poisson count noise.  :func:`load_csv` reads
either file the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.features import Rows
from forecast.trend import interp_extrapolate

STORES = 10
ITEMS = 50
FIRST_DATE = np.datetime64("2013-01-01")
LAST_DATE = np.datetime64("2017-12-31")

# Monday..Sunday multipliers, shaped like the real data (weekends sell more).
WEEKLY = np.array([0.80, 0.93, 0.94, 0.99, 1.05, 1.12, 1.17])
# Log sales level at mid-year of 2013..2017: growth of 16%, 6%, 5%, 3%.
YEARLY_LOG_LEVEL = np.log(np.cumprod([1.0, 1.16, 1.06, 1.05, 1.03]))
BASE_SALES = 41.0


@dataclass(frozen=True)
class SalesData:
    """A sales history: the rows and the units sold on each."""

    rows: Rows
    sales: np.ndarray  # int64
    fingerprint: str  # "sha256:<hex>" of the source file or generated content

    def __len__(self) -> int:
        return len(self.sales)

    def select(self, mask: np.ndarray) -> SalesData:
        """Rows where ``mask`` is true (same fingerprint: same source)."""
        rows = Rows(self.rows.dates[mask], self.rows.stores[mask], self.rows.items[mask])
        return SalesData(rows, self.sales[mask], self.fingerprint)


def generate(seed: int = 0) -> SalesData:
    """Return the full synthetic data set, ordered by item, store, date.

    Deterministic: the same seed always gives the same rows and sales.
    """
    rng = np.random.default_rng(seed)
    store_level = rng.uniform(0.65, 1.35, STORES)
    item_level = np.exp(rng.uniform(np.log(0.4), np.log(1.9), ITEMS))

    dates = np.arange(FIRST_DATE, LAST_DATE + 1)
    days = dates.astype(np.int64)
    years = dates.astype("datetime64[Y]")
    day_of_year = (dates - years).astype(np.int64)
    year_fraction = years.astype(np.int64) - 43 + day_of_year / 365.25  # 2013-01-01 -> 0.0
    mid_years = np.arange(len(YEARLY_LOG_LEVEL)) + 0.5
    growth = np.exp(interp_extrapolate(year_fraction, mid_years, YEARLY_LOG_LEVEL))
    season = 1.0 + 0.22 * np.sin(2 * np.pi * (day_of_year - 105) / 365.25)
    daily = BASE_SALES * growth * season * WEEKLY[(days + 3) % 7]

    item, store, day = np.meshgrid(np.arange(ITEMS), np.arange(STORES), np.arange(len(dates)), indexing="ij")
    mean = item_level[item] * store_level[store] * daily[day]
    sales = rng.poisson(mean).ravel()
    rows = Rows(dates[day.ravel()], store.ravel() + 1, item.ravel() + 1)
    digest = hashlib.sha256(f"generate(seed={seed})".encode())
    digest.update(sales.tobytes())
    return SalesData(rows, sales.astype(np.int64), f"sha256:{digest.hexdigest()}")


def write_csv(data: SalesData, path: Path) -> None:
    """Write ``data`` as a Kaggle-style ``date,store,item,sales`` CSV."""
    import pandas as pd  # training-side only: the serving path never imports pandas

    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "date": np.datetime_as_string(data.rows.dates, unit="D"),
            "store": data.rows.stores,
            "item": data.rows.items,
            "sales": data.sales,
        }
    )
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def load_csv(path: Path) -> SalesData:
    """Read a ``date,store,item,sales`` CSV (the real Kaggle file or ours).

    Raises ``ValueError`` naming the problem if a column is missing or a value
    does not parse.
    """
    import pandas as pd  # training-side only: the serving path never imports pandas

    frame = pd.read_csv(path, dtype={"date": str})
    missing = {"date", "store", "item", "sales"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    if frame[["date", "store", "item", "sales"]].isna().any().any():
        raise ValueError(f"{path}: empty values in date, store, item or sales")
    rows = Rows.from_columns(frame["date"].to_numpy(), frame["store"].to_numpy(), frame["item"].to_numpy())
    return SalesData(rows, frame["sales"].to_numpy(dtype=np.int64), file_fingerprint(path))


def file_fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"
