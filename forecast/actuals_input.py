"""Actual sales as clients send them, read and checked: a ``date,store,item,sales`` CSV (the Kaggle train file's
columns, in any order, a header first) or JSON rows.  One bad line refuses the whole input, naming the line (or
row) and the field: nothing is stored.  No Flask: ``POST /actuals`` and ``python -m forecast actuals load`` both
read through here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from forecast.actuals import Actuals
from forecast.errors import ForecastError

COLUMNS = ("date", "store", "item", "sales")
EPOCH = dt.date(1970, 1, 1)
MAX_ID = 2**31 - 1


class BadActuals(ForecastError):
    """Input that is not actual sales; ``field`` names the line (or row) and the field: ``line 7.sales``."""

    code = "invalid_input"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


CHUNK_LINES = 20_000  # a CSV is checked this many lines at a time: Python objects for one chunk only


def from_csv(text: str, stores: Iterable[int] | None = None, items: Iterable[int] | None = None) -> Actuals:
    """The actuals of a CSV text; ``stores`` and ``items``: the known ones (None: any positive id).

    Read :data:`CHUNK_LINES` lines at a time into numpy columns (32 bytes a row, plus 8 for its line number):
    a year of every series (182,500 rows) never holds a Python object per row."""
    lines = text.split("\n")
    header = [cell.strip() for cell in lines[0].rstrip("\r").split(",")]
    if sorted(header) != sorted(COLUMNS):
        raise BadActuals(f"the header must name date, store, item and sales once each (got {','.join(header)!r})",
                         "header")  # fmt: skip
    where = [header.index(name) for name in COLUMNS]
    known = Known(stores, items)
    parts, numbers = [], []
    for first in range(1, len(lines), CHUNK_LINES):
        rows, line_numbers = [], []
        for number, line in enumerate(lines[first : first + CHUNK_LINES], start=first + 1):
            cells = line.rstrip("\r").split(",")
            if len(cells) == 1 and not cells[0].strip():
                continue  # a blank line, or the end of the file
            if len(cells) != len(COLUMNS):
                raise BadActuals(f"{len(cells)} cells, the header has {len(COLUMNS)}", f"line {number}")
            rows.append([cells[at].strip() for at in where])
            line_numbers.append(number)
        if rows:
            parts.append(_checked(rows, [f"line {n}." for n in line_numbers], known))
            numbers.append(np.array(line_numbers, dtype=np.int64))
    if not parts:
        raise BadActuals("no rows", "body")
    actuals = Actuals(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("days", "stores", "items",
                                                                                         "sales")))  # fmt: skip
    _unique(actuals, lambda index: f"line {int(np.concatenate(numbers)[index])}")
    return actuals


def from_json(payload: Any, stores: Iterable[int] | None = None, items: Iterable[int] | None = None) -> Actuals:
    """The actuals of JSON rows: a list of ``{"date", "store", "item", "sales"}``, or ``{"rows": [...]}``."""
    rows_in = payload.get("rows") if isinstance(payload, dict) and set(payload) == {"rows"} else payload
    if not isinstance(rows_in, list):
        raise BadActuals('send a list of {"date", "store", "item", "sales"} rows, or {"rows": [...]}', "body")
    rows = []
    for index, row in enumerate(rows_in):
        if not isinstance(row, dict) or set(row) != set(COLUMNS):
            raise BadActuals("a row has exactly date, store, item and sales", f"rows[{index}]")
        rows.append([row[name] for name in COLUMNS])
    if not rows:
        raise BadActuals("no rows", "body")
    actuals = _checked(rows, [f"rows[{n}]." for n in range(len(rows))], Known(stores, items))
    _unique(actuals, lambda index: f"rows[{index}]")
    return actuals


class Known:
    """The stores and items rows may name (None: any id)."""

    def __init__(self, stores: Iterable[int] | None, items: Iterable[int] | None) -> None:
        self.stores = set(stores) if stores is not None else None
        self.items = set(items) if items is not None else None


def _checked(rows: Sequence[Sequence[Any]], fields: list[str], known: Known) -> Actuals:
    """Typed columns, or :class:`BadActuals` naming the first bad value."""
    days, store_ids, item_ids, sales = [], [], [], []
    for (date, store, item, sold), field in zip(rows, fields, strict=True):
        days.append(_day(date, field))
        store_ids.append(_id(store, field + "store", known.stores))
        item_ids.append(_id(item, field + "item", known.items))
        sales.append(_units(sold, field + "sales"))
    return Actuals(*(np.array(column, dtype=np.int64) for column in (days, store_ids, item_ids, sales)))


def _unique(actuals: Actuals, name: Callable[[int], str]) -> None:
    """:class:`BadActuals` naming the first row repeating an earlier row's date, store and item."""
    keys = (actuals.days * 1_000_000 + actuals.stores) * 10_000_000 + actuals.items
    unique, first = np.unique(keys, return_index=True)
    if len(unique) != len(keys):
        repeated = int(np.setdiff1d(np.arange(len(keys)), first)[0])
        raise BadActuals("the same date, store and item as an earlier row", name(repeated))


def _day(value: Any, field: str) -> int:
    """Days since 1970-01-01 of an ISO date (``YYYY-MM-DD``, a day that exists)."""
    try:
        if isinstance(value, str) and len(value) == len("YYYY-MM-DD"):
            return (dt.date.fromisoformat(value) - EPOCH).days
    except ValueError:
        pass
    raise BadActuals(f"{value!r} is not a date (YYYY-MM-DD)", field + "date")


def _id(value: Any, field: str, known: set[int] | None) -> int:
    number = _whole(value)
    if number is None or not 1 <= number <= MAX_ID:
        raise BadActuals(f"{value!r} is not a store or item id (a whole number, 1 or more)", field)
    if known is not None and number not in known:
        raise BadActuals(f"{number} is not known to the served models", field)
    return number


def _units(value: Any, field: str) -> int:
    number = _whole(value)
    if number is None or number < 0:
        raise BadActuals(f"{value!r} is not a number of units sold (a whole number, 0 or more)", field)
    return number


def _whole(value: Any) -> int | None:
    """``value`` as a whole number (a JSON integer, or a CSV cell of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and value.isascii():
        return int(value)
    return None
