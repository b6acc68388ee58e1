"""Contributions read as a planner's factors (our models) or terms (imported legacy ones), per row's version."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from app.domain import Domain
from app.explain import explanation
from app.legacy_answers import Guardrails
from app.prediction import Prediction
from app.service import ServedModel
from forecast.trend import Trend
from serving.columns import Columns

NAMES = ("store", "item")
DOMAIN = Domain(frozenset({1}), frozenset({1}), dt.date(2015, 1, 1), dt.date(2018, 1, 1))


def served(version: str, trend: Trend | None) -> ServedModel:
    return ServedModel("default", version, DOMAIN, Guardrails.of({"domain": {}}, DOMAIN), dt.date(2017, 12, 31),
                       None, NAMES, trend)  # fmt: skip


def test_our_models_factors_multiply_to_one_plus_sales_with_the_trend_as_a_factor() -> None:
    trend = Trend((17000.0, 17500.0), (3.0, 3.5))
    columns = Columns.of([17100, 17400], [1, 1], [1, 1])
    contributions = np.array([[0.1, -0.2, 0.05], [0.3, 0.0, 0.05]])  # store, item, expected value
    raw = contributions.sum(axis=1) + trend.offset(columns.days)
    prediction = Prediction(np.expm1(raw), ("v1",), outputs={"contributions": contributions})
    found = explanation(prediction, columns, lambda v: served(v, trend))
    assert found.multiplicative
    assert found.names == ("store", "item", "trend")
    for n in range(2):
        assert math.isclose(found.base[n] * math.prod(found.values[n]), 1 + prediction.sales[n], rel_tol=1e-12)
    assert found.values[0, 2] == math.exp(float(trend.offset(np.array([17100]))[0]))


def test_a_legacy_models_terms_add_up_to_the_sales() -> None:
    columns = Columns.of([17100], [1], [1])
    contributions = np.array([[2.5, -1.0, 30.0]])
    prediction = Prediction(np.array([31.5]), ("v1",), outputs={"contributions": contributions})
    found = explanation(prediction, columns, lambda v: served(v, None))
    assert not found.multiplicative
    assert found.names == NAMES
    assert found.base.tolist() == [30.0]
    assert found.values.tolist() == [[2.5, -1.0]]


def test_each_row_is_read_with_the_version_that_scored_it() -> None:
    columns = Columns.of([17100, 17100], [1, 1], [1, 1])
    contributions = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    trends = {"v1": Trend((17000.0,), (1.0,)), "v2": Trend((17000.0,), (2.0,))}
    prediction = Prediction(
        np.zeros(2), ("v1", "v2"), np.array([0, 1], dtype=np.uint8), outputs={"contributions": contributions}
    )
    found = explanation(prediction, columns, lambda v: served(v, trends[v]))
    assert found.values[:, 2].tolist() == [math.exp(1.0), math.exp(2.0)]
