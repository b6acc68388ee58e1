"""``/forecast``'s answer, JSON or CSV, written a piece at a time from the forecast's columns.

JSON: ``{"model", "model_version", "granularity", "totals", "levels", "intervals", "forecasts": [...]}``,
each forecast ``{"date", "store", "item", "sales", "lower": {"80": ...}, "upper": {...}}`` (plus
``days`` for weeks, ``explanation`` when asked; ``store`` or ``item`` null in a total).  CSV:
``date,store,item,sales,lower_80,upper_80,...`` (``days`` after ``date`` for weeks; ``base`` and one
column per factor when explained; an empty cell for a total's store or item).  No Flask.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.answers import ANSWER_PIECE_ROWS, CSV, csv_lines, interleave, number_cells
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
        dates = [f'"{date}"' for date in dates]  # safe text: ISO dates
        yield orjson.dumps(answer.header())[:-1] + b',"forecasts":['
    for start in range(0, len(answer), ANSWER_PIECE_ROWS):
        rows = slice(start, min(start + ANSWER_PIECE_ROWS, len(answer)))
        if media == CSV:
            yield _csv_piece(answer, dates, rows)
        else:
            yield (b"," if start else b"") + _json_piece(answer, dates, rows)
    if media != CSV:
        yield b"]}\n"


def _cells(answer: HorizonAnswer, dates: list[str], rows: slice, missing: str) -> dict[str, list[str]]:
    """The rows' plain fields as text, by name: date (``dates``, a bucket's), (days), store, item, sales
    (``missing``: a total's store or item).  A group's and a bucket's texts are written once, then taken for
    each of their rows."""
    positions = np.arange(rows.start, rows.stop)
    group, bucket = np.divmod(positions, len(answer.buckets))
    found = {"date": _take(dates, bucket)}
    if answer.granularity is Granularity.WEEK:
        found["days"] = _take(number_cells(answer.buckets.lengths.tolist()), bucket)
    for name, ids in (("store", answer.groups.stores), ("item", answer.groups.items)):
        found[name] = _take([missing if i < 0 else str(i) for i in ids.tolist()], group)
    found["sales"] = number_cells(answer.sales[rows].tolist())
    return found


def _take(texts: list[str], at: np.ndarray) -> list[str]:
    """``texts[i]`` for each ``i`` of ``at`` (numpy's indexing: no Python code per row)."""
    taken: list[str] = np.array(texts, dtype=object)[at].tolist()
    return taken


def _json_piece(answer: HorizonAnswer, dates: list[str], rows: slice) -> bytes:
    """The rows' forecast objects as JSON text, comma-separated: each number as orjson writes it (the shortest
    text that reads back the same double)."""
    layout: Layout = dict(_cells(answer, dates, rows, missing="null"))
    if answer.lower is not None and answer.upper is not None:
        for edge, table in (("lower", answer.lower), ("upper", answer.upper)):
            layout[edge] = {level: number_cells(table[rows, n].tolist()) for n, level in enumerate(answer.level_names)}
    explained = answer.explanation
    if explained is not None:
        kind, of = ("factors", "1 + sales") if explained.multiplicative else ("terms", "sales")
        layout["explanation"] = {"of": Constant(of), "base": number_cells(explained.base[rows].tolist()),
                                 kind: {name: number_cells(explained.values[rows, n].tolist())
                                        for n, name in enumerate(explained.names)}}  # fmt: skip
    parts = _json_parts(layout)
    parts.append(",")
    return interleave(parts, rows.stop - rows.start)[:-1].encode()


@dataclass(frozen=True)
class Constant:
    """A value written the same in every row."""

    value: str


Layout = dict[str, "list[str] | Constant | Layout"]  # a key's cells (JSON text, one per row), constant, or object


def _json_parts(obj: Layout, parts: list[str | list[str]] | None = None) -> list[str | list[str]]:
    """The parts of one JSON object per row (for :func:`app.answers.interleave`), appended to ``parts``: the
    keys and constants as JSON-encoded text, the cells as they are; adjacent texts written as one.  A plain
    recursive function: closures calling themselves would make a reference cycle that keeps every cell alive
    until the garbage collector runs (measured: four threads writing 45,000-row answers peaked 2.4 times as high)."""
    parts = [] if parts is None else parts
    _text(parts, "{")
    for n, (key, child) in enumerate(obj.items()):
        _text(parts, ("," if n else "") + orjson.dumps(key).decode() + ":")
        if isinstance(child, Constant):
            _text(parts, orjson.dumps(child.value).decode())
        elif isinstance(child, dict):
            _json_parts(child, parts)
        else:
            parts.append(child)
    _text(parts, "}")
    return parts


def _text(parts: list[str | list[str]], written: str) -> None:
    if parts and isinstance(parts[-1], str):
        parts[-1] += written
    else:
        parts.append(written)


def _csv_names(answer: HorizonAnswer) -> list[str]:
    names = ["date", "days"] if answer.granularity is Granularity.WEEK else ["date"]
    names += ["store", "item", "sales"]
    if answer.lower is not None:
        names += [f"{edge}_{level}" for level in answer.level_names for edge in ("lower", "upper")]
    if answer.explanation is not None:
        names += ["base", *answer.explanation.names]
    return names


def _csv_piece(answer: HorizonAnswer, dates: list[str], rows: slice) -> bytes:
    cells = list(_cells(answer, dates, rows, missing="").values())
    if answer.lower is not None and answer.upper is not None:
        for n in range(len(answer.levels)):
            cells += [number_cells(answer.lower[rows, n].tolist()), number_cells(answer.upper[rows, n].tolist())]
    if answer.explanation is not None:
        cells.append(number_cells(answer.explanation.base[rows].tolist()))
        cells += [number_cells(answer.explanation.values[rows, n].tolist())
                  for n in range(len(answer.explanation.names))]  # fmt: skip
    return csv_lines(cells)
