"""Rows as columns: the whole-column JSON reader accepts what the schema accepts, large JSON and CSV bodies are read
in pieces exactly as if whole."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from pydantic_core import from_json

import app.predict
from app import rows as rows_module
from app.domain import SMALL_ROWS, Domain, check_domain
from app.errors import ApiError, InvalidInput, PayloadTooLarge
from app.predict import PredictRequest, read_rows
from app.rows import Columns, from_csv, from_json_pieces, from_json_rows, from_validated
from app.schemas import ROWS, Shape

GOOD = {"date": "2018-01-21", "store": 10, "item": 23}
CANDIDATES: list[Any] = [
    GOOD,
    {"item": 23, "store": 10, "date": "2018-01-21"},  # another key order
    {**GOOD, "date": "2016-02-29"},
    {**GOOD, "date": "0001-01-01"},
    {**GOOD, "date": "9999-12-31"},
    {**GOOD, "date": "2018-02-29"},
    {**GOOD, "date": "2018-1-21"},
    {**GOOD, "date": "2018-01"},
    {**GOOD, "date": " 2018-01-21"},
    {**GOOD, "date": "2018-01-21T00:00:00"},
    {**GOOD, "date": "NaT"},
    {**GOOD, "date": "0000-01-01"},
    {**GOOD, "date": "+12018-01-21"},
    {**GOOD, "date": 20180121},
    {**GOOD, "store": True},
    {**GOOD, "store": 10.0},
    {**GOOD, "store": "10"},
    {**GOOD, "store": 0},
    {**GOOD, "item": -3},
    {**GOOD, "item": 2**70},
    {**GOOD, "item": None},
    {**GOOD, "colour": "red"},
    {"date": "2018-01-21", "store": 10},
    [1, 2, 3],
    "2018-01-21",
]


def _schema(rows: list[Any]) -> Columns | None:
    try:
        return from_validated(ROWS.validate_python(rows))
    except ValidationError:
        return None


@pytest.mark.parametrize("candidate", CANDIDATES, ids=[repr(c)[:40] for c in CANDIDATES])
def test_the_whole_column_reader_accepts_only_what_the_schema_accepts_and_reads_it_the_same(candidate: Any) -> None:
    batch = [GOOD, candidate]
    fast, schema = from_json_rows(batch), _schema(batch)
    if fast is None:
        return  # the schema decides, and names the field
    assert schema is not None, "the fast reader took a row the schema refuses"
    for name in ("days", "stores", "items"):
        assert np.array_equal(getattr(fast, name), getattr(schema, name)), name


def test_plain_rows_take_the_whole_column_path() -> None:
    assert from_json_rows([GOOD, {**GOOD, "date": "2016-02-29", "store": 1}]) is not None


def test_csv_is_read_in_pieces_with_line_numbers_counted_across_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "CSV_CHUNK_BYTES", 40)  # a few lines per piece
    lines = [f"{n},2018-01-{1 + n % 28:02d},{1 + n % 10},{1 + n % 50}" for n in range(100)]
    read = from_csv(("id,date,store,item\n" + "\n".join(lines) + "\n\n").encode(), max_rows=100)
    assert read.ids is not None
    assert read.ids.tolist() == [str(n) for n in range(100)]
    assert read.columns.stores.tolist() == [1 + n % 10 for n in range(100)]
    assert read.columns.date_strings()[27:29] == ["2018-01-28", "2018-01-01"]
    good = list(lines)
    lines[77] = "77,2018-01-06,seven,28"
    with pytest.raises(InvalidInput) as bad:
        from_csv(("id,date,store,item\n" + "\n".join(lines)).encode(), max_rows=100)
    assert (bad.value.field, str(bad.value)) == (
        "line 79.store",
        "line 79: store 'seven' is not a whole number of at least 1",
    )
    with pytest.raises(PayloadTooLarge):
        from_csv(("id,date,store,item\n" + "\n".join(good)).encode(), max_rows=99)


PIECE_ROWS = [{"date": f"2018-01-{1 + n % 28:02d}", "store": 1 + n % 10, "item": 1 + n % 50} for n in range(60)]
PIECES_READ = {  # bodies read in pieces: compact, spaced and indented, as a list and as instances
    "compact": json.dumps(PIECE_ROWS, separators=(",", ":")).encode(),
    "spaced": json.dumps(PIECE_ROWS).encode(),
    "indented": json.dumps(PIECE_ROWS, indent=2).encode() + b"\r\n",
    "instances": json.dumps({"instances": PIECE_ROWS}, indent=1).encode(),
}
PIECES_REFUSED = {  # bodies left to the whole reader (which accepts some of them, and names what is wrong in the rest)
    "a bad row late": json.dumps([*PIECE_ROWS, {**GOOD, "store": "ten"}]).encode(),
    "a cut inside a string": json.dumps([*PIECE_ROWS, {**GOOD, "date": "2018-01-01}, {"}]).encode(),
    "a cut inside a row": json.dumps([*PIECE_ROWS, {**GOOD, "date": [{"a": 1}, {"b": 2}]}]).encode(),
    "a trailing comma": json.dumps(PIECE_ROWS).encode()[:-1] + b",]",
    "no closing bracket": json.dumps(PIECE_ROWS).encode()[:-1],
    "instances not closed": json.dumps({"instances": PIECE_ROWS}).encode()[:-1],
    "instances and another field": json.dumps({"instances": PIECE_ROWS, "x": 1}).encode(),
    "instances twice": b'{"instances": [], "instances": ' + json.dumps(PIECE_ROWS).encode() + b"}",
    "an empty list": b"[ ]",
    "a row object": json.dumps(GOOD).encode() + b" " * 200,
}


def _read(body: bytes, max_rows: int = 100) -> tuple[Any, ...]:
    """What ``/predict``'s reader makes of a JSON body: its shape and columns, or its error."""
    try:
        read = read_rows(PredictRequest("default", "", "application/json", body, 0.0), {}, max_rows)
    except ApiError as error:
        return type(error).__name__, str(error), error.field
    return read.shape, read.columns.days.tolist(), read.columns.stores.tolist(), read.columns.items.tolist()


@pytest.mark.parametrize("name", [*PIECES_READ, *PIECES_REFUSED])
def test_a_large_json_body_is_read_in_pieces_exactly_as_if_whole(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {**PIECES_READ, **PIECES_REFUSED}[name]
    monkeypatch.setattr(rows_module, "JSON_PIECE_BYTES", 10**9)
    whole = _read(body)
    monkeypatch.setattr(rows_module, "JSON_PIECE_BYTES", 100)  # about two rows a piece
    parsed: list[int] = []

    def counted(data: bytes) -> Any:
        parsed.append(len(data))
        return from_json(data)

    monkeypatch.setattr(rows_module, "from_json", counted)
    monkeypatch.setattr(app.predict, "from_json", counted)  # the whole-body parse, counted alike
    assert (from_json_pieces(body, 100) is not None) == (name in PIECES_READ)
    parsed.clear()
    assert _read(body) == whole
    if name in PIECES_READ:
        assert len(parsed) > 10  # /predict's reader took it in many pieces
        assert whole[0] in (Shape.LIST, Shape.INSTANCES)
        assert len(whole[1]) == len(PIECE_ROWS)
        assert max(parsed) < 250  # no piece much larger than asked, and never the whole body


def test_a_json_body_read_in_pieces_stops_at_the_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_module, "JSON_PIECE_BYTES", 100)
    with pytest.raises(PayloadTooLarge, match="at most 59 rows"):
        from_json_pieces(PIECES_READ["compact"], max_rows=59)
    assert from_json_pieces(PIECES_READ["compact"], max_rows=60) is not None


def test_csv_that_is_not_utf8_is_named() -> None:
    with pytest.raises(InvalidInput, match="UTF-8"):
        from_csv(b"date,store,item\n2018-01-01,1,\xff\n", max_rows=10)


@pytest.mark.parametrize("rows", [4, SMALL_ROWS + 4])  # the Python pass and the vectorised one
@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"store": 11}, "[2].store", "store 11 is not known to the model (known: 1-10)"),
        ({"item": 51}, "[2].item", "item 51 is not known to the model (known: 1-50)"),
        ({"store": 2**40}, "[2].store", f"store {2**40} is not known to the model (known: 1-10)"),
        ({"day": -719_162}, "[2].date", "date 0001-01-01 is outside the model's range 2013-01-01..2019-12-31"),
    ],
)
def test_both_ways_of_checking_the_domain_name_the_first_unknown_value_alike(
    rows: int, bad: dict[str, int], field: str, message: str
) -> None:
    domain = Domain(frozenset(range(1, 11)), frozenset(range(1, 51)), dt.date(2013, 1, 1), dt.date(2019, 12, 31))
    days, stores, items = [17_000] * rows, [1] * rows, [1] * rows
    days[2], stores[2], items[2] = bad.get("day", 17_000), bad.get("store", 1), bad.get("item", 1)
    days[-1] = -1  # a later bad row is not the one named
    with pytest.raises(InvalidInput) as refused:
        check_domain(Columns.of(days, stores, items), domain, Shape.LIST)
    assert (refused.value.field, str(refused.value)) == (field, message)
    check_domain(Columns.of([17_000] * rows, [10] * rows, [50] * rows), domain, Shape.LIST)  # all known: passes
