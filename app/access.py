"""What an answer tells the access line and the request metrics, beyond its status.

The access line is written by nginx (``nginx.conf``); the app hands it what only the app
knows in response headers nginx logs and hides from clients (``X-Forecast-Rows``,
``X-Forecast-Error``, ``X-Forecast-Job``), plus ``X-Model-Version``, which clients see.
No Flask here: the ``/predict`` use case, the Flask hooks and the fast lane share it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Report:
    """The fields of one answer's access line (each None when it does not apply)."""

    model: str | None = None  # the model asked for (a /predict request)
    rows: int | None = None  # rows the request asked for
    model_version: str | None = None  # the version that scored them ("v1,v2" if several)
    error: str | None = None  # the error code of the answer
    job: str | None = None  # the job whose failure the answer reports (also on the mule's log line)
    loaded: bool | None = None  # True: the request waited for a mule to load its model version
    series: int | None = None  # a forecast's series
    days: int | None = None  # a forecast's days
    granularity: str | None = None  # a forecast's (the metrics count forecasts by it; not on the access line)

    def headers(self) -> list[tuple[str, str]]:
        """The response headers that carry this report to nginx's access line."""
        fields = (
            ("X-Model-Version", self.model_version),
            ("X-Forecast-Rows", self.rows),
            ("X-Forecast-Error", self.error),
            ("X-Forecast-Job", self.job),
            ("X-Forecast-Model", self.model),
            ("X-Forecast-Load", "1" if self.loaded else None),
            ("X-Forecast-Series", self.series),
            ("X-Forecast-Days", self.days),
        )
        return [(header, str(value)) for header, value in fields if value is not None]
