"""``GET /metrics``: one Prometheus view of every web worker and mule of this uWSGI instance.

Every process records into ``prometheus_client``'s multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, from ``FORECAST_METRICS_DIR``; the launcher and
the image's ``prestart.sh`` empty it before uWSGI starts).  A scrape, answered
by whichever worker nginx picks, merges the files of every process, alive or
dead, so counters never go backwards when a process is respawned; live gauges
of dead processes are dropped at each scrape.  What is state rather than a
count (each mule's model version and heartbeat, the queue depth) is read at
scrape time from uWSGI's cache and queue.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.pool import MulePool
from serving.messages import SyncState
from serving.processes import process_alive
from serving.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


class ServingStateCollector(Collector):
    """Scrape-time gauges: each mule's state and model version, the queue's depth and size."""

    def __init__(self, pool: MulePool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "forecast_mule_up", "1 when the mule has a model and a fresh heartbeat.", labels=["mule"]
        )
        info = GaugeMetricFamily(
            "forecast_mule_info", "The mule's pid, state and the model version it serves (value 1).",
            labels=["mule", "pid", "state", "model_version"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "forecast_mule_heartbeat_age_seconds", "Seconds since the mule's last heartbeat.", labels=["mule"]
        )
        view = self.pool.view()
        for state in view.mule_states():
            mule_id = str(state["id"])
            beat = view.beats[state["id"]]
            up.add_metric([mule_id], float(beat is not None and beat.serving(view.now, view.stale_after_s)))
            version = str(state.get("model_version") or "")
            info.add_metric([mule_id, str(state.get("pid", "")), state["state"], version], 1.0)
            if beat is not None:
                age.add_metric([mule_id], beat.age_s(view.now))
        yield from (up, info, age)
        yield GaugeMetricFamily("forecast_queue_depth", "Jobs waiting in the uWSGI queue.", self.pool.queue_depth())
        yield from _mlflow_sync(self.pool.sync_state(), view.now)
        yield GaugeMetricFamily(
            "forecast_jobs_in_flight_limit",
            "Most jobs the web workers admit at once (their shares of the queue); beyond, 503.",
            self.settings.jobs_in_flight_per_worker * self.settings.uwsgi_processes,
        )


def _mlflow_sync(state: SyncState | None, now: float) -> Iterator[GaugeMetricFamily]:
    """The pod's following of MLflow, when it follows it: the age of its last good pass, the failed ones since."""
    if state is None:
        return
    age = math.inf if state.last_success is None else now - state.last_success
    yield GaugeMetricFamily(
        "forecast_mlflow_sync_age_seconds",
        "Seconds since the pod last reached MLflow and brought its aliases over (+Inf: never).",
        age,
    )
    yield GaugeMetricFamily(
        "forecast_mlflow_sync_failing_passes", "Passes since then that could not reach MLflow.", state.failures
    )
    yield GaugeMetricFamily(
        "forecast_mlflow_refused_versions", "Versions MLflow's aliases name that the pod refused.", len(state.refused)
    )


def forget_dead_processes(directory: Path) -> None:
    """Drop live-gauge files of processes that are gone (a killed worker's jobs in flight)."""
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not process_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


class ProcessFilesCollector(Collector):
    """prometheus_client's multiprocess merge over the directory's files, leaving out empty ones.

    A process creates its file empty and sizes it a moment later; a scrape that read it in between
    failed with ``struct.error`` (a 500 from ``/metrics``).  An empty file holds no sample yet.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = [str(path) for path in sorted(self.directory.glob("*.db")) if _size(path) > 0]
        merged: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a dead process's live gauges, dropped by another scrape
        return 0


def render(pool: MulePool, settings: Settings) -> bytes:
    """The Prometheus text exposition of every process of this uWSGI instance."""
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", settings.metrics_dir))
    forget_dead_processes(directory)
    registry = CollectorRegistry()
    registry.register(ProcessFilesCollector(directory))
    registry.register(ServingStateCollector(pool, settings))
    return generate_latest(registry)


def check_multiprocess_dir(settings: Settings) -> None:
    """Raise ``RuntimeError`` unless prometheus_client writes where the settings say.

    prometheus_client picks its storage when first imported, from the environment;
    a missing variable would silently give each process its own counters.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured != str(settings.metrics_dir) or not settings.metrics_dir.is_dir():
        raise RuntimeError(
            f"PROMETHEUS_MULTIPROC_DIR is {configured!r}, settings say {str(settings.metrics_dir)!r} (must exist): "
            "start uWSGI with the environment of `python -m serving.settings`"
        )
