"""Prometheus series both processes count into (multiprocess mode sums their files).

``SHADOW_DROPPED``: a worker counts the shadow jobs a busy pool refused at once
(``app/mule_client.py``), a mule those that expired or failed (``mules/metrics.py``).
"""

from __future__ import annotations

from prometheus_client import Counter

SHADOW_DROPPED = Counter(
    "forecast_shadow_dropped",
    "Shadow jobs not scored: the pool was busy (backlog, expired) or the version failed.",
    ["model", "reason"],
    registry=None,
)
