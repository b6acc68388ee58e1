"""A forecast's bands from its version's calibration (:mod:`forecast.intervals`): the one place both use cases
(``/forecast``'s rows of every kind, ``/predict``'s daily rows) turn half-widths into edges, and refuse a level
the calibration's errors cannot support.  Numpy only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.errors import InvalidInput
from app.prediction import Prediction
from app.service import ServedModel
from forecast.buckets import Granularity
from forecast.intervals import LEVEL_GRID, Cell, bands, kind_key, level_index
from serving.columns import EPOCH, Columns


@dataclass(frozen=True)
class Bands:
    """The rows' band edges ``(rows, levels)``, or why there are none (``note``)."""

    level_names: list[str]
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    note: str | None = None


def level_names(levels: tuple[float, ...]) -> list[str]:
    """``80`` for 80.0, ``99.5`` for 99.5: a level's key in answers."""
    return [f"{level:g}" for level in levels]


def no_bands(served: ServedModel, levels: tuple[float, ...]) -> str | None:
    """Why an answer of ``served`` has no bands, or None when it has them."""
    if not levels:
        return "no level was asked for (level: [])"
    if served.calibration is None:
        return (f"version {served.version} has no interval calibration (trained before calibrations, with "
                "--backtest-origins 0, or imported): forecasts without bands")  # fmt: skip
    return None


def horizons(served: ServedModel, last_days: np.ndarray) -> np.ndarray:
    """Days ahead of ``served``'s training data of rows ending on ``last_days`` (at least 1)."""
    found: np.ndarray = np.maximum(last_days - (served.trained_through - EPOCH).days, 1)
    return found


def half_widths(served: ServedModel, key: str, ahead: np.ndarray, forecasts: np.ndarray,
                levels: tuple[float, ...]) -> np.ndarray:  # fmt: skip
    """``(rows, levels)`` half-widths of rows of kind ``key``; 422 naming ``level`` for one the errors cannot
    support, or a kind the calibration lacks."""
    cell: Cell | None = served.calibration.cell(key) if served.calibration is not None else None
    if cell is None:
        raise InvalidInput(f"version {served.version} has no calibration for {key} rows", field="level")
    indices = [level_index(level) for level in levels]
    found = cell.halfwidths(ahead, forecasts, indices)
    for n, level in enumerate(levels):
        if np.isinf(found[:, n]).any():
            raise InvalidInput(f"level {level:g}: version {served.version}'s backtest has too few errors of {key} "
                               f"rows for a {LEVEL_GRID[indices[n]]:g}% band; ask for a lower level",
                               field="level")  # fmt: skip
    return found


def row_bands(prediction: Prediction, columns: Columns, levels: tuple[float, ...],
              served: Callable[[str], ServedModel]) -> Bands:  # fmt: skip
    """Daily rows' bands, each row's from the version that scored it (``served``: a version's ServedModel)."""
    names = level_names(levels)
    versions = [served(label) for label in prediction.labels]
    for version in versions:
        note = no_bands(version, levels)
        if note is not None:
            return Bands(names, note=note)
    widths = np.empty((len(columns), len(levels)))
    key = kind_key(Granularity.DAY, None, 1)
    for n, version in enumerate(versions):
        rows = slice(None) if prediction.version_of is None else prediction.version_of == n
        widths[rows] = half_widths(version, key, horizons(version, columns.days[rows]), prediction.sales[rows], levels)
    lower, upper = bands(prediction.sales, widths)
    return Bands(names, lower, upper)
