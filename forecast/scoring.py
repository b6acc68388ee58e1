"""The scorer seam: what turns a feature matrix into the trees' raw output, whichever engine runs the trees.

:class:`forecast.model.Predictor` builds the features, hands them to its :class:`Scorer`, and
turns the raw output into sales (the trend, the log target); it never asks which engine it
holds.  Two engines implement it:

- :class:`forecast.model.LightGBMScorer`: LightGBM's ``Booster`` (with its single-row C fast
  path below a few rows), loaded from model text (``LightGBMScorer.from_model_text``);
- :class:`forecast.compiled.CompiledTrees`: the version's compiled trees, loaded from their
  artefact (``forecast.compiled.load_compiled``) without LightGBM.

Loading is each engine's own constructor, called by the registry's verifier
(:mod:`forecast.registry_checks`), the one place that knows where a version's files are.
A new per-row output the trees compute (e.g. prediction intervals) is a method here, then
one per engine, then on ``Predictor``.  No LightGBM import here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Scorer(Protocol):
    """A loaded version's trees.  Not thread-safe: one per process (a mule), used after fork."""

    @property
    def engine(self) -> str:
        """What runs the trees: ``lightgbm`` or ``compiled`` (in logs, metrics and /models)."""
        ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The trees' raw output (float64), one per row of a float64 ``(n, features)`` matrix, on this thread."""
        ...

    def contributions(self, features: np.ndarray) -> np.ndarray | None:
        """Per-feature contributions to the raw output, ``(n, features + 1)`` (the last column: the expected value),
        as LightGBM's ``Booster.predict(pred_contrib=True)``; None when this engine cannot (the caller then asks
        LightGBM: load the version with ``compiled=False``)."""
        ...
