"""A request's rows as columns (numpy arrays), read from JSON row objects or from CSV, a constant number of passes.

A batch is validated, checked, split into jobs, reassembled and answered as three
columns, never as one Python object per row built by hand: for 45,000 rows that is the
difference between tenths and hundredths of a second (README "Performance").

* :func:`from_json_rows` reads parsed JSON row objects in a few whole-list passes and
  returns None when any row is not a plain well-formed one; the caller then validates
  the rows with pydantic, which names the offending field (the same rows are accepted
  either way: a test checks).
* :func:`from_json_pieces` reads a large JSON batch body about a megabyte at a time with
  :func:`from_json_rows`, so that only one piece's row objects live at once (a whole
  500,000-row body parsed at once is about 100 MB of them); any body it cannot read that
  way it leaves to the caller, which parses it whole.
* :func:`from_csv` reads ``text/csv`` bodies with a header naming ``date``, ``store``,
  ``item`` and, optionally, ``id`` (the Kaggle test set's columns), about a megabyte at a
  time, so that no list of every cell of a large body is ever held; a megabyte of plain
  lines (the Kaggle file's) as whole numpy arrays, any other line by line.

No Flask, no WSGI; raises :class:`app.errors.InvalidInput` naming the problem.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic_core import from_json

from app.errors import InvalidInput, PayloadTooLarge
from app.schemas import ID_MAX, Shape
from serving.columns import EPOCH
from serving.columns import Columns as Columns  # also where benchmarks/mule_floor/worker.py imports it

FIELDS = frozenset({"date", "store", "item"})
CSV_COLUMNS = ("id", "date", "store", "item")
CSV_CHUNK_BYTES = 1 << 20  # a CSV body is read this much (to the next line end) at a time
JSON_PIECE_BYTES = 1 << 20  # a larger JSON batch is parsed this much (to the next row's end) at a time
JSON_SPACE = b" \t\r\n"
_JSON_BATCH_START = re.compile(rb'[ \t\r\n]*(\[|\{[ \t\r\n]*"instances"[ \t\r\n]*:[ \t\r\n]*\[)[ \t\r\n]*')
_BETWEEN_ROWS = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def from_validated(rows: Sequence[Mapping[str, Any]]) -> Columns:
    """Rows pydantic validated (``date`` a :class:`datetime.date`) as columns."""
    return Columns.of([(row["date"] - EPOCH).days for row in rows], [row["store"] for row in rows],
                      [row["item"] for row in rows])  # fmt: skip


def from_json_rows(rows: list[Any]) -> Columns | None:
    """JSON row objects as columns, or None unless every one is exactly ``{"date", "store", "item"}`` with an
    ISO date string and integers from 1 to :data:`~app.schemas.ID_MAX` (the schema's rule: pydantic then
    names what is wrong)."""
    if set(map(type, rows)) != {dict} or set(map(len, rows)) != {len(FIELDS)}:
        return None
    try:
        dates = [row["date"] for row in rows]
        stores = [row["store"] for row in rows]
        items = [row["item"] for row in rows]
    except KeyError:  # three fields, not these three
        return None
    if set(map(type, dates)) != {str} or set(map(type, stores)) != {int} or set(map(type, items)) != {int}:
        return None  # bool is not int here: its type is bool
    days = _iso_days(dates)
    store_column, item_column = _int64(stores), _int64(items)
    if days is None or store_column is None or item_column is None:
        return None
    if min(store_column.min(), item_column.min()) < 1 or max(store_column.max(), item_column.max()) > ID_MAX:
        return None
    return Columns(days, store_column, item_column)


def from_json_pieces(body: bytes | bytearray, max_rows: int) -> tuple[Columns, Shape] | None:
    """The rows of a JSON batch body read :data:`JSON_PIECE_BYTES` at a time, and their shape (a list, or
    ``{"instances": [...]}``); None for a body of at most one piece, or unless the body is such a batch
    of rows :func:`from_json_rows` reads (the caller then parses it whole and names what is wrong).

    Pieces are cut between two rows (``}``, ``,``, ``{``).  A cut that falls inside a string
    leaves a piece ending in an open string, which does not parse: such a body, too, is
    left to the caller, never misread.  Raises :class:`PayloadTooLarge` past ``max_rows``.
    """
    opening = _JSON_BATCH_START.match(body) if len(body) > JSON_PIECE_BYTES else None
    if opening is None:
        return None
    shape = Shape.LIST if opening.group(1) == b"[" else Shape.INSTANCES
    stop = _closing_bracket(body, shape)
    position, parts, count = opening.end(), [], 0
    while stop is not None and position < stop:
        cut = _BETWEEN_ROWS.search(body, min(position + JSON_PIECE_BYTES, stop), stop)
        end = stop if cut is None else cut.start() + 1
        try:
            columns = from_json_rows(from_json(b"[" + body[position:end] + b"]"))
        except ValueError:
            return None
        if columns is None:
            return None
        count += len(columns)
        if count > max_rows:
            raise PayloadTooLarge(f"a batch may have at most {max_rows} rows; this one has more")
        parts.append(columns)
        position = stop if cut is None else cut.end() - 1
    return (Columns.concatenate(parts), shape) if parts else None


def _closing_bracket(body: bytes | bytearray, shape: Shape) -> int | None:
    """Where the batch's closing ``]`` is (followed by ``}`` for ``instances``, then only spaces), or None."""
    end = len(body)
    for expected in (b"}", b"]") if shape is Shape.INSTANCES else (b"]",):
        while end and body[end - 1] in JSON_SPACE:
            end -= 1
        if body[end - 1 : end] != expected:
            return None
        end -= 1
    return end


def _iso_days(texts: list[str], strip: bool = False) -> np.ndarray | None:
    """Days since 1970 of ``YYYY-MM-DD`` strings naming real days (years 1-9999), or None if any is not one.

    Each distinct string is read once (a batch holds few distinct dates: the Kaggle test set 90);
    ``strip``: spaces around a date are allowed (CSV cells).
    """
    days: dict[str, int] = {}
    for text in set(texts):
        date = text.strip() if strip else text
        if not _ISO_DATE.fullmatch(date):
            return None
        try:
            days[text] = (dt.date.fromisoformat(date) - EPOCH).days
        except ValueError:  # 2018-02-30, year 0
            return None
    return np.fromiter(map(days.__getitem__, texts), dtype=np.int64, count=len(texts))


def _int64(values: list[int]) -> np.ndarray | None:
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:  # beyond 64 bits: pydantic names it
        return None


# -- CSV ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRows:
    """A CSV body's rows as columns, and its ``id`` column as given (None when it has none)."""

    columns: Columns
    ids: np.ndarray | None  # str


def from_csv(body: bytes | bytearray, max_rows: int) -> CsvRows:
    """The rows of a ``text/csv`` body: a header line, then one row per line; raises an :class:`ApiError`.

    Cells are plain (no quoting); blank lines are skipped; ``\\r\\n`` line ends are read too.
    Raises :class:`InvalidInput` naming the line and column of the first bad cell, or
    :class:`PayloadTooLarge` past ``max_rows``.
    """
    header_end = body.find(b"\n")
    header = _cells(body[: header_end if header_end >= 0 else len(body)].decode("utf-8", "replace"))
    positions = _header_positions(header)
    start = header_end + 1 if header_end >= 0 else len(body)
    # Filled chunk by chunk: no second copy of the columns (one per chunk) is ever held.
    columns = Columns.of(*(np.empty(min(body.count(b"\n", start) + 1, max_rows + 1), np.int64) for _ in range(3)))
    ids: list[np.ndarray] = []
    line = 2  # the first row's line number, as an editor counts
    count = 0
    for chunk in _chunks(body, start):
        read = _plain_csv_chunk(chunk, positions, len(header)) or _csv_chunk(chunk, positions, len(header), line)
        if read is None:
            continue  # blank lines only
        rows, chunk_ids, lines = read
        if count + len(rows) > max_rows:
            raise PayloadTooLarge(f"a batch may have at most {max_rows} rows; this one has more")
        columns.put(slice(count, count + len(rows)), rows)
        ids += [chunk_ids] if chunk_ids is not None else []
        count += len(rows)
        line += lines
    if count == 0:
        raise InvalidInput("a CSV body needs a header line and at least one row", field="body")
    return CsvRows(columns.take(slice(0, count)), np.concatenate(ids) if "id" in positions else None)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.rstrip("\r").split(",")]


def _header_positions(header: list[str]) -> dict[str, int]:
    unknown = [name for name in header if name not in CSV_COLUMNS]
    missing = [name for name in ("date", "store", "item") if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InvalidInput(
            f"the CSV header must name date, store and item, and may name id (got {','.join(header)!r})",
            field="header",
        )
    return {name: header.index(name) for name in CSV_COLUMNS if name in header}


def _chunks(body: bytes | bytearray, start: int) -> Iterator[bytes | bytearray]:
    """The body from ``start`` in pieces of about :data:`CSV_CHUNK_BYTES`, each ending at a line end."""
    while start < len(body):
        end = body.find(b"\n", start + CSV_CHUNK_BYTES)
        end = len(body) if end < 0 else end + 1
        yield body[start:end]
        start = end


ChunkRows = tuple[Columns, np.ndarray | None, int]  # a chunk's rows, its ids (numpy str), the lines it spans


def _csv_chunk(chunk: bytes | bytearray, positions: dict[str, int], width: int, first_line: int) -> ChunkRows | None:
    """A chunk's rows, read line by line as text (any chunk, blank lines skipped; None if it has only those);
    raises :class:`InvalidInput` naming the first bad cell.

    Ids are kept as a numpy string column (a Python string per id would be held until the
    whole body is read: about three times the memory).
    """
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("a CSV body must be UTF-8 text", field="body") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():  # the line end the chunk stops at; blank lines ending the body
        lines.pop()
    if not lines:
        return None
    cells = ",".join(lines).replace("\r", "").split(",")
    if len(cells) != len(lines) * width:
        for number, line in enumerate(lines):
            if line.count(",") != width - 1:
                raise InvalidInput(f"line {first_line + number}: {line.count(',') + 1} cells, the header has {width}",
                                   field="body")  # fmt: skip

    def column(name: str) -> list[str]:
        return cells[positions[name] :: width]

    dates, stores, items = column("date"), column("store"), column("item")
    days = _iso_days(dates, strip=True)
    if days is None:
        raise _first_bad(dates, first_line, "date", lambda text: _iso_days([text], strip=True) is not None,
                         "is not a date (YYYY-MM-DD)")  # fmt: skip
    ids = np.array([cell.strip() for cell in column("id")], dtype=str) if "id" in positions else None
    rows = Columns(days, _csv_ints(stores, "store", first_line), _csv_ints(items, "item", first_line))
    return rows, ids, text.count("\n")


_PLAIN_BYTES = b"0123456789-,\n"
_DIGIT_PLACES = [0, 1, 2, 3, 5, 6, 8, 9]  # of YYYY-MM-DD
_WIDEST_CELL = 18  # digits of the widest number read as arrays (int64 holds them all)


def _plain_csv_chunk(chunk: bytes | bytearray, positions: dict[str, int], width: int) -> ChunkRows | None:
    """A chunk's rows read as whole arrays, a constant number of numpy passes over its bytes, when every line
    is plain: only digits (and the dates' dashes), no spaces, ``\\r`` or blank lines, every date a real day
    written ``YYYY-MM-DD``, every number at least 1 with at most 18 digits.  None otherwise: the chunk then
    goes to :func:`_csv_chunk`, which reads the same rows the same way (a test checks) and names what is
    wrong.  The Kaggle test file is plain: its 45,000 rows read in 9 ms instead of 27 (one core).
    """
    if not chunk or chunk.translate(None, _PLAIN_BYTES):
        return None
    data = np.zeros(len(chunk) + _WIDEST_CELL, dtype=np.uint8)  # room to read the widest cell at the end
    data[: len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(data[: len(chunk)] == ord("\n"))
    if chunk[-1] != ord("\n"):
        ends = np.append(ends, len(chunk))  # the body's last line, without a line end
    found = np.flatnonzero(data == ord(","))  # width >= 3: the header names date, store and item
    if len(found) != len(ends) * (width - 1):
        return None
    commas = found.reshape(-1, width - 1)
    starts = np.concatenate(([0], ends[:-1] + 1))
    cell_starts, cell_ends = np.column_stack((starts, commas + 1)), np.column_stack((commas, ends))
    if (cell_ends <= cell_starts).any():
        return None  # an empty cell; or lines with more commas than the header and fewer: a cell ends before it starts
    cells = {name: (cell_starts[:, place], cell_ends[:, place]) for name, place in positions.items()}
    days = _plain_dates(data, *cells["date"])
    stores, items = _plain_numbers(data, *cells["store"]), _plain_numbers(data, *cells["item"])
    ids = _plain_texts(data, *cells["id"]) if "id" in cells else None
    if days is None or stores is None or items is None or ("id" in cells and ids is None):
        return None
    return Columns(days, stores, items), ids, len(ends)


def _cell_bytes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells' bytes, one row each as wide as the widest (zeros past a cell's end), and which are the cell's;
    None when a cell is wider than :data:`_WIDEST_CELL` (``data`` has that many spare bytes at its end)."""
    lengths = ends - starts
    width = int(lengths.max())
    if width > _WIDEST_CELL:
        return None
    inside = np.arange(width) < lengths[:, None]
    # Every ``width`` bytes from every offset, as one opaque item each: picking the cells copies an item per cell,
    # not a byte (three times faster than numpy's sliding_window_view).
    windows = np.ndarray((len(data) - width + 1,), dtype=f"V{width}", buffer=data, strides=(1,))
    return windows[starts].view(np.uint8).reshape(-1, width) * inside, inside


def _plain_dates(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Days since 1970 of cells each ``YYYY-MM-DD`` naming a real day (years 1-9999), or None."""
    cells = _cell_bytes(data, starts, ends) if (ends - starts == 10).all() else None
    if cells is None:
        return None
    text = cells[0]
    if (text[:, [4, 7]] != ord("-")).any():
        return None
    digits = text[:, _DIGIT_PLACES].astype(np.int32) - ord("0")
    if ((digits < 0) | (digits > 9)).any():
        return None
    year = digits[:, :4] @ np.array([1000, 100, 10, 1], dtype=np.int32)
    month, day = digits[:, 4] * 10 + digits[:, 5], digits[:, 6] * 10 + digits[:, 7]
    if (year < 1).any() or (month < 1).any() or (month > 12).any():
        return None
    months = (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (month - 1).astype("timedelta64[M]")
    dates = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    if (dates.astype("datetime64[M]") != months).any():
        return None  # day 0, or past the month's last day: another month
    days: np.ndarray = dates.astype(np.int64)
    return days


def _plain_numbers(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Cells of 1 to 18 ASCII digits, each at least 1, as int64; or None."""
    cells = _cell_bytes(data, starts, ends)
    if cells is None:
        return None
    text, inside = cells
    digits = text.astype(np.int64) - ord("0")
    if (inside & ((digits < 0) | (digits > 9))).any():
        return None
    values = np.zeros(len(starts), dtype=np.int64)
    for place in range(text.shape[1]):  # a handful of whole-column passes: the widest cell's digits
        values = np.where(inside[:, place], values * 10 + digits[:, place], values)
    return values if (values >= 1).all() else None


def _plain_texts(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The cells (ASCII, at most 18 characters) as a numpy str column, as ``np.array(cells, dtype=str)`` makes
    it: each byte widened to the character it is (numpy's str is UCS-4), in one pass; or None."""
    cells = _cell_bytes(data, starts, ends)
    if cells is None:
        return None
    return cells[0].astype("<u4").view(f"<U{cells[0].shape[1]}").reshape(-1)


def _csv_ints(texts: list[str], name: str, first_line: int) -> np.ndarray:
    """A column of whole numbers of at least 1 (spaces around them allowed), each distinct cell read once."""
    values = {text: int(text) for text in set(texts) if _whole(text.strip())}
    if len(values) == len(set(texts)) and min(values.values()) >= 1:
        return np.fromiter(map(values.__getitem__, texts), dtype=np.int64, count=len(texts))
    raise _first_bad(texts, first_line, name, lambda text: text in values and values[text] >= 1,
                     "is not a whole number of at least 1")  # fmt: skip


def _whole(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` takes "²" too), few enough for 64 bits."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _first_bad(texts: list[str], first_line: int, name: str, good: Callable[[str], bool], problem: str) -> InvalidInput:
    """The error naming the first of ``texts`` that is not ``good`` (the caller knows one is not)."""
    number, text = next(((n, t) for n, t in enumerate(texts) if not good(t)), (0, texts[0]))
    return InvalidInput(
        f"line {first_line + number}: {name} {text!r} {problem}", field=f"line {first_line + number}.{name}"
    )
