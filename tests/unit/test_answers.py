"""The answer's fields (app/answers.py): a row's value and the rows' values of each field agree, in JSON and CSV."""

from __future__ import annotations

import jsonschema
import numpy as np
import orjson
import pytest

from app import openapi
from app.answers import ASKED_FIELDS, FIELDS, render, render_row
from app.prediction import Prediction
from app.views import ENDPOINTS
from serving.columns import Columns
from serving.settings import Settings

COLUMNS = Columns.of([16800, 16801, 17000], [1, 2, 10], [1, 50, 23])
PREDICTION = Prediction(np.array([12.5, 0.1 + 0.2, 72.4]), ("v1", "v2"), np.array([0, 1, 1], dtype=np.uint8))


@pytest.mark.parametrize("row", range(len(COLUMNS)))
def test_a_single_row_answer_is_that_row_of_a_batch_answer(row: int) -> None:
    """Each field's single-row getter and its rows' getter agree (the single row has a fast path of its own)."""
    batch = orjson.loads(b"".join(render(COLUMNS, None, PREDICTION, "application/json")))["predictions"]
    labels = (PREDICTION.versions[row],)
    one = Prediction(PREDICTION.sales[row : row + 1], labels)
    assert orjson.loads(render_row(COLUMNS.take(slice(row, row + 1)), one)) == batch[row]
    assert list(batch[row]) == [field.name for field in FIELDS]


def test_csv_writes_the_fields_json_writes() -> None:
    """The same values in both encodings: CSV's cells are JSON's values, written as text."""
    batch = orjson.loads(b"".join(render(COLUMNS, None, PREDICTION, "application/json")))["predictions"]
    header, *lines = b"".join(render(COLUMNS, None, PREDICTION, "text/csv")).decode().splitlines()
    names = header.split(",")
    for line, forecast in zip(lines, batch, strict=True):
        assert line.split(",") == [str(forecast[name]) for name in names]
    with_ids = b"".join(render(COLUMNS, np.array([7, 8, 9]), PREDICTION, "text/csv")).decode()
    assert with_ids == "id,sales\n7,12.5\n8,0.30000000000000004\n9,72.4\n"


def test_the_schema_of_a_forecast_names_the_fields_the_answer_writes() -> None:
    """A field added to FIELDS without its schema (app/schemas.py Forecast), or the other way round, fails here;
    the document's example is made of the fields' examples, so it validates against the schema."""
    document = openapi.build(ENDPOINTS, Settings())
    schema = document["components"]["schemas"]["Forecast"]
    assert list(schema["properties"]) == [field.name for field in FIELDS] + list(ASKED_FIELDS)
    assert jsonschema.Draft202012Validator(schema).is_valid(openapi.FORECAST_EXAMPLE)
