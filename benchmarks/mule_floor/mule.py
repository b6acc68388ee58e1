"""The mule floor's mule: the product's :class:`mules.loop.Mule` (pull, claim, answer through the result cache,
heartbeat) with a constant in place of the model. Run by uWSGI as ``__main__`` (``uwsgi.ini`` beside it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.mule_floor import CONSTANT, VERSION
from mules.jobs import JobPath
from mules.loop import Mule
from mules.models import Key
from serving.messages import decode_rows


class ConstantModels:
    """What :class:`Mule` asks of its :class:`mules.models.ModelCache`, holding one version that loads nothing."""

    def __init__(self) -> None:
        self.pinned: Key | None = None

    def held(self) -> tuple[Key, ...]:
        return () if self.pinned is None else (self.pinned,)

    def holds(self, key: Key) -> bool:
        return True

    def get(self, key: Key) -> tuple[None, bool]:
        return None, False

    def pin(self, key: Key) -> None:
        self.pinned = key


class ConstantJobs(JobPath):
    """The product's data path, every row answered with :data:`CONSTANT`."""

    def predict(self, predictor: Any, rows_bytes: bytes) -> np.ndarray:
        return np.full(len(decode_rows(rows_bytes)), CONSTANT)


class FloorMule(Mule):
    """A mule that serves from its first moment and answers every row with :data:`CONSTANT`."""

    def job_path(self) -> JobPath:
        models: Any = ConstantModels()  # in place of the ModelCache the mule made
        self.models = models
        return ConstantJobs(self.settings, self.uwsgi, models, self.metrics)

    def try_pin(self, ref: str) -> bool:
        self.models.pin(("default", VERSION))
        self.heartbeat()
        return True


def main() -> None:
    import uwsgi

    from serving.logs import configure_logging
    from serving.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, f"floor mule {uwsgi.mule_id()}", settings.log_format)
    FloorMule(settings, uwsgi).run()


if __name__ == "__main__":
    main()
