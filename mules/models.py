"""The model versions one mule holds: loaded on first use, evicted least recently used, within a budget.

One mule pool serves every model.  A job names its model and version; the mule scores it
with the version it holds, or loads it first (``loaded``: the request waited for a load).
The versions held must fit ``FORECAST_MULE_MODEL_BUDGET_MB``, estimated as each model
text's size plus ``PER_MODEL_OVERHEAD_BYTES`` (a loaded LightGBM model takes about its text's
size in memory, and a fixed ~25 KB more: measured in the README); beyond, the least recently
used versions are dropped.  The default model's version this mule serves by default is
pinned: it is never evicted.  The default model's versions score with their compiled trees
when they have usable ones (counted in the budget by the library's size instead of the
text's), which need no LightGBM in the mule; other models' versions load with LightGBM:
they are the ones the budget loads again and again, compiled trees load slower (7.6
against 4.4 ms for the default model's 600 KB text: the check against their recorded
forecasts) and a library once loaded stays mapped for the life of the process, so evicting
it would free nothing.  A version that does not load is remembered for ``FAILED_RETRY_S``
so that its requests fail at once instead of loading again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from forecast.errors import CorruptVersion, ForecastError
from forecast.model import Predictor
from forecast.registry import DEFAULT_MODEL, Registry
from mules.loading import LoadGuard

logger = logging.getLogger(__name__)

FAILED_RETRY_S = 10  # a version that failed to load is not tried again before this
PER_MODEL_OVERHEAD_BYTES = 32 * 1024  # a loaded Booster beyond its text: ~25 KB measured, rounded up
LIGHTGBM_KEPT = 2  # versions loaded with LightGBM for outputs only (outside the budget: a canary's, say)

Key = tuple[str, str]  # (model, version)


@dataclass
class Held:
    predictor: Predictor
    size_bytes: int


class ModelError(ForecastError):
    """A model version cannot be loaded in this mule; the message names the model and why."""

    code = "model_unavailable"


class ModelCache:
    """One mule's loaded versions; not thread-safe (a mule has one thread)."""

    def __init__(
        self,
        registry: Registry,
        budget_bytes: int,
        guard: LoadGuard,
        on_load: Callable[[str], None] = lambda _: None,
        compiled: bool = True,
    ) -> None:
        self.registry = registry
        self.budget_bytes = budget_bytes
        self.compiled = compiled  # score the default model's versions with their compiled trees when usable
        self.guard = guard
        self.on_load = on_load  # told the model's name after each load (the mule's metrics)
        self.pinned: Key | None = None
        self._held: OrderedDict[Key, Held] = OrderedDict()
        self._failed: dict[Key, tuple[str, float]] = {}
        self._lightgbm: OrderedDict[Key, Predictor] = OrderedDict()

    def held(self) -> tuple[Key, ...]:
        return tuple(self._held)

    def holds(self, key: Key) -> bool:
        return key in self._held

    def get(self, key: Key) -> tuple[Predictor, bool]:
        """The predictor of ``key`` and whether it was loaded now; raises :class:`ModelError`."""
        held = self._held.get(key)
        if held is not None:
            self._held.move_to_end(key)
            return held.predictor, False
        return self._load(key), True

    def with_lightgbm(self, key: Key) -> Predictor:
        """A predictor of ``key`` run by LightGBM, for an output its compiled trees cannot compute (contributions):
        the one held when LightGBM scores it, else the version loaded with LightGBM, kept for the last
        :data:`LIGHTGBM_KEPT` versions asked.

        Only such outputs load LightGBM into a mule of compiled trees.  Raises :class:`ModelError`.
        """
        held = self._held.get(key)
        if held is not None and held.predictor.engine == "lightgbm":
            return held.predictor
        if key not in self._lightgbm:
            model, version = key
            try:
                self._lightgbm[key] = self.registry.named(model).verify(version, compiled=False)
            except ForecastError as exc:
                raise ModelError(f"model {model!r} version {version} cannot load with LightGBM: {exc.message}") from exc
            while len(self._lightgbm) > LIGHTGBM_KEPT:
                self._lightgbm.popitem(last=False)
        self._lightgbm.move_to_end(key)
        return self._lightgbm[key]

    def pin(self, key: Key) -> Predictor:
        """Load ``key`` if needed and keep it whatever the budget (the default model's served version)."""
        predictor, _ = self.get(key)
        self.pinned = key
        return predictor

    def _load(self, key: Key) -> Predictor:
        model, version = key
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() < failed[1]:
            raise ModelError(failed[0])
        registry = self.registry.named(model)
        try:
            if self.guard.poisoned(model, version):
                raise CorruptVersion(f"version {version} stopped a mule while it loaded; it is not loaded again")
            registry.resolve(version)  # VersionNotFound, with a message fit for a client
            with self.guard.loading(model, version):
                predictor = registry.verify(version, compiled=self.compiled and model == DEFAULT_MODEL)
            size = PER_MODEL_OVERHEAD_BYTES + registry.footprint_bytes(version, predictor.engine == "compiled")
        except ForecastError as exc:
            reason = f"model {model!r} version {version} cannot be loaded: {exc.message}"
            self._failed[key] = (reason, time.monotonic() + FAILED_RETRY_S)
            raise ModelError(reason) from exc
        self._make_room(size)
        self._held[key] = Held(predictor, size)
        self.on_load(model)
        self._failed.pop(key, None)
        logger.info("loaded model %s version %s (%s; %d KB; %d held)", model, version, predictor.engine, size // 1024,
                    len(self._held))  # fmt: skip
        return predictor

    def _make_room(self, size: int) -> None:
        """Drop the least recently used versions (never the pinned one) until ``size`` more fits the budget."""
        total = sum(held.size_bytes for held in self._held.values())
        for key in list(self._held):
            if total + size <= self.budget_bytes:
                return
            if key == self.pinned:
                continue
            total -= self._held.pop(key).size_bytes
            logger.info("evicted model %s version %s (least recently used)", *key)
