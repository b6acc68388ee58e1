"""``/actuals``: actual sales in (``POST``, CSV or JSON) and out (``GET``), in the actuals store; no Flask.

The rows are read and checked whole before anything is stored (:mod:`forecast.actuals_input`: a bad
line refuses the request with 422 naming it, and nothing is stored), against the stores and items
the served models know, then loaded in one transaction (:class:`forecast.actuals.ActualsStore`).
``GET`` answers a window's stored rows (by default the last :data:`HISTORY_DAYS` days with actuals),
of one store, one item or both: what a planner draws beside the forecast (``/ui``); with nothing
stored yet, the last weeks of the production version's training data, which the version keeps
(``source`` says which).  The store is opened on first use: a worker starts even when PostgreSQL
does not answer yet.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from pydantic_core import from_json

from app.domain import span
from app.errors import InvalidInput, MalformedJson, Reason, Unavailable, UnsupportedMediaType
from app.service import ForecastService
from forecast.actuals import ActualsStore, Loaded, StoreUnavailable
from forecast.actuals_input import BadActuals
from forecast.actuals_input import from_csv as actuals_from_csv
from forecast.actuals_input import from_json as actuals_from_json
from forecast.registry import DEFAULT_MODEL
from serving.columns import EPOCH

MAX_WINDOW_DAYS = 366  # the longest window /actuals and /accuracy read at once
HISTORY_DAYS = 56  # GET /actuals without a start: the last 8 weeks
QUERY_FIELDS = ("model", "start", "end", "store", "item")
MAX_ID = 2**31 - 1  # a store or item number the query reads (the store keeps them as 32-bit integers)


@dataclass(frozen=True)
class Window:
    """Days ``first_day``..``last_day`` (since 1970-01-01), both included."""

    first_day: int
    last_day: int

    @property
    def days(self) -> int:
        return self.last_day - self.first_day + 1

    def date(self, day: int) -> str:
        return str(EPOCH + dt.timedelta(days=day))


_FIRST_DAY = (dt.date.min - EPOCH).days  # the earliest day a date can name


def window_of(store: ActualsStore, start: dt.date | None, end: dt.date | None, default_days: int) -> Window | None:
    """The days asked, or the last ``default_days`` days ending on the last day with actuals (None when nothing is
    stored and no end was given); 422 naming ``start`` for a window backwards or over :data:`MAX_WINDOW_DAYS`, ``end``
    for a default window that would start before the first date there is."""
    if end is None:
        last = store.last_day()
        if last is None:
            return None
    else:
        last = (end - EPOCH).days
    first = (start - EPOCH).days if start is not None else last - default_days + 1
    if first < _FIRST_DAY:  # the default window before an end in the first days of year 1: no such dates
        raise InvalidInput(f"the {default_days} days up to end {end} start before 0001-01-01: give a start",
                           field="end")  # fmt: skip
    if first > last:
        raise InvalidInput(f"start {start} is after end {EPOCH + dt.timedelta(days=last)}", field="start")
    if last - first + 1 > MAX_WINDOW_DAYS:
        raise InvalidInput(f"a window may span at most {MAX_WINDOW_DAYS} days; this one has {last - first + 1}",
                           field="start")  # fmt: skip
    return Window(first, last)


def read_date(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name}: a date as YYYY-MM-DD (got {value!r})", field=name) from None


class ActualsUseCase:
    """Loads actuals; one per web worker, thread-safe (each load has its own database connection)."""

    def __init__(self, service: ForecastService) -> None:
        self.service = service
        self._store: ActualsStore | None = None
        self._lock = threading.Lock()

    def store(self) -> ActualsStore:
        """The store (opened, and migrated, on first use); 503 when its database cannot be reached."""
        with self._lock:
            if self._store is None:
                settings = self.service.settings
                try:
                    self._store = ActualsStore.beside(settings.registry_dir, settings.actuals_url)
                except StoreUnavailable as exc:  # not there yet: the next request tries again
                    raise Unavailable(exc.message, Reason.UNAVAILABLE) from exc
            return self._store

    def load(self, content_type: str, body: bytes) -> dict[str, Any]:
        """``{"added", "replaced", "unchanged"}`` of the rows of ``body``; raises an :class:`app.errors.ApiError`."""
        domain = span(self.service.served_domains().values())
        stores, items = (domain.stores, domain.items) if domain is not None else (None, None)
        mimetype = content_type.partition(";")[0].strip().lower()
        try:
            if mimetype == "text/csv":
                actuals = actuals_from_csv(body.decode("utf-8", "replace"), stores, items)
            elif mimetype == "application/json":
                actuals = actuals_from_json(_json(body), stores, items)
            else:
                raise UnsupportedMediaType(f"send date,store,item,sales as text/csv, or JSON rows (got {mimetype!r})")
        except BadActuals as exc:
            raise InvalidInput(exc.message, field=exc.field) from None
        try:
            loaded: Loaded = self.store().load(actuals)
        except StoreUnavailable as exc:
            raise Unavailable(exc.message, Reason.UNAVAILABLE) from exc
        return {"added": loaded.added, "replaced": loaded.replaced, "unchanged": loaded.unchanged}

    def history(self, query_string: str) -> dict[str, Any]:
        """``GET /actuals``: ``{"start", "end", "source", "actuals": [{"date", "store", "item", "sales"}, ...]}``, by
        store, item and date; with nothing stored (and no ``end`` asked), :meth:`training_weeks`.  422 naming the
        parameter it cannot read, 404 for a model it does not have."""
        asked = _history_query(query_string)
        self.service.route(asked.get("model", DEFAULT_MODEL))  # 404 for a model it does not have, whatever answers
        store = self.store()
        try:
            window = window_of(store, asked.get("start"), asked.get("end"), HISTORY_DAYS)
            found = store.read(window.first_day, window.last_day) if window is not None else None
        except StoreUnavailable as exc:
            raise Unavailable(exc.message, Reason.UNAVAILABLE) from exc
        if window is None or found is None:  # nothing stored yet
            return self.training_weeks(asked)
        keep = np.ones(len(found), dtype=bool)
        for name, column in (("store", found.stores), ("item", found.items)):
            if name in asked:
                keep &= column == asked[name]
        dates = found.days[keep].astype("datetime64[D]").astype(str).tolist()  # days since 1970-01-01
        rows = zip(dates, found.stores[keep].tolist(), found.items[keep].tolist(), found.sales[keep].tolist(),
                   strict=True)  # fmt: skip
        return {"start": window.date(window.first_day), "end": window.date(window.last_day), "source": "actuals",
                "actuals": [{"date": d, "store": s, "item": i, "sales": n} for d, s, i, n in rows]}  # fmt: skip

    def training_weeks(self, asked: dict[str, Any]) -> dict[str, Any]:
        """``GET /actuals`` with nothing stored: the last weeks of the model's production version's training data
        (``forecast.train.recent_sales``), of the series asked; none for a version trained without them."""
        model = asked.get("model", DEFAULT_MODEL)
        served = self.service.model(model, self.service.route(model).production)  # 404 for a model it does not have
        recent = served.recent
        if recent is None:
            return {"start": None, "end": None, "source": "actuals", "actuals": []}
        first = dt.date.fromisoformat(recent["first_date"])
        rows = [{"date": str(first + dt.timedelta(days=offset)), "store": store, "item": item, "sales": sold}
                for store, item, sales in recent["series"]
                if asked.get("store", store) == store and asked.get("item", item) == item
                for offset, sold in enumerate(sales) if sold is not None]  # fmt: skip
        return {"start": recent["first_date"], "end": recent["last_date"],
                "source": f"training data of {model} {served.version}", "actuals": rows}  # fmt: skip


def _history_query(query_string: str) -> dict[str, Any]:
    """``model``, ``start``, ``end`` (dates), ``store`` and ``item`` (whole numbers) of ``GET /actuals``, those
    given."""
    asked: dict[str, Any] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name not in QUERY_FIELDS:
            raise InvalidInput(f"unknown query parameter {name!r} (known: {', '.join(QUERY_FIELDS)})", field=name)
        if name == "model":
            asked[name] = value
        elif name in ("start", "end"):
            asked[name] = read_date(name, value)
        elif re.fullmatch("[0-9]{1,10}", value) and int(value) <= MAX_ID:
            asked[name] = int(value)
        else:
            raise InvalidInput(f"{name}: a whole number from 0 to {MAX_ID} (got {value!r})", field=name)
    return asked


def _json(body: bytes) -> Any:
    try:
        return from_json(body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
