"""``POST /actuals``: actual sales in (CSV or JSON), stored in the actuals store; no Flask.

The rows are read and checked whole before anything is stored (:mod:`forecast.actuals_input`: a bad
line refuses the request with 422 naming it, and nothing is stored), against the stores and items
the served models know, then loaded in one transaction (:class:`forecast.actuals.ActualsStore`).
The store is opened on first use: a worker starts even when PostgreSQL does not answer yet.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic_core import from_json

from app.domain import span
from app.errors import InvalidInput, MalformedJson, Reason, Unavailable, UnsupportedMediaType
from app.service import ForecastService
from forecast.actuals import ActualsStore, Loaded, StoreUnavailable
from forecast.actuals_input import BadActuals
from forecast.actuals_input import from_csv as actuals_from_csv
from forecast.actuals_input import from_json as actuals_from_json


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


def _json(body: bytes) -> Any:
    try:
        return from_json(body)
    except ValueError as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
