"""The window ``/accuracy`` judges (app/actuals.py's ``window_of``): days asked, or the default days up to an end."""

from __future__ import annotations

import datetime as dt

import pytest

from app.actuals import window_of
from app.errors import InvalidInput


class NoStore:
    """A store never read: every case here gives an end."""

    def last_day(self) -> int | None:
        raise AssertionError("the store is not read when an end is given")


def test_a_default_window_that_would_start_before_year_1_is_refused_naming_end() -> None:
    """Found by schemathesis: ``GET /accuracy?end=0001-01-04`` answered 500 (a date before 0001-01-01)."""
    with pytest.raises(InvalidInput) as refused:
        window_of(NoStore(), None, dt.date(1, 1, 4), 28)
    assert refused.value.field == "end"
    assert "start before 0001-01-01" in refused.value.message
    window = window_of(NoStore(), None, dt.date(1, 1, 28), 28)
    assert window is not None
    assert (window.date(window.first_day), window.date(window.last_day), window.days) == (
        "0001-01-01",
        "0001-01-28",
        28,
    )
    given = window_of(NoStore(), dt.date(1, 1, 1), dt.date(1, 1, 4), 28)
    assert given is not None
    assert given.days == 4
