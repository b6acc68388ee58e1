"""The sales level over the years, fitted apart from the trees.

Gradient-boosted trees cannot extrapolate: every date after the training range
falls in the same leaves as the last training dates, so a tree model of
growing sales forecasts next year at this year's level.  We therefore take the
level out of the target before training (in log space, where the data's
effects multiply) and put it back after prediction:

``log1p(sales) = trend(day) + trees(features)``

The trend is piecewise linear through one knot per calendar year (the year's
de-seasonalised mean log sales at the year's mean observed day) and continues
the last segment's slope beyond the last knot, so a slowing growth is
extrapolated at its most recent rate, not its average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_HARMONICS = 3
_FAR_DAYS = 365_250.0


@dataclass(frozen=True)
class Trend:
    """Knots (day since epoch, log level) of a piecewise-linear trend."""

    knot_days: tuple[float, ...]
    knot_levels: tuple[float, ...]
    _xp: np.ndarray = field(init=False, repr=False, compare=False)
    _fp: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once, as offset() is on the serving path: the knots plus one far knot on each
        # side on the end segments' lines, so a single np.interp also extrapolates.
        xp, fp = np.array(self.knot_days, dtype=np.float64), np.array(self.knot_levels, dtype=np.float64)
        far = np.array([xp[0] - _FAR_DAYS, xp[-1] + _FAR_DAYS])
        object.__setattr__(self, "_xp", np.concatenate([far[:1], xp, far[1:]]))
        object.__setattr__(
            self, "_fp", np.concatenate([interp_extrapolate(far[:1], xp, fp), fp, interp_extrapolate(far[1:], xp, fp)])
        )

    def offset(self, days: np.ndarray) -> np.ndarray:
        """Log level at each day (int days since 1970-01-01), linear beyond the knots for 1000 years."""
        level: np.ndarray = np.interp(days, self._xp, self._fp)
        return level

    def to_dict(self) -> dict[str, list[float]]:
        return {"knot_days": list(self.knot_days), "knot_levels": list(self.knot_levels)}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> Trend:
        return cls(tuple(data["knot_days"]), tuple(data["knot_levels"]))


def interp_extrapolate(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Like ``np.interp`` but continue the end segments' slopes outside ``xp``."""
    x = np.asarray(x, dtype=np.float64)
    if len(xp) == 1:
        return np.full_like(x, fp[0])
    y = np.interp(x, xp, fp)
    first_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    last_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    y = np.where(x < xp[0], fp[0] + first_slope * (x - xp[0]), y)
    result: np.ndarray = np.where(x > xp[-1], fp[-1] + last_slope * (x - xp[-1]), y)
    return result


def fit_trend(days: np.ndarray, log_sales: np.ndarray) -> Trend:
    """Fit the yearly levels of ``log_sales`` observed on ``days``.

    The daily mean of ``log_sales`` (over every store and item) is regressed on
    one indicator per calendar year plus yearly harmonics and weekday
    indicators, so a partial year (a holdout cut in September) is not biased
    by the season it is missing.
    """
    unique_days, inverse = np.unique(days, return_inverse=True)
    daily_mean = np.bincount(inverse, weights=log_sales) / np.bincount(inverse)
    dates = unique_days.astype("datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(np.int64)
    year_values = np.unique(years)
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(np.float64)
    weekday = (unique_days + 3) % 7

    columns = [(years == year).astype(np.float64) for year in year_values]
    for k in range(1, _HARMONICS + 1):
        angle = 2 * np.pi * k * day_of_year / 365.25
        columns += [np.sin(angle), np.cos(angle)]
    columns += [(weekday == d).astype(np.float64) for d in range(1, 7)]
    coefficients, *_ = np.linalg.lstsq(np.column_stack(columns), daily_mean, rcond=None)

    knot_days = [float(unique_days[years == year].mean()) for year in year_values]
    knot_levels = [float(c) for c in coefficients[: len(year_values)]]
    return Trend(tuple(knot_days), tuple(knot_levels))
