"""The Flask app that runs in uWSGI web workers.

It validates requests and hands rows to the mules through the uWSGI queue;
it never imports LightGBM or pandas (a test checks this), so the uWSGI
master that loads it stays free of OpenMP before it forks.
"""

from __future__ import annotations

from flask import Flask

from app import errors, views
from app.json import OrjsonProvider
from app.mule_client import MuleClient
from app.service import ForecastService
from forecast.logs import configure_logging
from forecast.registry import Registry
from forecast.settings import Settings


def create_app(settings: Settings, client: MuleClient) -> Flask:
    """Build the app around a settings object and a mule client."""
    configure_logging(settings.log_level, "worker")
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.extensions["forecast"] = ForecastService(settings, client, Registry(settings.registry_dir))
    errors.init_app(app)
    app.register_blueprint(views.bp)
    return app
