"""The Flask app that runs in uWSGI web workers.

It validates requests and hands rows to the mules through the uWSGI queue;
it never imports LightGBM or pandas (a test checks this), so the uWSGI
master that loads it stays free of OpenMP before it forks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from app import errors, openapi, telemetry, views
from app.accuracy import AccuracyUseCase
from app.actuals import ActualsUseCase
from app.exposition import check_multiprocess_dir
from app.fastlane import FastLane
from app.forecasting import ForecastUseCase
from app.json import OrjsonProvider
from app.mule_client import MuleClient
from app.pool import MulePool
from app.predict import PredictUseCase
from app.service import ForecastService
from app.services import Services, install
from forecast.registry import Registry
from serving.logs import configure_logging
from serving.settings import Settings

DOCS_URL = "/docs"


class ForecastFlask(Flask):
    """Flask, minus a per-request check this app never needs.

    Flask asks ``inspect`` whether each view and hook is a coroutine on every
    request (``ensure_sync``, documented as the method to override); this app
    has no async views, and the check costs a few microseconds per request.
    """

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


def create_app(settings: Settings, client: MuleClient, pool: MulePool) -> Flask:
    """Build the app around a settings object, a mule client and a view of the mule pool.

    Raises ``RuntimeError`` when metrics are on and prometheus_client would not
    share one directory between the processes.
    """
    configure_logging(settings.log_level, "worker", settings.log_format, telemetry.log_context)
    if settings.metrics_enabled:
        check_multiprocess_dir(settings)
    app = ForecastFlask(__name__)
    app.json = OrjsonProvider(app)
    service = ForecastService(settings, client, pool, Registry(settings.registry_dir))
    use_case = PredictUseCase(service)
    recorder = telemetry.RequestMetrics(lambda: client.admission.in_flight) if settings.metrics_enabled else None
    actuals = ActualsUseCase(service)
    install(app, Services(service, use_case, ForecastUseCase(service), actuals, AccuracyUseCase(service, actuals),
                          pool, recorder))  # fmt: skip
    errors.init_app(app, settings.retry_after_s)
    telemetry.init_app(app, recorder)
    add_routes(app)
    if settings.fast_lane_enabled:
        app.wsgi_app = FastLane(app.wsgi_app, use_case, recorder)  # type: ignore[method-assign]
    return app


def add_routes(app: Flask) -> None:
    """Every route the app serves, onto ``app``: the endpoints (``views.ENDPOINTS``) and Swagger UI's.

    The one list of them: the trailing-slash redirects (``views.without_trailing_slash``) and the
    tests that try every route read it from the app's URL map.
    """
    app.register_blueprint(views.bp)
    # Swagger UI from the flask-swagger-ui package's own files: no CDN, and no validator call-out.
    docs_config = {"app_name": openapi.TITLE, "validatorUrl": None, "deepLinking": True}
    app.register_blueprint(get_swaggerui_blueprint(DOCS_URL, "/openapi.json", config=docs_config))
