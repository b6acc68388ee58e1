"""Models in the Ray Serve service's style, built here (no file of that project is used).

The original served a LightGBM text model trained on ``[store, item, month, weekday, year]``
(feature names ``store item month day year``) with raw daily sales as the target (objective
``regression_l1``), listed by a small registry file.  These helpers train such models on the
generated data and write such registry files, for the tests of importing and serving them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from forecast.compiled import ArtefactPaths, Reference, compile_trees, load_compiled
from forecast.data import SalesData
from forecast.features import LEGACY_FEATURE_NAMES, Rows, build_legacy_features
from forecast.registry import sha256_text

# The original's published guardrails.
GUARDRAILS = {
    "input_guardrails": {"min_date": "2018-01-01", "max_date": "2018-03-31", "store_id_max": 10, "item_id_max": 50},
    "output_guardrails": {"max_value": 200.0},
}
# More trees than one of lleaves' default blocks (34): compiled in blocks, most of such a model's forecasts
# differ from LightGBM's in the last digits (the tests that use it assert that they do).
DIGITS_ROUNDS = 80


def train_legacy_model(data: SalesData, rounds: int = 30, names: tuple[str, ...] = LEGACY_FEATURE_NAMES) -> str:
    """A model text trained as the original was (on a sample of ``data``); ``names`` only to forge one."""
    sample = data.select(np.random.default_rng(rounds).random(len(data)) < 0.05)
    features = build_legacy_features(sample.rows)
    if len(names) != features.shape[1]:  # a model over another number of features
        features = np.column_stack([features, np.zeros((len(features), len(names) - features.shape[1]))])
    params = {"objective": "regression_l1", "learning_rate": 0.2, "num_leaves": 31, "verbose": -1, "seed": 0,
              "num_threads": 1, "deterministic": True}  # fmt: skip
    dataset = lgb.Dataset(features, label=sample.sales.astype(np.float64), feature_name=list(names))
    booster = lgb.train(params, dataset, num_boost_round=rounds)
    text: str = booster.model_to_string()
    return text


def original_prediction(model_text: str, rows: list[tuple[str, int, int]]) -> list[float]:
    """What the original computed, its way (not ours): ``Booster.predict`` on the integer rows
    ``[store, item, month, weekday, year]`` it built with ``datetime``."""
    booster = lgb.Booster(model_str=model_text)
    table = []
    for date, store, item in rows:
        day = dt.datetime.strptime(date, "%Y-%m-%d").date()
        table.append([store, item, day.month, day.weekday(), day.year])
    return [float(value) for value in booster.predict(np.array(table))]


def compiled_prediction(
    model_text: str, rows: list[tuple[str, int, int]], directory: Path, exact_sum: bool
) -> list[float]:
    """What compiled trees of ``model_text`` forecast for ``rows`` (the original's features), made in ``directory``
    (one per call: a process keeps the first library it loads from a path): with ``exact_sum`` False, summed in
    lleaves' blocks of 34 as our own versions are, which changes the last digits of such a model's forecasts."""
    directory.mkdir(parents=True)
    model_path, checksum = directory / "model.txt", sha256_text(model_text)
    model_path.write_text(model_text)
    table = Rows.from_columns(*zip(*rows, strict=True))
    artefact = ArtefactPaths(directory / "trees.so", directory / "trees.json")
    compile_trees(model_path, artefact, checksum, Reference(table, np.zeros(len(rows))), exact_sum)  # reference unused
    trees, why_not = load_compiled(artefact, checksum, exact_sum)
    assert trees is not None, why_not
    return [float(value) for value in trees.predict(build_legacy_features(table))]


def write_registry_file(directory: Path, model_url: str, **changes: Any) -> Path:
    """The original's ``model_registry.json`` naming ``model_url``, with its published guardrails."""
    path = directory / "model_registry.json"
    path.write_text(json.dumps({"model_type": "lightgbm", "model_file": model_url, **GUARDRAILS, **changes}))
    return path
