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
A per-row output beyond the raw score (LightGBM's per-feature contributions, say) is asked for by
name (:meth:`Scorer.output`): a new one is an entry of ``LightGBMScorer.OUTPUTS`` (and of any other
engine that can compute it); the mule, the job and result messages and the web worker carry
outputs by name and width, whatever they are.  No LightGBM import here.
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

    def output(self, name: str, features: np.ndarray) -> np.ndarray | None:
        """The per-row output ``name`` of a float64 ``(n, features)`` matrix, float64 ``(n, width)`` (``contributions``:
        LightGBM's ``pred_contrib``, each feature's contribution to the raw output and the expected value last);
        None when this engine cannot compute it (the caller then asks LightGBM: the version loaded with
        ``compiled=False``)."""
        ...
