"""The realised-accuracy gauges Prometheus alerts on: production's, canary's and shadow's last 7 and 28 days.

One web worker (worker 1, like the registry follower) computes them at start and every
``FORECAST_ACCURACY_REFRESH_S`` through :class:`app.accuracy.AccuracyUseCase`, for the windows
ending on the last day with actuals; the use case keeps each entry until new actuals arrive,
so a refresh that finds nothing new scores nothing.  A window without actuals, or a version no
longer served, reads NaN (an alert compares false on it) rather than keeping an old value.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from typing import Any

from prometheus_client import Gauge

from app import metrics
from app.accuracy import SERVED_ALIASES, AccuracyQuery, AccuracyUseCase
from app.errors import ApiError
from forecast.errors import ForecastError
from serving.columns import EPOCH

logger = logging.getLogger(__name__)

WINDOWS = {"7d": 7, "28d": 28}  # the window label and its days

Labelled = tuple[Gauge, tuple[str, ...]]


class AccuracyGauges:
    """Sets the ``forecast_realised_*`` gauges of every served version; one per process (its worker 1 runs it)."""

    def __init__(self, use_case: AccuracyUseCase) -> None:
        self.use_case = use_case
        self.settings = use_case.service.settings
        self._set: set[Labelled] = set()

    def refresh(self) -> None:
        """Compute every served version's windows and set their gauges; what was set before and is not now reads
        NaN.  When the store cannot be reached, or a model's accuracy cannot be computed now (its mules busy),
        that is logged and the gauges kept until the next refresh."""
        metrics.ACCURACY_ALERT_FACTOR.set(self.settings.accuracy_alert_factor)
        try:
            last = self.use_case.actuals.store().last_day()
        except (ApiError, ForecastError) as exc:  # the store cannot be reached: the gauges wait for it
            logger.warning("realised accuracy not computed: %s", getattr(exc, "message", exc))
            return
        now: set[Labelled] = set()
        for model in self.use_case.service.routes().models:
            try:
                now |= self._model(model, last)
            except (ApiError, ForecastError) as exc:
                logger.warning("realised accuracy of %s not computed: %s", model, getattr(exc, "message", exc))
                now |= {labelled for labelled in self._set if labelled[1][0] == model}
        for gauge, labels in self._set - now:
            gauge.labels(*labels).set(math.nan)
        self._set = now
        metrics.ACCURACY_REFRESHED.set(time.time())

    def _model(self, model: str, last: int | None) -> set[Labelled]:
        found: set[Labelled] = set()
        for window, days in WINDOWS.items():
            start, end = (None, None) if last is None else (_date(last - days + 1), _date(last))
            report = self.use_case.report(AccuracyQuery(model, start, end))
            for entry in report["versions"]:
                alias = next((name for name in SERVED_ALIASES if name in entry["aliases"]), "")
                if alias:
                    found |= _set_entry(model, entry, alias, window, last is not None)
        for version in {labels[1] for _, labels in found}:
            recorded = self.use_case.service.registry.named(model).metadata(version).get("metrics", {})
            smape = recorded.get("holdout", {}).get("model", {}).get("smape", math.nan)
            metrics.HOLDOUT_SMAPE.labels(model, version).set(smape)
            found.add((metrics.HOLDOUT_SMAPE, (model, version)))
        return found

    def start(self) -> None:
        """Refresh now and every ``FORECAST_ACCURACY_REFRESH_S`` in a daemon thread (app/main.py: worker 1)."""
        threading.Thread(target=self._refresh_forever, name="accuracy-gauges", daemon=True).start()

    def _refresh_forever(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # a bug here must not stop the gauges for good, nor the worker
                logger.exception("refreshing the realised-accuracy gauges failed")
            time.sleep(self.settings.accuracy_refresh_s)


def _set_entry(model: str, entry: dict[str, Any], alias: str, window: str, has_actuals: bool) -> set[Labelled]:
    labels = (model, entry["version"], alias, window)
    values = {
        metrics.REALISED_SMAPE: entry["smape"],
        metrics.REALISED_MAE: entry["mae"],
        metrics.REALISED_BIAS: entry["bias"],
        metrics.REALISED_ROWS: entry["rows"] if has_actuals else None,
        metrics.BASELINE_SMAPE: entry["baseline"]["smape"],
    }
    found: set[Labelled] = set()
    for gauge, value in values.items():
        gauge.labels(*labels).set(math.nan if value is None else value)
        found.add((gauge, labels))
    for level, share in (entry.get("coverage") or {"80": None, "95": None}).items():
        level_labels = (*labels, level)
        metrics.REALISED_COVERAGE.labels(*level_labels).set(math.nan if share is None or not entry["rows"] else share)
        found.add((metrics.REALISED_COVERAGE, level_labels))
    return found


def _date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=day)
