"""uWSGI entry point (``module = app.main``, ``callable = app``); runs only inside uWSGI."""

from __future__ import annotations

import uwsgi

from app import create_app
from app.mule_client import MuleClient
from forecast.settings import Settings

settings = Settings()
client = MuleClient(settings, uwsgi)
app = create_app(settings, client)
