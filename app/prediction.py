"""What a request's rows are scored as, and what comes back: the types routing, service and use case share.

Numpy only: the mule transport (:mod:`app.mule_client`) fills them, the routing
(:mod:`app.routing`) splits rows into :class:`Part` s, the renderer (:mod:`app.answers`)
reads :class:`Prediction` s; none of them imports another for these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from serving.columns import Columns


@dataclass(frozen=True)
class Part:
    """Rows of one request that one version scores; ``positions``: where they sit in the request (None: all)."""

    version: str
    columns: Columns
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.columns)


@dataclass(frozen=True)
class Prediction:
    """Predictions in request order (float64), and the model version of each row.

    ``labels`` names each version that scored once; ``version_of`` holds each row's index
    into it, or is None when the first label scored every row (nearly always).
    """

    sales: np.ndarray
    labels: tuple[str, ...]
    version_of: np.ndarray | None = None
    loaded: bool = False  # some job waited for its mule to load the model version
    # The model's per-row outputs asked for (forecast.scoring.Scorer.output), by name: ``(rows, width)`` each, in
    # request order (``contributions``: each feature's contribution to the trees' raw output, the expected value last).
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def versions(self) -> list[str]:
        """Each row's version (a list as long as the rows)."""
        return self.versions_of(slice(None))

    def versions_of(self, rows: slice) -> list[str]:
        """The version of each row of ``rows``."""
        if self.version_of is None:
            return [self.labels[0]] * len(self.sales[rows])
        return [self.labels[n] for n in self.version_of[rows].tolist()]

    def version_label(self) -> str:
        """The version that scored the rows, or every one of them joined (``v1,v2``) mid-reload."""
        return self.labels[0] if len(self.labels) == 1 else ",".join(sorted(self.labels))
