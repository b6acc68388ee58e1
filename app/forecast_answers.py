"""``/forecast``'s answer, JSON or CSV, written a piece at a time from the forecast's columns.

JSON: ``{"model", "model_version", "granularity", "totals", "levels", "intervals", "forecasts": [...]}``,
each forecast ``{"date", "store", "item", "sales", "lower": {"80": ...}, "upper": {...}}`` (plus
``days`` for weeks, ``explanation`` when asked; ``store`` or ``item`` null in a total).  CSV:
``date,store,item,sales,lower_80,upper_80,...`` (``days`` after ``date`` for weeks; ``base`` and one
column per factor when explained; an empty cell for a total's store or item).  No Flask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.answers import ANSWER_PIECE_ROWS, CSV, number_cells
from app.bands import level_names
from app.explain import Explanation
from forecast.buckets import Buckets, Granularity, Groups, Totals
from forecast.intervals import METHOD
from serving.columns import Columns


@dataclass(frozen=True)
class HorizonAnswer:
    """A forecast's rows, group by group then bucket by bucket (series-then-date order)."""

    model: str
    version: str  # the version that scored it ("v1,v2" mid-canary)
    granularity: Granularity
    totals: Totals | None
    levels: tuple[float, ...]
    groups: Groups
    buckets: Buckets
    sales: np.ndarray  # (groups x buckets,)
    lower: np.ndarray | None  # (rows, levels); None: no bands (``note`` says why)
    upper: np.ndarray | None
    note: str | None  # why there are no bands
    explanation: Explanation | None

    def __len__(self) -> int:
        return len(self.sales)

    @property
    def level_names(self) -> list[str]:
        return level_names(self.levels)

    def header(self) -> dict[str, Any]:
        intervals = {"method": METHOD, "levels": self.level_names} if self.note is None else {"none": self.note}
        return {"model": self.model, "model_version": self.version, "granularity": self.granularity.value,
                "totals": self.totals.value if self.totals else None, "intervals": intervals}  # fmt: skip


def render(answer: HorizonAnswer, media: str) -> Iterator[bytes]:
    """The answer in pieces of at most :data:`ANSWER_PIECE_ROWS` rows: JSON, or CSV for ``media`` ``text/csv``."""
    dates = Columns.of(answer.buckets.first_days, answer.buckets.first_days, answer.buckets.first_days).date_strings()
    if media == CSV:
        yield (",".join(_csv_names(answer)) + "\n").encode()
    else:
        yield orjson.dumps(answer.header())[:-1] + b',"forecasts":['
    for start in range(0, len(answer), ANSWER_PIECE_ROWS):
        rows = slice(start, min(start + ANSWER_PIECE_ROWS, len(answer)))
        if media == CSV:
            yield _csv_piece(answer, dates, rows)
        else:
            yield (b"," if start else b"") + _json_piece(answer, dates, rows)
    if media != CSV:
        yield b"]}\n"


def _columns(answer: HorizonAnswer, dates: list[str], rows: slice) -> dict[str, list[Any]]:
    """The rows' plain fields by name, JSON-ready: date, (days), store, item, sales."""
    positions = np.arange(rows.start, rows.stop)
    group, bucket = np.divmod(positions, len(answer.buckets))
    found: dict[str, list[Any]] = {"date": [dates[b] for b in bucket.tolist()]}
    if answer.granularity is Granularity.WEEK:
        found["days"] = answer.buckets.lengths[bucket].tolist()
    found["store"] = [None if s < 0 else s for s in answer.groups.stores[group].tolist()]
    found["item"] = [None if i < 0 else i for i in answer.groups.items[group].tolist()]
    found["sales"] = answer.sales[rows].tolist()
    return found


def _json_piece(answer: HorizonAnswer, dates: list[str], rows: slice) -> bytes:
    """The rows' forecast objects as JSON text, comma-separated, written by :func:`_writer` for this answer's
    fields: each number as orjson writes it (the shortest text that reads back the same double)."""
    columns = _columns(answer, dates, rows)
    layout: list[tuple[str, Any]] = [(name, TEXT if name == "date" else NUMBER) for name in columns]
    values = [columns.pop("date"), *(number_cells(v) for v in columns.values())]
    if answer.lower is not None and answer.upper is not None:
        levels = answer.level_names
        for edge, table in (("lower", answer.lower), ("upper", answer.upper)):
            layout.append((edge, [(level, NUMBER) for level in levels]))
            values += [number_cells(table[rows, n].tolist()) for n in range(len(levels))]
    explained = answer.explanation
    if explained is not None:
        kind, of = ("factors", "1 + sales") if explained.multiplicative else ("terms", "sales")
        names = [(name, NUMBER) for name in explained.names]
        layout.append(("explanation", [("of", Constant(of)), ("base", NUMBER), (kind, names)]))
        values.append(number_cells(explained.base[rows].tolist()))
        values += [number_cells(explained.values[rows, n].tolist()) for n in range(len(explained.names))]
    return _writer(_freeze(layout))(*values).encode()


TEXT, NUMBER = "text", "number"  # a column of strings to quote (safe ones: dates), or of JSON numbers (or null)


@dataclass(frozen=True)
class Constant:
    """A value written the same in every row."""

    value: str


Layout = tuple[tuple[str, Any], ...]  # (key, TEXT | NUMBER | Constant | a nested Layout)


def _freeze(layout: list[tuple[str, Any]]) -> Layout:
    return tuple((key, _freeze(child) if isinstance(child, list) else child) for key, child in layout)


@functools.lru_cache(maxsize=64)
def _writer(layout: Layout) -> Callable[..., str]:
    """A function from one list of cells per column to the rows' JSON objects, comma-separated: one f-string
    comprehension over ``zip``, generated for ``layout`` (45,000 rows with two bands: about half the time
    of building each row's dicts and encoding them, measured).  Keys and constants are JSON-encoded and
    reach the code as variables, never as source text."""
    constants: dict[str, str] = {}
    count = 0

    def literal(text: str) -> str:
        name = f"k{len(constants)}"
        constants[name] = orjson.dumps(text).decode()
        return "{" + name + "}"

    def display(part: Layout) -> str:
        nonlocal count
        entries = []
        for key, child in part:
            if child in (TEXT, NUMBER):
                cell = "{c" + str(count) + "}"
                entries.append(literal(key) + ":" + (f'"{cell}"' if child == TEXT else cell))
                count += 1
            elif isinstance(child, Constant):
                entries.append(literal(key) + ":" + literal(child.value))
            else:
                entries.append(literal(key) + ":" + display(child))
        return "{{" + ",".join(entries) + "}}"

    template = display(layout)
    cells, columns = ", ".join(f"c{n}" for n in range(count)), ", ".join(f"v{n}" for n in range(count))
    source = f"def rows({columns}):\n    return ','.join([f{template!r} for {cells} in zip({columns}, strict=True)])\n"
    namespace: dict[str, Any] = dict(constants)
    exec(source, namespace)  # the template's text is this function's own; keys and constants are variables
    rows: Callable[..., str] = namespace["rows"]
    return rows


def _csv_names(answer: HorizonAnswer) -> list[str]:
    names = ["date", "days"] if answer.granularity is Granularity.WEEK else ["date"]
    names += ["store", "item", "sales"]
    if answer.lower is not None:
        names += [f"{edge}_{level}" for level in answer.level_names for edge in ("lower", "upper")]
    if answer.explanation is not None:
        names += ["base", *answer.explanation.names]
    return names


def _csv_piece(answer: HorizonAnswer, dates: list[str], rows: slice) -> bytes:
    columns = _columns(answer, dates, rows)
    cells: list[list[str]] = [columns.pop("date")]
    cells += [["" if v is None else str(v) for v in values] if name in ("store", "item") else number_cells(values)
              for name, values in columns.items()]  # fmt: skip
    if answer.lower is not None and answer.upper is not None:
        for n in range(len(answer.levels)):
            cells += [number_cells(answer.lower[rows, n].tolist()), number_cells(answer.upper[rows, n].tolist())]
    if answer.explanation is not None:
        cells.append(number_cells(answer.explanation.base[rows].tolist()))
        cells += [number_cells(answer.explanation.values[rows, n].tolist())
                  for n in range(len(answer.explanation.names))]  # fmt: skip
    return ("\n".join(map(",".join, zip(*cells, strict=True))) + "\n").encode()
