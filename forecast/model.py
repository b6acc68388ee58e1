"""The loaded model: its scorer (LightGBM's trees or compiled ones), the feature set they take, and (ours) the trend.

With :mod:`forecast.train`, the only module that imports LightGBM (a test checks), and
only when a predictor is built from model text: a predictor of compiled trees alone
never loads it (a mule that scores compiled trees saves LightGBM's memory).  Build one
only in a process that will predict (a mule, the training CLI, a test), and only after
any fork: LightGBM's OpenMP runtime hangs in a child forked from a parent that ran an
OpenMP region, and merely loading a model runs one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from forecast.compiled import CompiledTrees
from forecast.features import FEATURE_SETS, FEATURE_VERSION, FeatureSet, Rows
from forecast.scoring import Scorer
from forecast.trend import Trend

if TYPE_CHECKING:
    import lightgbm as lgb


class Predictor:
    """Predict daily unit sales for rows of (date, store, item).

    Not thread-safe (one per process, as in a mule).  ``predict`` builds the version's
    features and hands them to its ``scorer`` (:mod:`forecast.scoring`: LightGBM's trees or
    compiled ones), on one thread: with several processes per machine, OpenMP threads only
    add contention, and one thread keeps a forked process safe.
    A version of our feature set predicts ``expm1(trees + trend)``, at least 0; an
    imported legacy version predicts what its trees say, as the original service did.
    """

    def __init__(
        self,
        scorer: Scorer,
        trend: Trend | None,
        version: str,
        feature_set: FeatureSet = FEATURE_SETS[FEATURE_VERSION],
    ) -> None:
        if feature_set.log_target and trend is None:
            raise ValueError(f"feature set {feature_set.version} needs a trend")
        self.scorer = scorer
        self.trend = trend
        self.version = version
        self.feature_set = feature_set

    @property
    def engine(self) -> str:
        """What scores the rows: ``compiled`` trees or ``lightgbm``."""
        return self.scorer.engine

    @property
    def booster(self) -> lgb.Booster | None:
        """LightGBM's trees, when they score this version (verification and training read them)."""
        return self.scorer.booster if isinstance(self.scorer, LightGBMScorer) else None

    @property
    def compiled(self) -> CompiledTrees | None:
        """The compiled trees, when they score this version (verification checks their reference)."""
        return self.scorer if isinstance(self.scorer, CompiledTrees) else None

    @classmethod
    def from_model_text(cls, model_text: str, trend: Trend | None, version: str, feature_set: FeatureSet) -> Predictor:
        """Build a predictor scored by LightGBM from the text of a LightGBM model file (imports LightGBM)."""
        return cls(LightGBMScorer.from_model_text(model_text), trend, version, feature_set)

    def predict(self, rows: Rows) -> np.ndarray:
        """Return forecast unit sales (float64), one per row, in order."""
        if len(rows) == 0:
            return np.empty(0, dtype=np.float64)
        return self._sales(rows, self.scorer.predict(self.feature_set.build(rows)))

    def output(self, name: str, rows: Rows) -> np.ndarray | None:
        """The rows' per-row output ``name`` (:meth:`Scorer.output`: ``contributions``, each feature's contribution
        to each row's raw output and the expected value last); None when this version's engine cannot compute it
        (compiled trees): load it with LightGBM for it."""
        return self.scorer.output(name, self.feature_set.build(rows))

    def predict_both_paths(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """LightGBM's (one C call per row, one batch call): what verification compares; ``ValueError`` without it."""
        if not isinstance(self.scorer, LightGBMScorer):
            raise ValueError(f"version {self.version} was loaded without LightGBM (compiled trees only)")
        single, batch = self.scorer.both_paths(self.feature_set.build(rows))
        return self._sales(rows, single), self._sales(rows, batch)

    def _sales(self, rows: Rows, raw: np.ndarray) -> np.ndarray:
        if self.trend is None or not self.feature_set.log_target:
            return raw
        sales: np.ndarray = np.maximum(np.expm1(raw + self.trend.offset(rows.days)), 0.0)
        return sales


class LightGBMScorer:
    """LightGBM's ``Booster`` as a :class:`Scorer`: the single-row C path below :data:`SINGLE_ROW_PATH_BELOW`
    rows, the batch call above, both on one thread.  Not thread-safe: one per process."""

    engine = "lightgbm"

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self._single_row = _SingleRowPredictor.create(booster)

    @classmethod
    def from_model_text(cls, model_text: str) -> LightGBMScorer:
        """Load the trees of a LightGBM model text (imports LightGBM)."""
        import lightgbm as lgb  # deferred: see the module's docstring

        return cls(lgb.Booster(model_str=model_text))

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self._single_row is not None and len(features) < SINGLE_ROW_PATH_BELOW:
            return self._single_row.predict(features)
        return self._batch(features)

    # The per-row outputs beyond the prediction, by name (Scorer.output): each (rows, width) or one value a row.
    OUTPUTS: ClassVar[dict[str, Callable[[lgb.Booster, np.ndarray], object]]] = {
        "contributions": lambda booster, features: booster.predict(features, pred_contrib=True, num_threads=1),
    }

    def output(self, name: str, features: np.ndarray) -> np.ndarray | None:
        compute = self.OUTPUTS.get(name)
        if compute is None:
            return None
        return np.asarray(compute(self.booster, features), dtype=np.float64).reshape(len(features), -1)  # one a row

    def both_paths(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(single-row path, batch path) raw outputs of ``features``; the batch path twice without the C path."""
        batch = self._batch(features)
        return (self._single_row.predict(features) if self._single_row is not None else batch), batch

    def _batch(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, num_threads=1))


# Below this many rows, one LightGBM C call per row beats one Python-wrapped batch call
# (measured: 1 row 9 us vs 33 us; break-even near 64 rows; see README "Performance").
SINGLE_ROW_PATH_BELOW = 32


class _SingleRowPredictor:
    """LightGBM's C fast path for one row (``LGBM_BoosterPredictForMatSingleRowFast``).

    The Python package does not expose it (lightgbm-org/LightGBM#6913), so this
    calls the C API through the package's own library handle.  It gives the
    same numbers as ``Booster.predict`` (tested); if the handle is missing in
    another LightGBM release, :meth:`create` returns None and the batch path is
    used.  Not thread-safe: one per process.
    """

    def __init__(self, lib: ctypes.CDLL, handle: ctypes.c_void_p, booster: lgb.Booster) -> None:
        self._lib = lib
        self._handle = handle
        self._booster = booster  # keeps the model alive as long as the fast config
        self._out = (ctypes.c_double * 1)()
        self._out_len = ctypes.c_int64()

    @classmethod
    def create(cls, booster: lgb.Booster) -> _SingleRowPredictor | None:
        import lightgbm as lgb  # loaded already: ``booster`` is one of its objects

        lib = getattr(lgb.basic, "_LIB", None)
        if lib is None or not hasattr(lib, "LGBM_BoosterPredictForMatSingleRowFastInit"):
            return None
        handle = ctypes.c_void_p()
        status = lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle,
            ctypes.c_int(0),  # C_API_PREDICT_NORMAL
            ctypes.c_int(0),  # start iteration
            ctypes.c_int(-1),  # all iterations
            ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
            ctypes.c_int32(booster.num_feature()),
            b"num_threads=1",
            ctypes.byref(handle),
        )
        return cls(lib, handle, booster) if status == 0 else None

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = np.empty(len(features), dtype=np.float64)
        address, stride = features.ctypes.data, features.strides[0]
        call, out_len, value = self._lib.LGBM_BoosterPredictForMatSingleRowFast, ctypes.byref(self._out_len), self._out
        for i in range(len(features)):
            if call(self._handle, ctypes.c_void_p(address + i * stride), out_len, value) != 0:
                raise RuntimeError("LightGBM single-row prediction failed")
            out[i] = value[0]
        return out

    def __del__(self) -> None:
        if self._handle:
            self._lib.LGBM_FastConfigFree(self._handle)
