"""Request schemas and the input checks that need the served model's domain.

JSON bodies are validated strictly: ``store`` and ``item`` must be JSON
integers, ``date`` an ISO ``YYYY-MM-DD`` string naming a real day.  The legacy
query-string form (``?date=...&store=10&item=23``) carries strings, so its
integers are parsed from text.  Every failure names the offending field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from app.errors import InvalidInput

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _iso_date_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a date string like 2018-01-21")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date_string)]
StoreId = Annotated[int, Strict(), Field(ge=1, description="Store id, 1-10 for the default model.")]
ItemId = Annotated[int, Strict(), Field(ge=1, description="Item id, 1-50 for the default model.")]


class PredictRow(TypedDict):
    """One (date, store, item) to forecast."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    date: IsoDate
    store: StoreId
    item: ItemId


class QueryRow(TypedDict):
    """The legacy form: the same three fields as query-string text."""

    date: IsoDate
    store: Annotated[int, Field(ge=1)]
    item: Annotated[int, Field(ge=1)]


class Instances(TypedDict):
    """A batch in the TensorFlow-Serving style: ``{"instances": [row, ...]}``."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    instances: list[PredictRow]


ROW = TypeAdapter(PredictRow)
ROWS = TypeAdapter(list[PredictRow])
QUERY_ROW = TypeAdapter(QueryRow)

# -- answers (documented in /openapi.json; the views build them) ----------------------------


class Forecast(TypedDict):
    """One row's forecast: the request's fields, the predicted unit sales and the model version."""

    date: str
    store: int
    item: int
    sales: Annotated[float, Field(ge=0)]
    model_version: str


class Forecasts(TypedDict):
    """A batch's forecasts, in the order of its rows."""

    predictions: list[Forecast]


class ErrorDetail(TypedDict):
    field: str
    message: str


class ErrorBody(TypedDict):
    """Every error answer: HTTP status, a stable code, a message, the offending field if any."""

    status: int
    code: str
    message: str
    field: NotRequired[str]
    details: NotRequired[list[ErrorDetail]]


class MuleState(TypedDict):
    """A mule's last heartbeat; a mule that never reported has only id, state and age."""

    id: int
    state: Literal["loading", "ready", "failed", "stale", "unknown"]
    heartbeat_age_s: float
    pid: NotRequired[int]
    model_version: NotRequired[str | None]
    heartbeat: NotRequired[float]
    started: NotRequired[float]
    jobs_done: NotRequired[int]
    error: NotRequired[str | None]


class Status(TypedDict):
    """``GET /status`` when every mule serves a model (``model_version`` is a list mid-reload)."""

    status: Literal["Alive"]
    ready: bool
    model_version: str | list[str]
    mules: list[MuleState]


class NotReady(ErrorBody):
    """``GET /status`` when some mule has no model: the error shape plus the mules' states."""

    ready: bool
    model_version: str | list[str]
    mules: list[MuleState]


class Reloaded(TypedDict):
    """The version now served and every mule's state after a rolling reload."""

    model_version: str
    mules: list[MuleState]


class ServiceIndex(TypedDict):
    """``GET /``: what this service is and where its endpoints are."""

    service: str
    message: str
    model_version: str | None
    endpoints: dict[str, str]


@dataclass(frozen=True)
class Domain:
    """What the served model knows: its stores, items and date range."""

    stores: frozenset[int]
    items: frozenset[int]
    first_date: dt.date
    last_date: dt.date

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], horizon_days: int) -> Domain:
        data = metadata["data"]
        return cls(
            frozenset(metadata["domain"]["stores"]),
            frozenset(metadata["domain"]["items"]),
            dt.date.fromisoformat(data["first_date"]),
            dt.date.fromisoformat(data["trained_through"]) + dt.timedelta(days=horizon_days),
        )


@dataclass(frozen=True)
class Columns:
    """Validated rows as three columns; ``days`` counts from 1970-01-01."""

    days: list[int]
    stores: list[int]
    items: list[int]


def field_path(prefix: str, loc: Sequence[int | str]) -> str:
    """``("instances", 3, "date")`` -> ``instances[3].date``."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def raise_invalid(error: ValidationError, prefix: str = "") -> None:
    """Turn a pydantic error into :class:`InvalidInput` naming every field."""
    details = [{"field": field_path(prefix, e["loc"]), "message": e["msg"]} for e in error.errors()[:20]]
    first = details[0]
    raise InvalidInput(f"{first['field']}: {first['message']}", field=first["field"], details=details) from None


def check_domain(rows: list[PredictRow], domain: Domain, prefix: str | None) -> Columns:
    """Return the rows as columns, or raise :class:`InvalidInput` for the first unknown value.

    ``prefix`` is None for a single row (fields are named plainly) or the
    batch's path (``""`` for a bare list, ``"instances"``).
    """
    for index, row in enumerate(rows):
        where = "" if prefix is None else f"{prefix}[{index}]."
        if row["store"] not in domain.stores:
            raise InvalidInput(
                f"store {row['store']} is not known to the model ({_span(domain.stores)})", f"{where}store"
            )
        if row["item"] not in domain.items:
            raise InvalidInput(f"item {row['item']} is not known to the model ({_span(domain.items)})", f"{where}item")
        if not domain.first_date <= row["date"] <= domain.last_date:
            raise InvalidInput(
                f"date {row['date']} is outside the model's range {domain.first_date}..{domain.last_date}",
                f"{where}date",
            )
    return Columns(
        [row["date"].toordinal() - _EPOCH_ORDINAL for row in rows],
        [row["store"] for row in rows],
        [row["item"] for row in rows],
    )


def _span(values: frozenset[int]) -> str:
    low, high = min(values), max(values)
    return f"known: {low}-{high}" if len(values) == high - low + 1 else f"known: {sorted(values)}"
