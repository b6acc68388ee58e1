"""``/forecast``'s answer writer (app/forecast_answers.py): every row's object and line, read back, is the forecast."""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from app.answers import interleave
from app.explain import Explanation
from app.forecast_answers import HorizonAnswer, render
from forecast.buckets import Granularity, Totals, date_buckets, series_groups

JANUARY_1_2018 = 17532  # days since 1970-01-01
STORES, ITEMS = np.array([1, 1, 2]), np.array([1, 5, 5])


def answer(granularity: Granularity, totals: Totals | None, explained: bool) -> HorizonAnswer:
    """Three series (or their totals) over 9 days from a Monday, 80 and 95% bands, explained or not."""
    buckets = date_buckets(JANUARY_1_2018, 9, granularity)
    groups = series_groups(STORES, ITEMS, totals)
    rows = len(buckets) * len(groups)
    sales = np.linspace(0.1, 70.3, rows) + 1e-7  # numbers of many digits
    lower, upper = np.stack([sales * 0.8, sales * 0.6], 1), np.stack([sales * 1.2, sales * 1.5], 1)
    explanation = Explanation(True, ("weekday", "month"), sales / 3, np.stack([sales / 7, sales / 11], 1))
    return HorizonAnswer("default", "v2", granularity, totals, (80.0, 95.0), groups, buckets, sales, lower, upper,
                         None, explanation if explained else None)  # fmt: skip


def expected(answer: HorizonAnswer) -> Iterator[dict[str, object]]:
    """The answer's forecasts as objects, built one at a time from its arrays."""
    n = 0
    for group in range(len(answer.groups)):
        for bucket in range(len(answer.buckets)):
            store, item = int(answer.groups.stores[group]), int(answer.groups.items[group])
            day = np.datetime64("1970-01-01") + int(answer.buckets.first_days[bucket])
            row: dict[str, object] = {"date": str(day)}
            if answer.granularity is Granularity.WEEK:
                row["days"] = int(answer.buckets.lengths[bucket])
            row |= {"store": store if store >= 0 else None, "item": item if item >= 0 else None,
                    "sales": float(answer.sales[n])}  # fmt: skip
            assert answer.lower is not None
            assert answer.upper is not None
            row["lower"] = {"80": float(answer.lower[n, 0]), "95": float(answer.lower[n, 1])}
            row["upper"] = {"80": float(answer.upper[n, 0]), "95": float(answer.upper[n, 1])}
            if answer.explanation is not None:
                weekday, month = answer.explanation.values[n].tolist()
                row["explanation"] = {"of": "1 + sales", "base": float(answer.explanation.base[n]),
                                      "factors": {"weekday": weekday, "month": month}}  # fmt: skip
            yield row
            n += 1


CASES = [(g, t, e) for g in Granularity for t in (None, *Totals) for e in (False, True)]


@pytest.mark.parametrize(("granularity", "totals", "explained"), CASES)
def test_the_json_answer_reads_back_as_every_forecast(granularity: Granularity, totals: Totals | None,
                                                      explained: bool) -> None:  # fmt: skip
    written = answer(granularity, totals, explained)
    read = orjson.loads(b"".join(render(written, "application/json")))
    assert read["forecasts"] == list(expected(written))
    assert read["model_version"] == "v2"
    assert read["granularity"] == granularity.value


@pytest.mark.parametrize(("granularity", "totals", "explained"), CASES)
def test_the_csv_answer_reads_back_as_every_forecast(granularity: Granularity, totals: Totals | None,
                                                     explained: bool) -> None:  # fmt: skip
    written = answer(granularity, totals, explained)
    lines = list(csv.DictReader(io.StringIO(b"".join(render(written, "text/csv")).decode())))
    assert len(lines) == len(written)
    for line, forecast in zip(lines, expected(written), strict=True):
        assert line["date"] == forecast["date"]
        assert float(line["sales"]) == forecast["sales"]
        assert line["store"] == ("" if forecast["store"] is None else str(forecast["store"]))
        assert line["item"] == ("" if forecast["item"] is None else str(forecast["item"]))
        assert float(line["lower_95"]) == forecast["lower"]["95"]  # type: ignore[index]
        assert float(line["upper_80"]) == forecast["upper"]["80"]  # type: ignore[index]
        if explained:
            assert float(line["month"]) == forecast["explanation"]["factors"]["month"]  # type: ignore[index]


def test_writing_an_answer_leaves_no_garbage_cycle() -> None:
    """A cycle would keep each piece's cells (most of an answer's memory) until the collector runs."""
    written = answer(Granularity.DAY, None, explained=True)
    gc.collect()
    gc.disable()
    try:
        b"".join(render(written, "application/json"))
        b"".join(render(written, "text/csv"))
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_interleave_writes_row_after_row_and_refuses_a_short_column() -> None:
    assert interleave(["<", ["a", "b"], "|", ["1", "2"], ">"], 2) == "<a|1><b|2>"
    with pytest.raises(ValueError, match="size"):
        interleave([["a", "b"], ","], 3)
