"""What the served model knows, and the check of rows against it: a domain rule, not a wire schema.

The wire schemas (:mod:`app.schemas`) say what a row looks like; this says whether the
model being served can forecast it (its stores, its items, its dates), from the registry
metadata of that version, and turns the rows into the three columns a job carries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput
from app.schemas import PredictRow, Shape

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Domain:
    """What a model version knows: its stores, items and date range."""

    stores: frozenset[int]
    items: frozenset[int]
    first_date: dt.date
    last_date: dt.date

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


@dataclass(frozen=True)
class Columns:
    """Rows the model knows, as three columns; ``days`` counts from 1970-01-01."""

    days: list[int]
    stores: list[int]
    items: list[int]

    def __len__(self) -> int:
        return len(self.days)


def check_domain(rows: list[PredictRow], domain: Domain, shape: Shape) -> Columns:
    """Return the rows as columns; raises :class:`InvalidInput` naming the first value the model does not know.

    ``shape`` says how the rows arrived, so that the error names the field as the client sent it.
    """
    for index, row in enumerate(rows):
        if row["store"] not in domain.stores:
            message = f"store {row['store']} is not known to the model ({_span(domain.stores)})"
            raise InvalidInput(message, shape.field(index, "store"))
        if row["item"] not in domain.items:
            raise InvalidInput(f"item {row['item']} is not known to the model ({_span(domain.items)})",
                               shape.field(index, "item"))  # fmt: skip
        if not domain.first_date <= row["date"] <= domain.last_date:
            message = f"date {row['date']} is outside the model's range {domain.first_date}..{domain.last_date}"
            raise InvalidInput(message, shape.field(index, "date"))
    return Columns(
        [row["date"].toordinal() - _EPOCH_ORDINAL for row in rows],
        [row["store"] for row in rows],
        [row["item"] for row in rows],
    )


def _span(values: frozenset[int]) -> str:
    low, high = min(values), max(values)
    return f"known: {low}-{high}" if len(values) == high - low + 1 else f"known: {sorted(values)}"
