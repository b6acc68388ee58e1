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

from app.prediction import Part, Prediction
from serving.columns import Columns
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
    canary = _buckets(model, columns) < weight
    if canary.all():
        return [Part(str(route.canary), columns)]
    if not canary.any():
        return [Part(route.production, columns)]
    return [_part(route.production, columns, np.flatnonzero(~canary)),
            _part(str(route.canary), columns, np.flatnonzero(canary))]  # fmt: skip


def _buckets(model: str, columns: Columns) -> np.ndarray:
    """Each row's series bucket: :func:`bucket` once per distinct (store, item), whatever the rows."""
    pairs, rows_pair = np.unique(np.stack([columns.stores, columns.items]), axis=1, return_inverse=True)
    per_pair = np.array([bucket(model, int(s), int(i)) for s, i in pairs.T.tolist()], dtype=np.int64)
    return per_pair[rows_pair.reshape(-1)]


def _part(version: str, columns: Columns, positions: np.ndarray) -> Part:
    return Part(version, columns.take(positions), positions)


def shadow_job(model: str, route: ModelRoute, columns: Columns, prediction: Prediction) -> ShadowJob | None:
    """The sample of rows production scored that the shadow scores too, or None (no shadow, empty sample)."""
    if not route.shadow or route.shadow_weight <= 0:
        return None
    versions = prediction.versions
    picked = np.array([
        n for n, (day, store, item) in enumerate(zip(columns.days.tolist(), columns.stores.tolist(),
                                                     columns.items.tolist(), strict=True))
        if versions[n] == route.production
        and zlib.crc32(f"{model}/{store}/{item}/{day}".encode()) % 100 < route.shadow_weight
    ], dtype=np.int64)  # fmt: skip
    if not len(picked):
        return None
    sample = columns.take(picked)
    rows = encode_rows(sample.days, sample.stores, sample.items)
    sales = encode_predictions(prediction.sales[picked])
    return ShadowJob(time.time() + SHADOW_TTL_S, model, route.shadow, route.production, rows, sales)
