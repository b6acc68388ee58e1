"""A batch of rows as columns: the one in-memory form of rows in the web worker, and in the mule if it wants it.

Numpy only (no pydantic, no Flask, no uWSGI), so the readers (:mod:`app.rows`), the routing, the
service, the use case and the mule transport can all take it without importing one another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EPOCH = dt.date(1970, 1, 1)  # day 0 of ``Columns.days``


@dataclass(frozen=True)
class Columns:
    """Rows as three equal-length int64 arrays: ``days`` since 1970-01-01, ``stores``, ``items``."""

    days: np.ndarray
    stores: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.days)

    @classmethod
    def of(cls, days: Any, stores: Any, items: Any) -> Columns:
        """From array-likes of integers."""
        return cls(np.asarray(days, np.int64), np.asarray(stores, np.int64), np.asarray(items, np.int64))

    @classmethod
    def one(cls, date: dt.date, store: int, item: int) -> Columns:
        """One row (the single-row request, the legacy query)."""
        return cls(np.array([(date - EPOCH).days], np.int64), np.array([store], np.int64), np.array([item], np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[Columns]) -> Columns:
        """The rows of ``parts``, one after the other."""
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("days", "stores", "items")))

    def put(self, positions: slice, rows: Columns) -> None:
        """Write ``rows`` into these columns at ``positions``."""
        self.days[positions], self.stores[positions], self.items[positions] = rows.days, rows.stores, rows.items

    def take(self, positions: np.ndarray | slice) -> Columns:
        """The rows at ``positions`` (indices or a slice), in that order."""
        return Columns(self.days[positions], self.stores[positions], self.items[positions])

    def date_strings(self) -> list[str]:
        """The rows' dates as ISO strings (``2018-01-21``)."""
        if len(self.days) < 16:  # numpy's per-call cost is most of a single row's answer
            return [(EPOCH + dt.timedelta(days=day)).isoformat() for day in self.days.tolist()]
        distinct, where = np.unique(self.days, return_inverse=True)  # each distinct date formatted once
        texts = np.array([(EPOCH + dt.timedelta(days=day)).isoformat() for day in distinct.tolist()], dtype=object)
        return list(texts[where.reshape(-1)].tolist())
