"""The Ray Serve service's own contract for its query form: guardrail sentinels, the cap, its bodies.

The original answers ``POST /predict?date=...&store=...&item=...`` (its only form) like this,
before anything else and in this order:

* ``date`` outside ``[min_date, max_date]``, compared as text: 200 ``-1.0``;
* ``store`` outside ``[0, store_id_max]``: 200 ``-2.0``; ``item`` outside ``[0, item_id_max]``: 200 ``-3.0``;
* otherwise the model's prediction, or ``200.0`` when it is above ``max_value``.

:class:`Guardrails` holds those limits for the version being served: an imported
version's come from the original's registry file (``forecast/legacy.py``); a version we
trained gets limits from its own domain (its first and last dates, its stores and items,
no cap).  No Flask: the ``/predict`` use case (:mod:`app.predict`) applies them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

from app.domain import Domain

# What the original answers instead of a prediction (FastAPI serialises its `-> float` as these).
DATE_OUT_OF_RANGE, STORE_OUT_OF_RANGE, ITEM_OUT_OF_RANGE = -1.0, -2.0, -3.0
CAPPED = 200.0  # the original's MAX_SALES, whatever max_value is

# The original's bodies of GET /, GET /status and GET /reload (FORECAST_LEGACY_ANSWERS=true).
INDEX_ANSWER = "Sales Forecast Model is ready!"
STATUS_ANSWER = "Alive"
RELOAD_ANSWER = "Model reloaded"


class LegacyQuery(TypedDict):
    """The original's parameters as FastAPI reads them: any text for ``date``, integers parsed leniently."""

    date: str
    store: Annotated[int, Field(description="Store id (parsed as the original did: '05', ' 5 ', '5.0' are 5).")]
    item: int


LEGACY_QUERY = TypeAdapter(LegacyQuery)


def parse_date(text: str) -> dt.date | None:
    """The date as the original parsed it (``strptime('%Y-%m-%d')``: ``2018-1-5`` too); None if it is none."""
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return None


@dataclass(frozen=True)
class Guardrails:
    """A served version's limits for the query form; ``max_value`` None: no cap."""

    min_date: str
    max_date: str
    store_min: int
    store_max: int
    item_min: int
    item_max: int
    max_value: float | None

    @classmethod
    def of(cls, metadata: dict[str, Any], domain: Domain) -> Guardrails:
        """The version's own guardrails (an imported model's), else ones drawn from its domain."""
        given = metadata.get("guardrails")
        if given:
            return cls(given["min_date"], given["max_date"], given["store_id_min"], given["store_id_max"],
                       given["item_id_min"], given["item_id_max"], given.get("max_value"))  # fmt: skip
        return cls(domain.first_date.isoformat(), domain.last_date.isoformat(), min(domain.stores),
                   max(domain.stores), min(domain.items), max(domain.items), None)  # fmt: skip

    def sentinel(self, query: LegacyQuery) -> float | None:
        """The original's answer for a query outside the guardrails, or None for one inside them."""
        if not self.min_date <= query["date"] <= self.max_date:
            return DATE_OUT_OF_RANGE
        if not self.store_min <= query["store"] <= self.store_max:
            return STORE_OUT_OF_RANGE
        if not self.item_min <= query["item"] <= self.item_max:
            return ITEM_OUT_OF_RANGE
        return None

    def cap(self, sales: float) -> float:
        return CAPPED if self.max_value is not None and sales > self.max_value else sales
