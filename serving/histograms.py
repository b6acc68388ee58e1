"""Bulk histogram updates for prometheus_client, shared by the mules and the web workers.

No uWSGI, no Flask: :mod:`mules.metrics` records a batch's predicted sales with it,
:mod:`app.telemetry` a flush's request latencies.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Histogram

SMALL_BATCH = 4


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v``, in one pass (a 45,000-row batch is one call).

    Uses the histogram's bucket and sum values as ``observe`` does (prometheus_client
    0.26, pinned; a unit test compares the two); NaN goes to the sum only, as there.
    A few values take ``observe`` itself: numpy's fixed cost (~14 us) is worth ~5 of them.
    """
    if len(values) <= SMALL_BATCH:
        for value in values.tolist():
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds)  # non-cumulative buckets, the last is +Inf
    index = np.searchsorted(bounds, values, side="left")  # first bound >= value: observe()'s bucket
    counts = np.bincount(index[index < len(bounds)], minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(np.sum(values)))
