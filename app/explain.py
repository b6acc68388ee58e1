"""A forecast's explanation: LightGBM's own per-feature contributions, as factors a planner reads.

The mules return each row's contributions to the trees' raw output (the model's :data:`OUTPUT`,
``pred_contrib``: one per feature, the expected value last; :class:`app.prediction.Prediction`).  For a version of our
feature set the trees predict ``log1p(sales)`` minus the version's trend, so

``1 + sales = base x product(factors)``, with ``base = exp(expected value)``, one factor
``exp(contribution)`` per feature, and ``trend = exp(trend(day))``,

exactly up to rounding (and up to the clip at 0 sales, which a product cannot go below 1 for).
An imported legacy version's trees predict sales themselves, so its contributions add up
instead: ``sales = base + sum(terms)``.  Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.prediction import Prediction
from app.service import ServedModel
from serving.columns import Columns

OUTPUT = "contributions"  # the model's per-row output an explanation reads (forecast.scoring.Scorer.output)


@dataclass(frozen=True)
class Explanation:
    """Each row's explanation: a base and one value per name (factors that multiply, or terms that add)."""

    multiplicative: bool  # True: 1 + sales = base x product(values); False: sales = base + sum(values)
    names: tuple[str, ...]
    base: np.ndarray  # (rows,)
    values: np.ndarray  # (rows, names)


def explanation(prediction: Prediction, columns: Columns, served: Callable[[str], ServedModel]) -> Explanation:
    """The rows' explanations from ``prediction``'s contributions, read with the version each row had
    (``served``: a version's :class:`ServedModel`)."""
    contributions = prediction.outputs[OUTPUT]  # asked for with explain
    versions = [served(label) for label in prediction.labels]
    first = versions[0]
    width = len(first.feature_names) + (1 if first.trend is not None else 0)
    base = np.empty(len(columns))
    values = np.empty((len(columns), width))
    for n, version in enumerate(versions):
        rows = slice(None) if prediction.version_of is None else prediction.version_of == n
        base[rows], values[rows] = _read(version, contributions[rows], columns.days[rows])
    names = first.feature_names + (("trend",) if first.trend is not None else ())
    return Explanation(first.trend is not None, names, base, values)


def _read(version: ServedModel, contributions: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    expected, per_feature = contributions[:, -1], contributions[:, :-1]
    if version.trend is None:
        return expected, per_feature
    return np.exp(expected), np.exp(np.column_stack([per_feature, version.trend.offset(days)]))
