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

from app.answers import ANSWER_PIECE_ROWS, CSV, number_cells
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
        return [f"{level:g}" for level in self.levels]

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
            yield (b"," if start else b"") + orjson.dumps(_objects(answer, dates, rows))[1:-1]
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


def _objects(answer: HorizonAnswer, dates: list[str], rows: slice) -> list[dict[str, Any]]:
    columns = _columns(answer, dates, rows)
    names = list(columns)
    objects = [dict(zip(names, cells, strict=True)) for cells in zip(*columns.values(), strict=True)]
    if answer.lower is not None and answer.upper is not None:
        levels = answer.level_names
        for obj, low, high in zip(objects, answer.lower[rows].tolist(), answer.upper[rows].tolist(), strict=True):
            obj["lower"] = dict(zip(levels, low, strict=True))
            obj["upper"] = dict(zip(levels, high, strict=True))
    explained = answer.explanation
    if explained is not None:
        kind = "factors" if explained.multiplicative else "terms"
        of = "1 + sales" if explained.multiplicative else "sales"
        for obj, base, values in zip(objects, explained.base[rows].tolist(), explained.values[rows].tolist(),
                                     strict=True):  # fmt: skip
            obj["explanation"] = {"of": of, "base": base, kind: dict(zip(explained.names, values, strict=True))}
    return objects


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
