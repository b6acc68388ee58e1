"""The wire schemas of requests and answers, and the shapes a request's rows can take.

JSON bodies are validated strictly: ``store`` and ``item`` must be JSON
integers, ``date`` an ISO ``YYYY-MM-DD`` string naming a real day.  The legacy
query-string form (``?date=...&store=10&item=23``) is read as the original
service read it (:mod:`app.legacy_answers`).  Every failure names the offending field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any, Literal, NoReturn, NotRequired

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from app.errors import InvalidInput


def _iso_date_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a date string like 2018-01-21")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date_string)]
ID_MAX = 2**31 - 1  # ids travel to the mules as 32-bit integers
StoreId = Annotated[int, Strict(), Field(ge=1, le=ID_MAX, description="Store id, 1-10 for the default model.")]
ItemId = Annotated[int, Strict(), Field(ge=1, le=ID_MAX, description="Item id, 1-50 for the default model.")]


MAX_LEVELS = 8
Level = Annotated[float, Field(gt=50, lt=99.9, description="A band's coverage in percent, above 50, below 99.9.")]
Levels = Annotated[list[Level], Field(max_length=MAX_LEVELS)]


class PredictRow(TypedDict):
    """One (date, store, item) to forecast; ``level`` asks for its bands (in a batch: the same for every row)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    date: IsoDate
    store: StoreId
    item: ItemId
    level: NotRequired[Levels]


class Instances(TypedDict):
    """A batch in the TensorFlow-Serving style: ``{"instances": [row, ...]}``."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    instances: list[PredictRow]


class Shape(Enum):
    """How a request's rows arrived: it decides the answer's shape and how errors name fields."""

    ROW = "row"  # one JSON object; answered with one Forecast object
    LIST = "list"  # a JSON list of rows; answered {"predictions": [...]}
    INSTANCES = "instances"  # {"instances": [...]}; answered {"predictions": [...]}
    QUERY = "query"  # the legacy form: no body, the row in the query string; answered with a bare number
    CSV = "csv"  # a text/csv body with a header line (the Kaggle test set's columns); answered {"predictions"} or CSV

    @property
    def prefix(self) -> str:
        """Where the rows sit in the body: errors name fields under it."""
        return "instances" if self is Shape.INSTANCES else ""

    @property
    def is_batch(self) -> bool:
        return self in (Shape.LIST, Shape.INSTANCES, Shape.CSV)

    def field(self, index: int, name: str) -> str:
        """How an error names field ``name`` of the ``index``-th row (``instances[3].date``, ``date``, or in
        CSV its line, header first: ``line 5.date``)."""
        if self is Shape.CSV:
            return f"line {index + 2}.{name}"
        return field_path(self.prefix, (index, name) if self.is_batch else (name,))


ROW = TypeAdapter(PredictRow)
ROWS = TypeAdapter(list[PredictRow])

# -- /forecast ------------------------------------------------------------------------------

MAX_FORECAST_DAYS = 366
DEFAULT_DAYS = 28
DEFAULT_LEVELS = (80.0, 95.0)
ForecastDays = Annotated[int, Strict(), Field(ge=1, le=MAX_FORECAST_DAYS, description="Days from start, 1-366.")]


class SeriesRef(TypedDict):
    """One series: a store and an item."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    store: StoreId
    item: ItemId


class ForecastBody(TypedDict):
    """``POST /forecast``: which series, from when, for how long, by day or ISO week, which totals and bands.

    ``series`` omitted (or null): every (store, item) the model knows.  ``start`` omitted: the
    day after the served version's training data.  ``totals``: ``store`` sums over items,
    ``item`` over stores, ``all`` over both.  ``level``: the bands, in percent.  ``explain``:
    each daily forecast's factors (daily, per series only).
    """

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    series: NotRequired[Annotated[list[SeriesRef], Field(min_length=1)] | None]
    start: NotRequired[IsoDate | None]
    days: NotRequired[ForecastDays]
    granularity: NotRequired[Literal["day", "week"]]
    totals: NotRequired[Literal["store", "item", "all"] | None]
    level: NotRequired[Levels]
    explain: NotRequired[Annotated[bool, Strict()]]


FORECAST_BODY = TypeAdapter(ForecastBody)

# -- answers (documented in /openapi.json; the views build them) ----------------------------


class HorizonIntervals(TypedDict):
    """How the bands were made (``method``, ``levels``), or why there are none (``none``)."""

    method: NotRequired[str]
    levels: NotRequired[list[str]]
    none: NotRequired[str]


class Forecast(TypedDict):
    """One row's forecast: the request's fields, the predicted unit sales and the model version; with ``level``
    asked, its bands (``lower``/``upper``: level -> edge), or ``intervals.none`` saying why there are none."""

    date: str
    store: int
    item: int
    sales: Annotated[float, Field(ge=0)]
    model_version: str
    lower: NotRequired[dict[str, float]]
    upper: NotRequired[dict[str, float]]
    intervals: NotRequired[HorizonIntervals]


class Forecasts(TypedDict):
    """A batch's forecasts, in the order of its rows."""

    predictions: list[Forecast]


class ExplanationBody(TypedDict):
    """Why a daily forecast is what it is: LightGBM's per-feature contributions as factors (or terms).

    ``of`` says how they combine: ``1 + sales`` = base x every factor (our models: log1p space, the
    trend a factor too), or ``sales`` = base + every term (imported legacy models).
    """

    of: Literal["1 + sales", "sales"]
    base: float
    factors: NotRequired[dict[str, float]]
    terms: NotRequired[dict[str, float]]


class HorizonRow(TypedDict):
    """One day or ISO week of a series or total: its first date, its days (weeks), the forecast and its bands."""

    date: str
    days: NotRequired[int]
    store: int | None  # None in a total over stores
    item: int | None  # None in a total over items
    sales: Annotated[float, Field(ge=0)]
    lower: NotRequired[dict[str, float]]  # level ("80") -> the band's lower edge
    upper: NotRequired[dict[str, float]]
    explanation: NotRequired[ExplanationBody]


class HorizonForecasts(TypedDict):
    """``/forecast``'s answer: the rows in series-then-date order."""

    model: str
    model_version: str
    granularity: Literal["day", "week"]
    totals: Literal["store", "item", "all"] | None
    intervals: HorizonIntervals
    forecasts: list[HorizonRow]


class ActualRow(TypedDict):
    """One day's actual sales of a series (``POST /actuals`` as JSON)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    date: IsoDate
    store: StoreId
    item: ItemId
    sales: Annotated[int, Strict(), Field(ge=0, description="Units sold that day.")]


class ActualsLoaded(TypedDict):
    """What ``POST /actuals`` stored: rows new to the store, rows whose sales changed, rows it held as they were."""

    added: int
    replaced: int
    unchanged: int


class StoredActuals(TypedDict):
    """``GET /actuals``: the window read (``null`` when nothing is stored) and its stored rows, by store, item and
    date."""

    start: str | None
    end: str | None
    source: str  # "actuals", or "training data of <model> <version>" while nothing is stored
    actuals: list[ActualRow]


class AccuracyScores(TypedDict):
    """Errors of ``rows`` forecasts against the actuals (``null`` each when ``rows`` is 0)."""

    rows: int
    smape: float | None
    mae: float | None
    bias: float | None
    coverage: NotRequired[dict[str, float]]


class AccuracyGroup(AccuracyScores):
    """A breakdown row (``by=store`` or ``by=item``): its store or item, its scores and the baseline's."""

    store: NotRequired[int]
    item: NotRequired[int]
    baseline: AccuracyScores


class AccuracyVersion(AccuracyScores):
    """One version's realised accuracy over the window, the seasonal-naive baseline's beside it."""

    version: str
    aliases: list[str]
    baseline: AccuracyScores
    breakdown: NotRequired[list[AccuracyGroup]]


class Accuracy(TypedDict):
    """``GET /accuracy``: the window judged (``null`` when no actuals are stored) and each version's entry."""

    model: str
    start: str | None
    end: str | None
    granularity: Literal["day", "week"]
    by: Literal["store", "item"] | None
    versions: list[AccuracyVersion]


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


# Named apart from serving.messages.MuleState (a heartbeat's state between processes); the docstring is the
# document's description.
class MuleStateBody(TypedDict):
    """A mule's last heartbeat; a mule that never reported has only id, state and age."""

    __pydantic_config__ = ConfigDict(title="MuleState")  # type: ignore[misc]  # the document's name, as before
    id: int
    state: Literal["loading", "ready", "failed", "stale", "unknown"]
    heartbeat_age_s: float | None  # None: the mule never reported
    pid: NotRequired[int]
    model_version: NotRequired[str | None]
    heartbeat: NotRequired[float]
    started: NotRequired[float]
    jobs_done: NotRequired[int]
    error: NotRequired[str | None]


class RolloutState(TypedDict):
    """The pod's following of the registry: routes generation, a rollout in progress, versions it refused."""

    generation: int
    in_progress: str | None  # "default v3 through mules [1, 2]" while the mules load it
    refused: dict[str, str]  # "model/version" -> why this pod does not serve it


class MlflowState(TypedDict):
    """The pod's following of MLflow (``FORECAST_MLFLOW_TRACKING_URI``); null when it follows none."""

    tracking_uri: str
    last_success: float | None  # Unix time of the last pass that reached MLflow; null: none yet
    age_s: float | None  # seconds since that pass
    failures: int  # passes since then that could not reach MLflow (down, slow, 5xx)
    last_error: str | None  # why the last of them failed
    refused: dict[str, str]  # "model/mlflow:name/version" -> why this pod does not serve what MLflow names


class Status(TypedDict):
    """``GET /status`` when every mule serves a model (``model_version`` is a list mid-reload)."""

    status: Literal["Alive"]
    ready: bool
    model_version: str | list[str]
    mules: list[MuleStateBody]
    rollout: RolloutState | None  # None before the pod's first rollout
    mlflow: MlflowState | None


# Named apart from app.errors.NotReady (the error that carries this body); the docstring is the document's.
class NotReadyBody(ErrorBody):
    """``GET /status`` when some mule has no model: the error shape plus the mules' states."""

    __pydantic_config__ = ConfigDict(title="NotReady")  # type: ignore[misc]  # the document's name, as before
    ready: bool
    model_version: str | list[str]
    mules: list[MuleStateBody]
    rollout: RolloutState | None
    mlflow: MlflowState | None


class AliasState(TypedDict):
    """Where an alias of the registry points; ``weight``: the canary's or shadow's share, percent."""

    version: str
    weight: int | None


class RouteState(TypedDict):
    """Which versions score a model's rows on this pod (its last rollout)."""

    production: str
    canary: str | None
    canary_weight: int
    shadow: str | None
    shadow_weight: int


class ServedDomain(TypedDict):
    """What the production version this pod routes to forecasts: its stores, items and dates, and the last day of
    its training data (a forecast's ``start`` defaults to the day after)."""

    stores: list[int]
    items: list[int]
    first_date: str
    last_date: str
    trained_through: str


class ModelState(TypedDict):
    """One model: its versions and aliases in the registry, this pod's routes, the mules holding each version, and
    what its production version forecasts."""

    versions: list[str]
    aliases: dict[str, AliasState]
    routes: RouteState | None  # None: not rolled out on this pod (yet, or its production was refused)
    mules: dict[str, list[int]]  # version -> ids of the serving mules that hold it
    serves: ServedDomain | None  # None: not rolled out on this pod


class Models(TypedDict):
    """``GET /models``: every model of the registry, by name, and the versions this pod refused."""

    models: dict[str, ModelState]
    refused: dict[str, str]


class Reloaded(TypedDict):
    """The version now served and every mule's state after a rolling reload."""

    model_version: str
    mules: list[MuleStateBody]


class ServiceIndex(TypedDict):
    """``GET /``: what this service is and where its endpoints are."""

    service: str
    message: str
    model_version: str | None
    endpoints: dict[str, str]


def field_path(prefix: str, loc: Sequence[int | str]) -> str:
    """``("instances", 3, "date")`` -> ``instances[3].date``."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def raise_invalid(error: ValidationError, prefix: str = "") -> NoReturn:
    """Raise :class:`InvalidInput` for a pydantic error, naming every field as the client sent it (under
    ``prefix``: where the rows sit, a :class:`Shape`'s)."""
    details = [{"field": field_path(prefix, e["loc"]), "message": e["msg"]} for e in error.errors()[:20]]
    first = details[0]
    raise InvalidInput(f"{first['field']}: {first['message']}", field=first["field"], details=details) from None
