"""A version keeps its training data's last weeks: what the planner page draws before any actuals are stored."""

from __future__ import annotations

import numpy as np

from forecast.data import generate
from forecast.train import RECENT_DAYS, recent_sales


def test_the_last_weeks_of_every_series_through_the_training_end_are_kept() -> None:
    data = generate()
    recent = recent_sales(data, "2017-06-30")
    assert (recent["first_date"], recent["last_date"]) == ("2017-05-06", "2017-06-30")
    assert len(recent["series"]) == 500
    store, item, sales = recent["series"][37]
    assert (store, item, len(sales)) == (1, 38, RECENT_DAYS)
    rows = data.rows
    mine = (rows.stores == 1) & (rows.items == 38) & (rows.dates >= np.datetime64("2017-05-06"))
    mine &= rows.dates <= np.datetime64("2017-06-30")
    assert sales == data.sales[mine][np.argsort(rows.dates[mine])].tolist()
