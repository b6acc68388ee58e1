"""Rows as columns: the whole-column JSON reader accepts what the schema accepts, large JSON and CSV bodies are read
in pieces exactly as if whole."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from pydantic import ValidationError
from pydantic_core import from_json

import app.predict
from app import rows as rows_module
from app.domain import SMALL_ROWS, Domain, check_domain
from app.errors import ApiError, InvalidInput, PayloadTooLarge
from app.predict import PredictRequest, read_rows
from app.rows import from_csv, from_json_pieces, from_json_rows, from_validated
from app.schemas import ROWS, Shape
from serving.columns import Columns

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


CSV_CELLS = {  # what each column's cells are drawn from: plain ones, and every way a cell can fail to be plain
    "id": ["0", "7", "007", "45000", "1" * 18, "1" * 19, "1" * 40, "a1", " 7", "-1", "", "é"],
    "date": ["2018-01-21", "2016-02-29", "2018-02-28", "0001-01-01", "9999-12-31", "2018-02-29", "2019-04-31",
             "0000-01-01", "2018-1-21", "2018-13-01", "2018-00-10", "2018-01-00", "2018-01-32", " 2018-01-21",
             "2018/01/21", "20180121", "2018001021", "2018-01-2x", "-018-01-21", "2018--1-21", "2018-1--21",
             "2018-01-2-", "2018-01-211", ""],
    "store": ["1", "10", "01", "999999999999999999", "0", "00", "-3", "3-", "1-0", "1" * 19, "x", " 2", "2 ", ""],
}  # fmt: skip
CSV_CELLS["item"] = CSV_CELLS["store"]
CSV_HEADERS = [("id", "date", "store", "item"), ("date", "store", "item"), ("store", "item", "date", "id")]


CSV_PLAIN = {"id": "7", "date": "2018-01-21", "store": "3", "item": "45"}
# A line as drawn, with an extra cell, an extra empty one, a cell short, CRLF, a space, blank.
CSV_LINE_FORMS = ["{}", "{},5", "{},", "<{}", "{}\r", " {}", ""]
CSV_ENDS = ["\n", "", "\n\n", "\r\n"]


def _csv_line(header: tuple[str, ...], odd: dict[str, str], form: str = "{}") -> str:
    cells = [odd.get(name, CSV_PLAIN[name]) for name in header]
    return form.removeprefix("<").format(",".join(cells[:-1] if form.startswith("<") else cells))


def _csv_outcome(body: bytes, max_rows: int) -> tuple[Any, ...]:
    try:
        read = from_csv(body, max_rows)
    except ApiError as error:
        return type(error).__name__, str(error), error.field
    columns, ids = read.columns, read.ids
    return (columns.days.tolist(), columns.stores.tolist(), columns.items.tolist(),
            None if ids is None else (ids.tolist(), ids.dtype))  # fmt: skip


def _assert_read_alike(body: bytes, max_rows: int = 100) -> tuple[Any, ...]:
    """``body`` read with the array path where it applies equals ``body`` read line by line only."""
    outcomes = []
    for chunk_bytes in (24, 1 << 20):  # about a line per chunk (plain and odd chunks mixed), and one chunk
        with patch.object(rows_module, "CSV_CHUNK_BYTES", chunk_bytes):
            outcomes.append(_csv_outcome(body, max_rows))
            with patch.object(rows_module, "_plain_csv_chunk", lambda *args: None):
                assert _csv_outcome(body, max_rows) == outcomes[-1], body
    return outcomes[0]


@pytest.mark.parametrize("header", CSV_HEADERS, ids=",".join)
def test_plain_csv_is_read_as_arrays_exactly_as_line_by_line(header: tuple[str, ...]) -> None:
    """Every odd cell and every line form, once among plain lines: the same rows, or the same error."""
    plain = _csv_line(header, {})
    for name in header:
        for cell in CSV_CELLS[name]:
            for form in CSV_LINE_FORMS:
                for end in CSV_ENDS:
                    lines = [plain, plain, _csv_line(header, {name: cell}, form), plain]
                    _assert_read_alike((",".join(header) + "\n" + "\n".join(lines) + end).encode())


@pytest.mark.parametrize("forms", [("{},5", "<{}"), ("<{}", "{},5")], ids=["more, then fewer", "fewer, then more"])
def test_lines_whose_cells_miscount_by_as_many_either_way_are_read_alike(forms: tuple[str, str]) -> None:
    header = CSV_HEADERS[0]
    lines = [_csv_line(header, {}, form) for form in forms]
    outcome = _assert_read_alike((",".join(header) + "\n" + "\n".join(lines) + "\n").encode())
    assert outcome[0] == "InvalidInput"


def test_a_csv_of_empty_ids_is_read_alike() -> None:
    assert _assert_read_alike(b"id,date,store,item\n,2018-01-21,3,45\n,2018-01-22,3,45\n")[3] == (["", ""], "<U1")


def test_plain_csv_with_many_odd_cells_is_read_as_arrays_exactly_as_line_by_line() -> None:
    draw = random.Random(17)
    for _ in range(300):
        header = draw.choice(CSV_HEADERS)
        lines = []
        for _ in range(draw.randint(1, 12)):
            odd = {name: draw.choice(CSV_CELLS[name]) for name in header if draw.random() < 0.1}
            lines.append(_csv_line(header, odd, draw.choice(CSV_LINE_FORMS[:1] * 12 + CSV_LINE_FORMS)))
        body = (",".join(header) + "\n" + "\n".join(lines) + draw.choice(CSV_ENDS)).encode()
        _assert_read_alike(body, draw.randint(1, 14))


def test_the_kaggle_test_file_takes_the_array_path() -> None:
    lines = [f"{n},2018-{1 + n % 3:02d}-{1 + n % 28:02d},{1 + n % 10},{1 + n % 50}" for n in range(4500)]
    body = ("\n".join(["id,date,store,item", *lines]) + "\n").encode()
    start = body.index(b"\n") + 1
    for chunk in (body[start:], body[start:-1]):  # with its last line end, and without
        read = rows_module._plain_csv_chunk(chunk, {"id": 0, "date": 1, "store": 2, "item": 3}, 4)
        assert read is not None
        assert read[2] == 4500
    whole = from_csv(body, 4500)
    assert whole.ids is not None
    assert (whole.ids.tolist(), whole.columns.stores.tolist()) == (
        [str(n) for n in range(4500)],
        [1 + n % 10 for n in range(4500)],
    )
    assert whole.columns.date_strings()[:2] == ["2018-01-01", "2018-02-02"]


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
