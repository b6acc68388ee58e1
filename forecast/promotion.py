"""Promotion on evidence: a version takes an alias only if it beat production on the last days of actual sales.

``python -m forecast registry promote VERSION --if-better`` (:mod:`forecast.cli`) asks :func:`judge`
to score the candidate and production, here with the versions loaded as a mule loads them, on the
stored actuals of the last ``days`` days with actuals (the cells both versions know), by the
definition ``GET /accuracy`` uses (:mod:`forecast.accuracy`).  Fewer than ``min_rows`` actuals is no
evidence: the promotion is refused, as it is when the candidate's SMAPE is not lower.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from forecast.accuracy import Scores, score
from forecast.actuals import ActualsStore
from forecast.actuals_input import EPOCH
from forecast.errors import ForecastError
from forecast.features import Rows
from forecast.registry import Registry

DEFAULT_DAYS = 28
DEFAULT_MIN_ROWS = 1000


class NotBetter(ForecastError):
    """The candidate did not beat production on the actuals, or there were too few to tell."""

    code = "not_better"


@dataclass(frozen=True)
class Judgement:
    """The candidate's and production's scores on the same actuals, days ``first``..``last``."""

    candidate: str
    production: str
    first: dt.date
    last: dt.date
    candidate_scores: Scores
    production_scores: Scores

    def summary(self) -> str:
        c, p = self.candidate_scores, self.production_scores
        return (f"on {c.rows} actuals of {self.first}..{self.last}: {self.candidate} SMAPE {c.smape:.4f}, "
                f"production {self.production} SMAPE {p.smape:.4f}")  # fmt: skip


def judge(registry: Registry, store: ActualsStore, candidate: str, days: int = DEFAULT_DAYS,
          min_rows: int = DEFAULT_MIN_ROWS) -> Judgement:  # fmt: skip
    """Score ``candidate`` and production on the last ``days`` days with actuals; raises :class:`NotBetter`
    when there are fewer than ``min_rows`` actuals both versions know, or the candidate's SMAPE is not lower."""
    production = registry.resolve("production")
    candidate = registry.resolve(candidate)
    last = store.last_day()
    if last is None:
        raise NotBetter("no actuals are stored: load some (POST /actuals, or `actuals load`) first")
    stored = store.read(last - days + 1, last)
    known = np.ones(len(stored), dtype=bool)
    for version in (candidate, production):
        domain = registry.metadata(version)["domain"]
        known &= np.isin(stored.stores, domain["stores"]) & np.isin(stored.items, domain["items"])
    rows = Rows(stored.days[known].astype("datetime64[D]"), stored.stores[known], stored.items[known])
    actual = stored.sales[known].astype(np.float64)
    found = [score(registry.load(version).predict(rows), actual) for version in (candidate, production)]
    judgement = Judgement(candidate, production, EPOCH + dt.timedelta(days=last - days + 1),
                          EPOCH + dt.timedelta(days=last), *found)  # fmt: skip
    if len(actual) < min_rows:
        raise NotBetter(f"too few actuals to judge {candidate}: {len(actual)} in the last {days} days, "
                        f"fewer than --min-rows {min_rows}")  # fmt: skip
    if found[0].smape is None or found[1].smape is None or found[0].smape >= found[1].smape:
        raise NotBetter(f"{candidate} is not better than production {production}: {judgement.summary()}")
    return judgement
