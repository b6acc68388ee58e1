"""A forecast's fields in the answer, declared once: the JSON objects and the CSV lines are both written from them.

:data:`FIELDS` lists them in answer order: a name, how to get the rows' values from the
columns and the prediction, and how CSV writes them (or that it does not).  A new field the
model computes is one more :class:`AnswerField` here naming the model's per-row ``output`` it
reads (``Prediction.outputs``; the mules compute each one :data:`OUTPUTS` names for every
request: ``forecast.scoring.Scorer.output``), plus its schema (:class:`app.schemas.Forecast`:
a test compares the two); its example feeds the OpenAPI document.  JSON and CSV cannot drift
apart.

A CSV body with an ``id`` column (Kaggle's test.csv) is answered ``id`` and the fields not of
the request's row (``id,sales``, Kaggle's submission file); without one, every CSV field
(``date,store,item,sales``).  No Flask, no WSGI: the use case (:mod:`app.predict`) calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from app.encoding import json_line
from app.prediction import Prediction
from serving.columns import Columns

if TYPE_CHECKING:
    from app.bands import Bands

ANSWER_PIECE_ROWS = 10_000  # answers are encoded this many rows at a time (faster than 50,000 too: measured)
CSV = "text/csv"


def _texts(values: list[Any]) -> list[str]:
    return values  # already text (dates, versions)


def number_cells(values: list[Any]) -> list[str]:
    """Numbers as JSON writes them (orjson's shortest round-trip form, several times faster than ``repr`` each)."""
    return orjson.dumps(values)[1:-1].decode().split(",")


def interleave(parts: Sequence[str | list[str]], rows: int) -> str:
    """Row after row, each part's text for that row, in order, as one text: a part is a list of one text per row,
    or one text written in every row.  Slice assignments and one join: no Python code runs per row."""
    texts: list[str] = [""] * (rows * len(parts))
    for n, part in enumerate(parts):
        texts[n :: len(parts)] = [part] * rows if isinstance(part, str) else part
    return "".join(texts)


def csv_lines(cells: Sequence[list[str]]) -> bytes:
    """CSV lines of one list of cells per column (each as long as the rows), every line ended."""
    parts: list[str | list[str]] = []
    for column in cells:
        parts += [column, ","]
    parts[-1] = "\n"
    return interleave(parts, len(cells[0])).encode()


@dataclass(frozen=True, slots=True)
class AnswerField:
    """One field of a row's forecast, in JSON and in CSV."""

    name: str
    example: Any  # the OpenAPI document's example value (app/openapi.py FORECAST_EXAMPLE)
    one: Callable[[Columns, Prediction], Any]  # the value of a single row (the one-row request: no slicing)
    values: Callable[[Columns, Prediction, slice], list[Any]]  # the rows' values, JSON-ready
    csv: Callable[[list[Any]], list[str]] | None  # the values as CSV cells; None: JSON only
    of_row: bool = False  # the request's own (date, store, item): CSV with an id column writes the id instead
    output: str | None = None  # the model's per-row output it reads (Prediction.outputs), if any


FIELDS = (
    AnswerField("date", "2018-01-21", lambda columns, _: columns.date_strings()[0],
                lambda columns, _, rows: columns.take(rows).date_strings(), _texts, of_row=True),
    AnswerField("store", 10, lambda columns, _: int(columns.stores[0]),
                lambda columns, _, rows: columns.stores[rows].tolist(), number_cells, of_row=True),
    AnswerField("item", 23, lambda columns, _: int(columns.items[0]),
                lambda columns, _, rows: columns.items[rows].tolist(), number_cells, of_row=True),
    AnswerField("sales", 72.4, lambda _, prediction: float(prediction.sales[0]),
                lambda _, prediction, rows: prediction.sales[rows].tolist(), number_cells),
    AnswerField("model_version", "v2", lambda _, prediction: prediction.labels[0],
                lambda _, prediction, rows: prediction.versions_of(rows), None),
)  # fmt: skip
NAMES = tuple(field.name for field in FIELDS)
OUTPUTS = tuple(field.output for field in FIELDS if field.output is not None)  # what the mules compute per request
ASKED_FIELDS = ("lower", "upper", "intervals")  # written only for rows that ask for bands (``level``): _add_bands
EXAMPLE = {field.name: field.example for field in FIELDS}  # a forecast as the document shows it
_ONE_ROW = tuple((field.name, field.one) for field in FIELDS)  # pairs: the single row's loop reads no attributes


def render_row(columns: Columns, prediction: Prediction, bands: Bands | None = None) -> bytes:
    """The answer to one row object: that row's forecast object (with its bands, when it asked for them)."""
    row = {}
    for name, one in _ONE_ROW:  # a loop, not a comprehension: Python 3.11 makes a frame for one (measured)
        row[name] = one(columns, prediction)
    if bands is not None:
        _add_bands([row], bands, slice(0, 1))
    return json_line(row)


def _add_bands(objects: list[dict[str, Any]], bands: Bands, rows: slice) -> None:
    """Each object's ``lower`` and ``upper`` (level -> edge), or ``intervals.none`` saying why there are none."""
    if bands.lower is None or bands.upper is None:
        for obj in objects:
            obj["intervals"] = {"none": bands.note}
        return
    names = bands.level_names
    for obj, low, high in zip(objects, bands.lower[rows].tolist(), bands.upper[rows].tolist(), strict=True):
        obj["lower"] = dict(zip(names, low, strict=True))
        obj["upper"] = dict(zip(names, high, strict=True))


def render(columns: Columns, ids: np.ndarray | None, prediction: Prediction, media: str,
           bands: Bands | None = None) -> Iterator[bytes]:  # fmt: skip
    """A batch's answer (rows that came as a list, ``instances`` or CSV, ``ids`` its id column), in pieces of
    at most :data:`ANSWER_PIECE_ROWS` rows: JSON, or CSV for ``media`` ``text/csv``; with the rows' ``bands``
    when they asked for them (CSV: ``lower_80,upper_80,...`` columns after the fields)."""
    if media == CSV:
        yield _csv_header(ids is not None, bands)
    else:
        yield b'{"predictions":['
    for start in range(0, len(columns), ANSWER_PIECE_ROWS):
        rows = slice(start, start + ANSWER_PIECE_ROWS)
        if media == CSV:
            yield _csv_rows(columns, ids, prediction, rows, bands)
        else:
            objects = _forecasts(columns, prediction, rows)
            if bands is not None:
                _add_bands(objects, bands, rows)
            yield (b"," if start else b"") + orjson.dumps(objects)[1:-1]
    if media != CSV:
        yield b"]}\n"


def _forecasts(columns: Columns, prediction: Prediction, rows: slice) -> list[dict[str, Any]]:
    """The rows' forecast objects (one dict each: what the JSON answer is made of)."""
    return _objects(*[field.values(columns, prediction, rows) for field in FIELDS])  # each as long as the rows


def _objects_of(names: tuple[str, ...]) -> Callable[..., list[dict[str, Any]]]:
    """A function from one list per name to the rows' objects, written as a dict display over ``zip``.

    Generated from :data:`NAMES` once, as :func:`collections.namedtuple` writes its classes: a display
    with the names written in builds 10,000 objects in ~2.9 ms where ``dict(zip(NAMES, row))`` or
    ``map(dict, ...)`` takes ~6.5 ms (measured), a third of a batch answer's encoding.
    """
    columns = ", ".join(f"column{n}" for n in range(len(names)))
    cells = ", ".join(f"cell{n}" for n in range(len(names)))
    display = ", ".join(f"{name!r}: cell{n}" for n, name in enumerate(names))
    source = f"def objects({columns}):\n    return [{{{display}}} for {cells} in zip({columns}, strict=True)]\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # the names are FIELDS', this module's own constants
    objects: Callable[..., list[dict[str, Any]]] = namespace["objects"]
    return objects


_objects = _objects_of(NAMES)


def _csv_fields(with_ids: bool) -> list[AnswerField]:
    return [field for field in FIELDS if field.csv is not None and not (with_ids and field.of_row)]


def _csv_header(with_ids: bool, bands: Bands | None) -> bytes:
    names = (["id"] if with_ids else []) + [field.name for field in _csv_fields(with_ids)]
    if bands is not None and bands.lower is not None:
        names += [f"{edge}_{level}" for level in bands.level_names for edge in ("lower", "upper")]
    return (",".join(names) + "\n").encode()


def _csv_rows(columns: Columns, ids: np.ndarray | None, prediction: Prediction, rows: slice,
              bands: Bands | None = None) -> bytes:  # fmt: skip
    """The rows' CSV lines: the id (if any), each CSV field, as :data:`FIELDS` writes them, and the bands."""
    cells = [] if ids is None else [list(map(str, ids[rows].tolist()))]  # as the body wrote them (text or digits)
    for field in _csv_fields(ids is not None):
        assert field.csv is not None  # _csv_fields keeps those only
        cells.append(field.csv(field.values(columns, prediction, rows)))
    if bands is not None and bands.lower is not None and bands.upper is not None:
        for n in range(len(bands.level_names)):
            cells += [number_cells(bands.lower[rows, n].tolist()), number_cells(bands.upper[rows, n].tolist())]
    return csv_lines(cells)
