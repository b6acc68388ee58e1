"""Prediction intervals from the errors a version made on data it had not seen: split conformal, per horizon.

A version's calibration is computed when it is trained (:mod:`forecast.backtest`: a
rolling-origin backtest, several cutoffs, each model forecasting up to a year past its own
training data) and stored in its metadata; serving only looks it up (numpy only).

The error of a forecast ``F`` of actual sales ``A`` is ``|log1p(A) - log1p(F)|``: relative,
as the model's own loss, so one set of errors serves a series selling 10 a day and one
selling 100.  For a level ``L`` the half-width ``q`` is the split-conformal quantile of the
``n`` errors of like forecasts (the ``ceil((n + 1) L / 100)``-th smallest), and the band is
``[max(expm1(log1p(F) - q), 0), expm1(log1p(F) + q)]``: asymmetric in sales, never
negative, and nested (95 holds 80 holds the forecast) because the quantiles of one sorted
set grow with the level.  A level that ``n`` errors cannot support (``k > n``) has no band.

"Like forecasts" are a :class:`Cell`: the same kind of answer row (a day or a week of ``d``
days; a series, a store total, an item total or the total of all), then the same horizon
bin (days ahead of the version's training data, :data:`HORIZON_EDGES`), then the same
magnitude bin (quantiles of ``log1p(F)`` within the horizon bin: small series are noisier,
relatively).  Bins are merged where they would hold too few errors.  Weekly and total
bands are calibrated on the errors of weekly and total sums, not added up from daily bands.

Requested levels round up to the calibration's grid (:data:`LEVEL_GRID`): a band is never
narrower than asked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecast.buckets import Granularity, Totals

LEVEL_GRID = (*(float(level) for level in range(50, 100)), 99.5, 99.8, 99.9)
HORIZON_EDGES = (7, 28, 91, 182, 366)  # the last day ahead of each horizon bin (beyond the last: the last bin)
MIN_HORIZON_ERRORS = 200  # a horizon bin with fewer errors is merged into the next one
MAGNITUDE_BIN_ERRORS = 2_000  # errors per magnitude bin (enough for the 99.9 level)
MAX_MAGNITUDE_BINS = 4
METHOD = "split conformal on |log1p(actual) - log1p(forecast)|, rolling-origin backtest"


def kind_key(granularity: Granularity, totals: Totals | None, days: int) -> str:
    """A cell's key: ``day/series/1``, ``week/store/7``: what a row covers, what it sums, how many days."""
    return f"{granularity.value}/{totals.value if totals else 'series'}/{days}"


def errors(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """The relative errors the calibration takes quantiles of (float64)."""
    found: np.ndarray = np.abs(np.log1p(actual) - np.log1p(forecast))
    return found


def level_index(level: float) -> int:
    """Index of the grid level a requested ``level`` rounds up to; ``ValueError`` above the grid."""
    for index, grid_level in enumerate(LEVEL_GRID):
        if grid_level >= level - 1e-9:
            return index
    raise ValueError(f"level {level} is above {LEVEL_GRID[-1]}")


def conformal_quantiles(sorted_errors: np.ndarray) -> tuple[float, ...]:
    """Each grid level's half-width from ascending errors; ``inf`` where there are too few errors."""
    n = len(sorted_errors)
    found = []
    for level in LEVEL_GRID:
        k = math.ceil((n + 1) * level / 100 - 1e-9)
        found.append(_stored(float(sorted_errors[k - 1])) if k <= n else math.inf)
    return tuple(found)


@dataclass(frozen=True)
class Cell:
    """The half-widths of one kind of answer row: per horizon bin, per magnitude bin, per grid level."""

    horizon_edges: tuple[int, ...]  # the last day ahead of each horizon bin; past the last one: the last bin
    magnitude_edges: tuple[tuple[float, ...], ...]  # per horizon bin: inner edges on log1p(forecast), ascending
    quantiles: tuple[tuple[tuple[float, ...], ...], ...]  # [horizon bin][magnitude bin][grid level]
    counts: tuple[tuple[int, ...], ...]  # errors behind each [horizon bin][magnitude bin]

    @classmethod
    def fit(cls, horizons: np.ndarray, forecasts: np.ndarray, cell_errors: np.ndarray) -> Cell:
        """The cell of errors made ``horizons`` days ahead on ``forecasts``."""
        edges = _merged_edges(horizons)
        bins = np.searchsorted(np.array(edges[:-1]), horizons, side="left")
        magnitude_edges, quantiles, counts = [], [], []
        for b in range(len(edges)):
            chosen = bins == b
            inner, per_bin, sizes = _magnitude_bins(np.log1p(forecasts[chosen]), cell_errors[chosen])
            magnitude_edges.append(inner)
            quantiles.append(per_bin)
            counts.append(sizes)
        return cls(tuple(edges), tuple(magnitude_edges), tuple(quantiles), tuple(counts))

    def halfwidths(self, horizons: np.ndarray, forecasts: np.ndarray, levels: list[int]) -> np.ndarray:
        """Half-widths ``(rows, levels)`` for forecasts ``horizons`` days ahead; ``levels``: grid indices."""
        bins = np.searchsorted(np.array(self.horizon_edges[:-1]), horizons, side="left")
        out = np.empty((len(forecasts), len(levels)), dtype=np.float64)
        log_forecasts = np.log1p(forecasts)
        for b in np.unique(bins).tolist():
            rows = bins == b
            magnitude = np.searchsorted(np.array(self.magnitude_edges[b]), log_forecasts[rows], side="right")
            table = np.array(self.quantiles[b], dtype=np.float64)  # magnitude bin x grid level
            out[rows] = table[magnitude][:, levels]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon_edges": list(self.horizon_edges),
            "magnitude_edges": [list(edges) for edges in self.magnitude_edges],
            "quantiles": [[[_json_float(q) for q in row] for row in per_bin] for per_bin in self.quantiles],
            "counts": [list(sizes) for sizes in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(
            tuple(int(edge) for edge in data["horizon_edges"]),
            tuple(tuple(float(e) for e in edges) for edges in data["magnitude_edges"]),
            tuple(tuple(_half_widths(row) for row in per_bin) for per_bin in data["quantiles"]),
            tuple(tuple(int(n) for n in sizes) for sizes in data["counts"]),
        )

    def problems(self) -> list[str]:
        """What makes this cell unusable: shapes that disagree, half-widths negative or shrinking with the level."""
        found = []
        bins = len(self.horizon_edges)
        if not (len(self.magnitude_edges) == len(self.quantiles) == len(self.counts) == bins) or bins == 0:
            return [f"{bins} horizon bins but {len(self.magnitude_edges)} magnitude edges, {len(self.quantiles)} "
                    f"quantile tables, {len(self.counts)} counts"]  # fmt: skip
        for b in range(bins):
            magnitude_bins = len(self.magnitude_edges[b]) + 1
            if not len(self.quantiles[b]) == len(self.counts[b]) == magnitude_bins:
                found.append(f"horizon bin {b}: magnitude bins do not match their edges")
                continue
            for row in self.quantiles[b]:
                if len(row) != len(LEVEL_GRID) or any(q < 0 or math.isnan(q) for q in row):
                    found.append(f"horizon bin {b}: half-widths missing, negative or not a number")
                elif any(later < earlier for earlier, later in itertools.pairwise(row)):
                    found.append(f"horizon bin {b}: half-widths shrink as the level grows (bands would cross)")
        return found


@dataclass(frozen=True)
class Calibration:
    """A version's interval calibration: one :class:`Cell` per kind of answer row, and how it was made."""

    cells: dict[str, Cell]
    origins: tuple[str, ...]  # the backtest's cutoffs (last training day of each backtest model)
    coverage: dict[str, dict[str, float]]  # kind -> level -> share of held-out errors inside the band

    def cell(self, key: str) -> Cell | None:
        return self.cells.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "levels": list(LEVEL_GRID),
            "origins": list(self.origins),
            "coverage": self.coverage,
            "cells": {key: cell.to_dict() for key, cell in self.cells.items()},
        }

    @classmethod
    def of_version(cls, metadata: dict[str, Any]) -> Calibration | None:
        """The calibration a version's metadata holds, None for a version without one (trained before
        calibrations, imported); ``ValueError`` for one this code cannot use."""
        stored = metadata.get("intervals")
        return None if stored is None else cls.from_dict(stored)

    def summary(self) -> dict[str, Any]:
        """What the model card shows: method, cutoffs, held-out coverage, and the errors behind each kind."""
        errors_per_kind = {key: sum(map(sum, cell.counts)) for key, cell in self.cells.items()}
        return {"method": METHOD, "origins": list(self.origins), "coverage": self.coverage, "errors": errors_per_kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Read a stored calibration; ``ValueError`` (naming the problem) for one this code cannot use."""
        try:
            if [float(level) for level in data["levels"]] != list(LEVEL_GRID):
                raise ValueError(f"its level grid is not this code's ({LEVEL_GRID[0]}..{LEVEL_GRID[-1]})")
            calibration = cls({key: Cell.from_dict(cell) for key, cell in data["cells"].items()},
                              tuple(data["origins"]), data.get("coverage", {}))  # fmt: skip
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"the calibration is malformed ({type(exc).__name__}: {exc})") from None
        problems = [f"{key}: {problem}" for key, cell in calibration.cells.items() for problem in cell.problems()]
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return calibration


def coverage(cell: Cell, horizons: np.ndarray, forecasts: np.ndarray, cell_errors: np.ndarray,
             levels: Iterable[float]) -> dict[str, float]:  # fmt: skip
    """The share of ``cell_errors`` within each level's half-width (the band holds the actual), in percent."""
    levels = list(levels)
    widths = cell.halfwidths(horizons, forecasts, [level_index(level) for level in levels])
    inside = cell_errors[:, None] <= widths
    return {_level_name(level): round(100 * float(inside[:, n].mean()), 2) for n, level in enumerate(levels)}


def bands(forecasts: np.ndarray, halfwidths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each ``(rows, levels)``, around ``forecasts`` for ``halfwidths`` in log1p space."""
    centre = np.log1p(forecasts)[:, None]
    lower: np.ndarray = np.maximum(np.expm1(centre - halfwidths), 0.0)
    upper: np.ndarray = np.expm1(centre + halfwidths)
    return lower, upper


def _level_name(level: float) -> str:
    """``80`` for 80.0, ``99.5`` for 99.5: the key of a level in answers and reports."""
    return f"{level:g}"


def _half_widths(row: list[float | None]) -> tuple[float, ...]:
    """A stored row of half-widths: null is a level the errors cannot support (``inf``)."""
    return tuple(math.inf if q is None else float(q) for q in row)


def _stored(value: float) -> float:
    """``value`` rounded up to 6 decimals: what is stored is what is served, and never narrower than measured."""
    return math.ceil(value * 1e6) / 1e6


def _json_float(value: float) -> float | None:
    return None if math.isinf(value) else value


def _merged_edges(horizons: np.ndarray) -> list[int]:
    """:data:`HORIZON_EDGES`, merged where a bin would hold fewer than :data:`MIN_HORIZON_ERRORS` errors."""
    counts = np.bincount(np.searchsorted(np.array(HORIZON_EDGES[:-1]), horizons, side="left"),
                         minlength=len(HORIZON_EDGES))  # fmt: skip
    edges: list[int] = []
    held = 0
    for edge, count in zip(HORIZON_EDGES, counts.tolist(), strict=True):
        held += count
        if held >= MIN_HORIZON_ERRORS:
            edges.append(edge)
            held = 0
    if held and edges:
        edges.pop()  # a short tail joins the bin before it
    return [*edges[:-1], HORIZON_EDGES[-1]]  # the last bin takes every horizon beyond the one before


def _magnitude_bins(
    log_forecasts: np.ndarray, bin_errors: np.ndarray
) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[int, ...]]:
    """Split one horizon bin's errors by forecast size: (inner edges, half-widths per bin, errors per bin)."""
    count = min(MAX_MAGNITUDE_BINS, max(1, len(bin_errors) // MAGNITUDE_BIN_ERRORS))
    quantiles = np.quantile(log_forecasts, np.arange(1, count) / count) if count > 1 else []
    inner = tuple(round(float(edge), 6) for edge in quantiles)  # as stored, so serving bins as fitting did
    which = np.searchsorted(np.array(inner), log_forecasts, side="right")
    per_bin, sizes = [], []
    for m in range(count):
        chosen = np.sort(bin_errors[which == m])
        per_bin.append(conformal_quantiles(chosen))
        sizes.append(len(chosen))
    return inner, tuple(per_bin), tuple(sizes)
