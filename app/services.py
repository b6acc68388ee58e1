"""The app's per-process objects, built once by :func:`app.create_app`, reached by the views through one typed call.

Flask keeps an app's extensions in ``app.extensions``, a ``dict[str, Any]``: a view that looked up
``extensions["predict"]`` called the use case unchecked.  One :class:`Services` holds them all
under one key, and :func:`services` gives it typed, so mypy checks every call a view makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from app.accuracy import AccuracyUseCase
from app.actuals import ActualsUseCase
from app.forecasting import ForecastUseCase
from app.pool import MulePool
from app.predict import PredictUseCase
from app.service import ForecastService
from app.telemetry import RequestMetrics
from serving.settings import Settings

EXTENSION = "forecast"  # the key in app.extensions


@dataclass(frozen=True, slots=True)
class Services:
    """What the views, the hooks and the uWSGI entry use; immutable once the app is built."""

    forecast: ForecastService  # routes, status, reload, models
    predict: PredictUseCase  # POST /predict (the fast lane holds the same one)
    horizon: ForecastUseCase  # /forecast
    actuals: ActualsUseCase  # POST /actuals
    accuracy: AccuracyUseCase  # GET /accuracy, and the realised-accuracy gauges
    pool: MulePool  # the mules' heartbeats, for /metrics
    metrics: RequestMetrics | None  # None with FORECAST_METRICS_ENABLED off

    @property
    def settings(self) -> Settings:
        return self.forecast.settings


def install(app: Flask, found: Services) -> None:
    """Make ``found`` the app's services (once, in create_app; tests may install stand-ins)."""
    app.extensions[EXTENSION] = found


def services_of(app: Flask) -> Services:
    """``app``'s services, outside a request (the uWSGI entry's post-fork hook)."""
    found: Services = app.extensions[EXTENSION]
    return found


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions[EXTENSION]
    return found
