"""What the served model knows, and the check of rows against it: a domain rule, not a wire schema.

The wire schemas (:mod:`app.schemas`) say what a row looks like; this says whether the
model being served can forecast it (its stores, its items, its dates), from the registry
metadata of that version, on the rows' columns (:mod:`app.rows`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app.errors import InvalidInput
from serving.columns import EPOCH, Columns


@dataclass(frozen=True)
class Domain:
    """What a model version knows: its stores, items and date range."""

    stores: frozenset[int]
    items: frozenset[int]
    first_date: dt.date
    last_date: dt.date
    store_table: np.ndarray = field(init=False, repr=False, compare=False)  # store id -> known
    item_table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "store_table", _table(self.stores))
        object.__setattr__(self, "item_table", _table(self.items))

    @property
    def first_day(self) -> int:
        """``first_date`` in days since 1970-01-01."""
        return (self.first_date - EPOCH).days

    @property
    def last_day(self) -> int:
        return (self.last_date - EPOCH).days

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], horizon_days: int) -> Domain:
        """From a version's registry metadata: its own last date (an imported model's guardrail), else
        ``horizon_days`` past its training data."""
        data, domain = metadata["data"], metadata["domain"]
        last = domain.get("last_date")
        return cls(
            frozenset(domain["stores"]),
            frozenset(domain["items"]),
            dt.date.fromisoformat(data["first_date"]),
            dt.date.fromisoformat(last)
            if last
            else dt.date.fromisoformat(data["trained_through"]) + dt.timedelta(days=horizon_days),
        )


def span(domains: Iterable[Domain]) -> Domain | None:
    """The smallest domain holding every one of ``domains`` (their stores, their items, their dates); None for none."""
    found = list(domains)
    if not found:
        return None
    return Domain(frozenset().union(*(d.stores for d in found)), frozenset().union(*(d.items for d in found)),
                  min(d.first_date for d in found), max(d.last_date for d in found))  # fmt: skip


class FieldNames(Protocol):
    """How an error names a row's field as the client sent it (``instances[3].date``, ``line 5.store``):
    a request's shape knows (:class:`app.schemas.Shape`); the domain rule only asks it."""

    def field(self, index: int, name: str) -> str: ...


SMALL_ROWS = 16  # below this many rows a Python loop beats numpy's per-call cost (1 row: 2 us against 20)


def check_domain(columns: Columns, domain: Domain, names: FieldNames) -> None:
    """Raises :class:`InvalidInput` naming the first row's value the model does not know (store, item, date).

    A constant number of vectorised passes over the columns, or for a few rows one Python pass:
    the same rule either way.  ``names`` names the field in the error as the client sent it.
    """
    index = _first_unknown_small(columns, domain) if len(columns) < SMALL_ROWS else _first_unknown(columns, domain)
    if index is None:
        return
    store, item, day = int(columns.stores[index]), int(columns.items[index]), int(columns.days[index])
    if store not in domain.stores:
        raise InvalidInput(f"store {store} is not known to the model ({_span(domain.stores)})",
                           names.field(index, "store"))  # fmt: skip
    if item not in domain.items:
        raise InvalidInput(f"item {item} is not known to the model ({_span(domain.items)})", names.field(index, "item"))
    date = EPOCH + dt.timedelta(days=day)
    message = f"date {date} is outside the model's range {domain.first_date}..{domain.last_date}"
    raise InvalidInput(message, names.field(index, "date"))


def _first_unknown_small(columns: Columns, domain: Domain) -> int | None:
    first, last = domain.first_day, domain.last_day
    rows = zip(columns.days.tolist(), columns.stores.tolist(), columns.items.tolist(), strict=True)
    for index, (day, store, item) in enumerate(rows):
        if store not in domain.stores or item not in domain.items or not first <= day <= last:
            return index
    return None


def _first_unknown(columns: Columns, domain: Domain) -> int | None:
    bad = ~_known(columns.stores, domain.store_table) | ~_known(columns.items, domain.item_table)
    bad |= (columns.days < domain.first_day) | (columns.days > domain.last_day)
    return int(np.argmax(bad)) if bad.any() else None


def _known(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Whether each value is marked in ``table`` (a lookup by value; negative or past its end: no)."""
    inside = (values >= 0) & (values < len(table))
    known: np.ndarray = inside & table[np.where(inside, values, 0)]
    return known


def _table(values: frozenset[int]) -> np.ndarray:
    table = np.zeros(max(values, default=0) + 1, dtype=bool)
    table[list(values)] = True
    return table


def _span(values: frozenset[int]) -> str:
    low, high = min(values), max(values)
    return f"known: {low}-{high}" if len(values) == high - low + 1 else f"known: {sorted(values)}"
