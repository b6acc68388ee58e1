import numpy as np

from forecast.data import YEARLY_LOG_LEVEL, SalesData
from forecast.trend import Trend, fit_trend, interp_extrapolate


def test_interp_extrapolate_continues_end_slopes() -> None:
    xp, fp = np.array([0.0, 10.0, 20.0]), np.array([1.0, 2.0, 2.5])
    assert interp_extrapolate(np.array([5.0]), xp, fp).tolist() == [1.5]
    assert interp_extrapolate(np.array([30.0]), xp, fp).tolist() == [3.0]
    assert interp_extrapolate(np.array([-10.0]), xp, fp).tolist() == [0.0]


def test_fit_recovers_the_generated_growth(full_data: SalesData) -> None:
    trend = fit_trend(full_data.rows.days, np.log1p(full_data.sales.astype(float)))
    assert len(trend.knot_days) == 5
    growth = np.diff(trend.knot_levels)
    assert np.allclose(growth, np.diff(YEARLY_LOG_LEVEL), atol=0.02)


def test_round_trips_through_a_dict() -> None:
    trend = Trend((1.0, 2.0), (3.0, 4.0))
    assert Trend.from_dict(trend.to_dict()) == trend
