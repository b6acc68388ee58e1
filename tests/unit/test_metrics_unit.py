"""observe_many (the bulk histogram update of the mules and the workers) equals one observe() per value."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from mules.metrics import SALES_BUCKETS
from serving.histograms import observe_many


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}  # fmt: skip


@pytest.mark.parametrize("size", [1, 3, 5_000])  # the observe() path for a few values, numpy beyond
def test_bulk_observe_matches_one_observe_per_value(size: int) -> None:
    values = np.concatenate([
        np.random.default_rng(0).gamma(2.0, 25.0, 5_000),
        np.asarray(SALES_BUCKETS),  # values exactly on a bound go to that bound's bucket
        [0.0, 299.999, 300.0, 300.001, 1e9, np.nan],
    ])[-size:]  # fmt: skip
    one_by_one = Histogram("one", "h", buckets=SALES_BUCKETS, registry=CollectorRegistry())
    for value in values:
        one_by_one.observe(float(value))
    bulk = Histogram("bulk", "h", buckets=SALES_BUCKETS, registry=CollectorRegistry())
    observe_many(bulk, values)
    expected = {(name.replace("one", "bulk"), le): v for (name, le), v in samples(one_by_one).items()}
    got = samples(bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value or (np.isnan(got[key]) and np.isnan(value)), key
    assert got[("bulk_count", "")] == len(values) - 1  # NaN is in no bucket (the sum is NaN, as with observe)
