"""Train small LightGBM models the way an MLflow user would and log them with MLflow's own API (run by the
MLflow virtualenv's Python, not the service's).

Reads a JSON list of models on stdin, each ``{"name", "kind", "features", "seed", "tags", "rows"}``:

- ``kind``: ``booster`` (``lightgbm.train``, logged as a Booster: ``model.lgb``) or ``regressor``
  (``LGBMRegressor``, logged as MLflow 3 logs one: skops);
- ``features``: ``weekday`` or ``day`` (the Ray Serve service's ``store item month weekday year``, its
  weekday named either way) or ``price`` (a feature set the service does not know);
- ``rows``: ``[date, store, item]`` to predict with the logged model, as the model's own user would.

Writes a JSON list to the file named by its argument: each model's registered ``version``, ``run_id``
and ``predictions``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

FEATURES = {
    "weekday": ["store", "item", "month", "weekday", "year"],
    "day": ["store", "item", "month", "day", "year"],
    "price": ["store", "item", "price", "weekday", "year"],
}


def training_frame(seed: int, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Daily sales of 10 stores and 50 items over 2013-2017 with a weekly and a yearly season (a sample)."""
    rng = np.random.default_rng(seed)
    n = 20_000
    days = pd.to_datetime("2013-01-01") + pd.to_timedelta(rng.integers(0, 5 * 365, n), unit="D")
    stores, items = rng.integers(1, 11, n), rng.integers(1, 51, n)
    weekday = days.weekday.to_numpy()
    sales = (
        10
        + stores * 1.5
        + items * 0.8
        + 4 * (weekday >= 5)
        + 5 * np.sin(days.month.to_numpy() / 2)
        + rng.normal(0, 2, n)
    )
    frame = pd.DataFrame({"store": stores, "item": items, "month": days.month.to_numpy(), "weekday": weekday,
                          "year": days.year.to_numpy(), "price": rng.integers(1, 9, n)})  # fmt: skip
    frame["day"] = frame["weekday"]
    return frame[columns], sales


def feature_rows(rows: list[list[Any]], columns: list[str]) -> pd.DataFrame:
    table = []
    for date, store, item in rows:
        day = dt.date.fromisoformat(date)
        values = {"store": store, "item": item, "month": day.month, "weekday": day.weekday(), "day": day.weekday(),
                  "year": day.year, "price": 1}  # fmt: skip
        table.append([values[column] for column in columns])
    return pd.DataFrame(table, columns=columns)


def log_one(spec: dict[str, Any]) -> dict[str, Any]:
    columns = FEATURES[spec["features"]]
    frame, sales = training_frame(spec["seed"], columns)
    params = {"objective": "regression", "learning_rate": 0.2, "num_leaves": 15, "verbose": -1, "seed": spec["seed"],
              "num_threads": 1, "deterministic": True}  # fmt: skip
    if spec["kind"] == "booster":
        model: Any = lgb.train(params, lgb.Dataset(frame, label=sales), num_boost_round=20 + spec["seed"])
        booster = model
    else:
        model = lgb.LGBMRegressor(n_estimators=20 + spec["seed"], **params).fit(frame, sales)
        booster = model.booster_
    with mlflow.start_run() as run:
        # pip_requirements given: else MLflow infers them, importing the model in a subprocess (~10 s a model)
        info = mlflow.lightgbm.log_model(model, name="model", registered_model_name=spec["name"],
                                         pip_requirements=[f"lightgbm=={lgb.__version__}"])  # fmt: skip
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in spec.get("tags", {}).items():
        client.set_model_version_tag(spec["name"], version, key, value)
    predictions = booster.predict(feature_rows(spec["rows"], columns)).tolist()
    return {"version": version, "run_id": run.info.run_id, "predictions": predictions}


def main() -> None:
    """``log_models.py OUTPUT``: the specs on stdin, the answers in OUTPUT (MLflow prints its links on stdout)."""
    specs = json.load(sys.stdin)
    answers = [log_one(spec) for spec in specs]
    with open(sys.argv[1], "w") as output:
        json.dump(answers, output)


if __name__ == "__main__":
    main()
