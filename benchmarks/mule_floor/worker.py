"""The mule floor's web worker: every request becomes one single-row job handed to a mule by the product's own
:class:`app.mule_client.MuleClient`, and is answered a constant once the mule's result is back.

No Flask, no parsing or validation of the body (it is read, as any app must), no answer encoding, no
metrics: what is left is what this architecture costs a request (nginx, a uWSGI worker thread, the
queue, the wake-up, the notices and the result cache). Runs only inside uWSGI (``uwsgi.ini`` beside it).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from typing import Any

import uwsgi

from app.errors import DeadlineExceeded, Unavailable
from app.mule_client import MuleClient, Part
from app.rows import Columns
from benchmarks.mule_floor import BODY, VERSION
from forecast.registry import DEFAULT_MODEL
from serving.processes import keep_inherited_objects_shared, one_malloc_arena
from serving.settings import Settings

ROW = Columns.one(dt.date(2018, 1, 21), 10, 23)

one_malloc_arena()  # as app/main.py: the same process setup as the real workers
settings = Settings()
client = MuleClient(settings, uwsgi)
keep_inherited_objects_shared()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = environ.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length):
        environ["wsgi.input"].read(int(length))
    try:
        client.predict(DEFAULT_MODEL, [Part(VERSION, ROW)], time.time() + settings.deadline_s)
    except (Unavailable, DeadlineExceeded) as exc:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [str(exc).encode()]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
