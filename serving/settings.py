"""Every setting of the service, read once from ``FORECAST_*`` environment variables.

Build one :class:`Settings` in each entry point (the app factory, the mule,
the CLI, the launcher) and pass it down; nothing reads the environment at
import time.  Units are in the names (``_S``, ``_MS``, ``_BYTES``).  A bad
value stops the process at start with the variable's name.

uWSGI reads its sizes (processes, threads, queue, caches) from the same
variables through ``$(FORECAST_...)`` in ``uwsgi.ini``; the launcher and the
image's ``prestart.sh`` export them first with ``python -m serving.settings``
(which also checks that ``uwsgi.ini`` starts ``FORECAST_MULES`` mules, and that the
request deadline is below harakiri and nginx's read timeout), so the defaults below are
the only defaults.  The table in docs/operating.md lists every variable; a test keeps it
in step with this class.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from forecast.config import ModelSettings
from serving.nginx_conf import upstream_read_timeout_s

# The variables uwsgi.ini reads; exported by `python -m serving.settings`.
UWSGI_FIELDS = (
    "uwsgi_processes",
    "uwsgi_threads",
    "queue_slots",
    "queue_slot_bytes",
    "result_cache_items",
    "result_block_bytes",
    "worker_harakiri_s",
)


class Settings(ModelSettings):
    """Typed settings with their defaults (measured on 2 cores; see README).

    The model's own settings (registry, training data, rounds) come first, from
    :class:`forecast.config.ModelSettings`; the same prefix, read in the same pass.
    """

    # -- uWSGI sizes (read by uwsgi.ini) ---------------------------------------
    uwsgi_processes: int = Field(2, ge=1, description="uWSGI web worker processes.")
    uwsgi_threads: int = Field(16, ge=1, description="Threads per web worker; each waits on one request.")
    mules: int = Field(
        2, ge=1, description="Mule processes; must equal the ids on uwsgi.ini's `for =` line (checked at start)."
    )
    queue_slots: int = Field(128, ge=2, description="uWSGI queue slots; jobs in flight are kept below this.")
    queue_slot_bytes: int = Field(65536, ge=4096, description="Bytes per queue slot; sets the rows per job.")
    result_cache_items: int = Field(256, ge=8, description="Result cache entries (must exceed queue slots).")
    result_block_bytes: int = Field(65536, ge=4096, description="Bytes per result cache entry.")
    worker_harakiri_s: int = Field(60, ge=1, description="uWSGI kills a web worker stuck this long in a request.")
    listen_backlog: int = Field(
        512, ge=16, description="Requests that may wait for a free worker thread; beyond, nginx answers 503."
    )

    # -- request handling --------------------------------------------------------
    deadline_ms: int = Field(5000, ge=10, description="Time a request may wait for its predictions; then 504.")
    max_batch_rows: int = Field(
        500_000, ge=1, description="Most rows in one /predict request (a year of every series fits); more is 413."
    )
    max_horizon_days: int = Field(731, ge=0, description="How far past the training data a date may be.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503 answers.")
    mule_check_interval_ms: int = Field(
        100, ge=5, description="How often a waiting worker checks that the mule holding its job is alive."
    )
    fast_lane_enabled: bool = Field(
        True, description="Answer POST /predict without Flask's request machinery; `false` only to measure it."
    )
    legacy_answers: bool = Field(
        False,
        description="Answer GET /, /status and /reload with the Ray Serve service's exact bodies (JSON strings).",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token required by /reload; unset: /reload only from loopback."
    )

    # -- mules -------------------------------------------------------------------
    mule_batch_rows: int = Field(4096, ge=1, description="Most rows a mule scores in one LightGBM call.")
    mule_model_budget_mb: int = Field(
        256, ge=1, description="Memory for model versions per mule (estimated from their text's size); beyond, LRU."
    )
    mule_heartbeat_s: int = Field(1, ge=1, description="Seconds between mule heartbeats when idle.")
    mule_stale_after_s: int = Field(10, ge=2, description="/status is 503 when a mule's heartbeat is older.")
    mule_harakiri_s: int = Field(30, ge=1, description="A predict call running longer kills and respawns the mule.")
    reload_timeout_s: int = Field(120, ge=1, description="Time one mule may take to load a model on /reload.")
    registry_poll_s: int = Field(
        10, ge=0, description="How often a pod looks for alias changes in the registry and rolls them out; 0: never."
    )
    rollout_max_pods: int = Field(
        1, ge=1, description="Pods sharing a registry that may roll a version through their mules at the same time."
    )
    rollout_lease_dir: Path | None = Field(
        None,
        description="Where pods take rollout leases, writable and shared by every pod (unset: `.rollouts` in the "
        "registry). Not writable: pods roll out unstaggered, with a warning.",
    )

    # -- operating it ------------------------------------------------------------
    log_level: str = Field("INFO", description="Python log level of workers and mules.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object per log line (nginx access log, workers, mules); uWSGI's lines stay text.",
    )
    metrics_enabled: bool = Field(
        True, description="Record Prometheus metrics (GET /metrics); `false` only to measure their cost."
    )
    accuracy_refresh_s: int = Field(
        60,
        ge=0,
        description="How often one web worker brings the realised-accuracy gauges up to date (the last 7 and 28 "
        "days of actuals, every served version; scored again only when actuals arrived); 0: never.",
    )
    accuracy_alert_factor: float = Field(
        1.25,
        gt=1,
        description="ForecastAccuracyDegraded fires when production's 28-day realised SMAPE exceeds its holdout "
        "SMAPE times this (a gauge the alert reads).",
    )
    metrics_dir: Path = Field(
        Path("/tmp/forecast-metrics"),
        description="prometheus_client multiprocess directory, emptied at start (the launcher uses its run dir).",
    )

    @model_validator(mode="after")
    def _cache_holds_every_job(self) -> Settings:
        if self.result_cache_items <= self.queue_slots:
            raise ValueError("FORECAST_RESULT_CACHE_ITEMS must be larger than FORECAST_QUEUE_SLOTS")
        if self.jobs_in_flight_per_worker < 1:
            raise ValueError("FORECAST_QUEUE_SLOTS must exceed FORECAST_UWSGI_PROCESSES")
        return self

    @property
    def lease_dir(self) -> Path:
        """The rollout lease directory: ``FORECAST_ROLLOUT_LEASE_DIR``, else ``.rollouts`` in the registry."""
        return self.rollout_lease_dir or self.registry_dir / ".rollouts"

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    @property
    def jobs_in_flight_per_worker(self) -> int:
        """Each web worker process's share of the queue; one slot always stays free."""
        return (self.queue_slots - 1) // self.uwsgi_processes

    def uwsgi_environment(self) -> dict[str, str]:
        """The environment uWSGI is started with: the ``FORECAST_*`` variables uwsgi.ini expands,
        ``UWSGI_LISTEN`` and ``PROMETHEUS_MULTIPROC_DIR``.

        uWSGI does not expand ``$(...)`` in ``listen``, but reads ``UWSGI_LISTEN``
        from the environment like any option, so the backlog goes that way.
        """
        variables = {f"FORECAST_{name.upper()}": str(getattr(self, name)) for name in UWSGI_FIELDS}
        return {
            **variables,
            "UWSGI_LISTEN": str(self.listen_backlog),
            # read by prometheus_client when it is imported (in the uWSGI master, before the fork)
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }


def mules_in_ini(text: str) -> int:
    """How many mules a uwsgi.ini starts: its ``mule =`` lines, each inside a ``for =`` block counted per id."""
    count, ids = 0, 0
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition("="))
        if key == "for":
            ids = len(value.split())
        elif key == "endfor":
            ids = 0
        elif key == "mule":
            count += ids or 1
    return count


def check_uwsgi_ini(settings: Settings, ini: Path) -> None:
    """Raise ``ValueError`` unless ``ini`` starts ``FORECAST_MULES`` mules.

    uWSGI cannot take the mule count from a variable (a ``for`` loop needs literal ids), and a
    worker sends to mule ids uWSGI does not range-check: a mismatch must stop the start.
    """
    found = mules_in_ini(ini.read_text())
    if found != settings.mules:
        raise ValueError(
            f"{ini} starts {found} mules but FORECAST_MULES is {settings.mules}: "
            f"make its `for =` line list the ids 1 to {settings.mules}, or set FORECAST_MULES={found}"
        )


def check_deadline(settings: Settings, nginx_conf: Path) -> None:
    """Raise ``ValueError`` unless the request deadline is below the worker's harakiri and nginx's read timeout.

    A worker waits for a request's predictions until ``FORECAST_DEADLINE_MS``, then answers 504.
    uWSGI kills a worker that has been in one request ``FORECAST_WORKER_HARAKIRI_S`` (every
    request its threads hold dies with it), and nginx answers its own 504 when uWSGI has not
    answered within its ``uwsgi_read_timeout``: either would take the place of the app's answer.
    """
    read_timeout_s = upstream_read_timeout_s(nginx_conf.read_text())
    deadline_s, harakiri_s = settings.deadline_s, settings.worker_harakiri_s
    if deadline_s < harakiri_s and deadline_s < read_timeout_s:
        return
    raise ValueError(
        f"FORECAST_DEADLINE_MS={settings.deadline_ms} ({deadline_s:g} s) must be below both "
        f"FORECAST_WORKER_HARAKIRI_S={harakiri_s} (uWSGI kills a worker that long in a request) and nginx's "
        f"uwsgi_read_timeout ({read_timeout_s:g} s, in {nginx_conf}), or a request at its deadline is killed or "
        "cut off instead of answered 504: lower FORECAST_DEADLINE_MS, or raise the other"
    )


def main(argv: list[str] | None = None) -> int:
    """Print ``export NAME=value`` lines of :meth:`Settings.uwsgi_environment` (``eval`` them in a shell).

    ``--ini PATH`` first checks that the uwsgi.ini starts as many mules as the settings say,
    ``--nginx-conf PATH`` that the deadline is below harakiri and nginx's read timeout
    (:func:`check_deadline`); a mismatch prints the reason and exits 1.
    """
    parser = argparse.ArgumentParser(prog="python -m serving.settings", description=main.__doc__)
    parser.add_argument("--ini", type=Path, help="the uwsgi.ini to check against the settings")
    parser.add_argument("--nginx-conf", type=Path, help="the nginx.conf (template) to check the deadline against")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        if args.ini is not None:
            check_uwsgi_ini(settings, args.ini)
        if args.nginx_conf is not None:
            check_deadline(settings, args.nginx_conf)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, value in settings.uwsgi_environment().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
