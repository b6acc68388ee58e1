"""uWSGI entry point (``module = app.main``, ``callable = app``); runs only inside uWSGI."""

from __future__ import annotations

import uwsgi
from uwsgidecorators import postfork

from app import create_app
from app.accuracy_gauges import AccuracyGauges
from app.mule_client import MuleClient
from app.pool import MulePool
from app.services import services_of
from serving.processes import keep_inherited_objects_shared, one_malloc_arena
from serving.settings import Settings

one_malloc_arena()  # before uWSGI forks the workers (and their threads): see serving/processes.py
settings = Settings()
app = create_app(settings, MuleClient(settings, uwsgi), MulePool(settings, uwsgi))
keep_inherited_objects_shared()  # last: uWSGI forks the workers and mules once this module is imported


@postfork  # type: ignore[untyped-decorator]  # uwsgidecorators has no type hints
def _start_worker_threads() -> None:
    """In each web worker uWSGI forks (or respawns): the metrics flusher, and in worker 1 the registry
    follower (app/rollout.py) and the realised-accuracy gauges (app/accuracy_gauges.py); threads do not
    survive a fork."""
    worker = uwsgi.worker_id()  # 0 in a mule: mules fork from this master too, and run this hook
    found = services_of(app)
    if found.metrics is not None and worker > 0:
        found.metrics.start()
    if worker == 1 and settings.registry_poll_s > 0:
        found.forecast.rollout.start()
    if worker == 1 and found.metrics is not None and settings.accuracy_refresh_s > 0:
        AccuracyGauges(found.accuracy).start()
