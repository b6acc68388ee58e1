"""Which version scores which row: the canary's share of series, and the shadow's sample.

A model's ``canary`` takes ``weight`` percent of its series: a row goes to the canary when
a stable hash of (model, store, item) falls in the first ``weight`` of 100 buckets, so a
series always gets the same version while the weight holds (and the share of rows is about
the weight).  The ``shadow`` scores a ``weight`` percent sample of the rows production
answered, after the answer: a hash of (model, store, item, day) picks them.  Pure logic:
the service (:mod:`app.service`) applies it, the mule client sends what it makes.
"""

from __future__ import annotations

import time
import zlib
from functools import lru_cache

import numpy as np

from app.domain import Columns
from app.mule_client import Part, Prediction
from serving.messages import ModelRoute, ShadowJob, encode_predictions, encode_rows

SHADOW_TTL_S = 30  # a shadow job not scored within this is dropped (counted): the pool was busy


@lru_cache(maxsize=65_536)
def bucket(model: str, store: int, item: int) -> int:
    """The series' bucket, 0-99: the same for every request, every worker and every pod."""
    return zlib.crc32(f"{model}/{store}/{item}".encode()) % 100


def parts(model: str, route: ModelRoute, columns: Columns) -> list[Part]:
    """The request's rows split between production and the canary (one part when only one version scores)."""
    weight = route.canary_weight if route.canary else 0
    if weight <= 0:
        return [Part(route.production, columns)]
    canary = [bucket(model, s, i) < weight for s, i in zip(columns.stores, columns.items, strict=True)]
    if all(canary):
        return [Part(str(route.canary), columns)]
    if not any(canary):
        return [Part(route.production, columns)]
    return [_part(route.production, columns, [n for n, c in enumerate(canary) if not c]),
            _part(str(route.canary), columns, [n for n, c in enumerate(canary) if c])]  # fmt: skip


def _part(version: str, columns: Columns, positions: list[int]) -> Part:
    picked = Columns([columns.days[n] for n in positions], [columns.stores[n] for n in positions],
                     [columns.items[n] for n in positions])  # fmt: skip
    return Part(version, picked, positions)


def shadow_job(model: str, route: ModelRoute, columns: Columns, prediction: Prediction) -> ShadowJob | None:
    """The sample of rows production scored that the shadow scores too, or None (no shadow, empty sample)."""
    if not route.shadow or route.shadow_weight <= 0:
        return None
    picked = [
        n for n, (day, store, item) in enumerate(zip(columns.days, columns.stores, columns.items, strict=True))
        if prediction.versions[n] == route.production
        and zlib.crc32(f"{model}/{store}/{item}/{day}".encode()) % 100 < route.shadow_weight
    ]  # fmt: skip
    if not picked:
        return None
    rows = encode_rows([columns.days[n] for n in picked], [columns.stores[n] for n in picked],
                       [columns.items[n] for n in picked])  # fmt: skip
    sales = encode_predictions(np.array([prediction.sales[n] for n in picked]))
    return ShadowJob(time.time() + SHADOW_TTL_S, model, route.shadow, route.production, rows, sales)
