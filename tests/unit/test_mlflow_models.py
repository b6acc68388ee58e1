"""Which MLflow models are accepted and how they are read (forecast/mlflow_models.py), the followed-models setting
and the canary weight (forecast/mlflow_sync.py), and what a run records (forecast/mlflow_record.py): the logic, with
files built here.  A real MLflow server: tests/stack/test_mlflow.py."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest

from forecast.errors import ImportRefused, RegistryError
from forecast.features import FEATURE_SETS, FEATURE_VERSION
from forecast.mlflow_models import ModelVersion, booster_text_from_skops, fetch, legacy_metadata, lightgbm_flavor
from forecast.mlflow_record import flat_metrics, mlmodel
from forecast.mlflow_sync import BadWeight, Followed, _names_already, _weight, parse_followed
from forecast.registry import Registry
from forecast.sources import Candidate

# The MLmodel file MLflow 3.18 writes for an LGBMRegressor (mlflow.lightgbm.log_model), trimmed.
REGRESSOR_MLMODEL = """artifact_path: mlflow-artifacts:/0/models/m-a4/artifacts
flavors:
  lightgbm:
    code: null
    data: model.skops
    lgb_version: 4.7.0
    model_class: lightgbm.sklearn.LGBMRegressor
    serialization_format: skops
    skops_trusted_types:
    - lightgbm.basic.Booster
  python_function:
    data: model.skops
    loader_module: mlflow.lightgbm
mlflow_version: 3.18.0
"""
HEADER = ("tree\nversion=v4\nnum_class=1\nmax_feature_idx=4\nfeature_names=store item month weekday year\n"
          "feature_infos=[1:10] [1:50] [1:12] [0:6] [2013:2017]\ntree_sizes=10\n\nTree=0\n")  # fmt: skip


def found(tags: dict[str, str] | None = None) -> ModelVersion:
    return ModelVersion("sales", "3", "mlflow-artifacts:/0/models/m/artifacts", "run", tags or {})


def test_the_lightgbm_flavor_is_read_from_mlflows_mlmodel_and_ours() -> None:
    flavor = lightgbm_flavor(REGRESSOR_MLMODEL)
    assert flavor is not None
    assert (flavor["data"], flavor["model_class"]) == ("model.skops", "lightgbm.sklearn.LGBMRegressor")
    ours = lightgbm_flavor(mlmodel({"lightgbm_version": "4.7.0", "created_at": "2026-12-08T00:00:00+00:00"}, "r1"))
    assert ours == {"code": "null", "data": "model.txt", "lgb_version": "4.7.0",
                    "model_class": "lightgbm.basic.Booster"}  # fmt: skip
    assert lightgbm_flavor(REGRESSOR_MLMODEL.replace("  lightgbm:", "  sklearn:")) is None


def skops(schema: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def regressor_schema(text: str, cls: str = "LGBMRegressor") -> dict[str, object]:
    """The nesting skops gives an LGBMRegressor: its ``_Booster``'s ``_handle`` a JSON string of the model text."""
    handle = {"__class__": "str", "__loader__": "JsonNode", "content": json.dumps(text), "is_json": True}
    booster = {"__class__": "Booster", "__module__": "lightgbm.basic", "content": {"content": {"_handle": handle}}}
    return {"__class__": cls, "__module__": "lightgbm.sklearn", "content": {"content": {"_Booster": booster}}}


def test_an_lgbmregressor_saved_by_skops_gives_its_boosters_model_text_without_unpickling() -> None:
    assert booster_text_from_skops(skops(regressor_schema(HEADER)), "m") == HEADER
    with pytest.raises(ImportRefused, match="not an LGBMRegressor"):
        booster_text_from_skops(skops(regressor_schema(HEADER, "LGBMClassifier")), "m")
    with pytest.raises(ImportRefused, match="not an LGBMRegressor saved by skops"):
        booster_text_from_skops(b"PK not a zip", "m")


def test_a_ray_features_models_domain_comes_from_its_trees_unless_its_tags_give_one() -> None:
    drawn = legacy_metadata(HEADER, {}, "m")
    assert (drawn["domain"]["stores"], drawn["domain"]["items"][-1]) == (list(range(1, 11)), 50)
    assert drawn["data"] == {"first_date": "2013-01-01", "trained_through": "2018-12-31"}
    assert "guardrails" not in drawn
    tags = {"min_date": "2018-01-01", "max_date": "2018-03-31", "store_id_max": "10", "item_id_max": "50",
            "max_value": "200"}  # fmt: skip
    given = legacy_metadata(HEADER, tags, "m")
    assert given["domain"]["last_date"] == "2018-03-31"
    assert given["guardrails"]["max_value"] == 200.0
    with pytest.raises(ImportRefused, match="min_date='2018-13-01' is not a date"):
        legacy_metadata(HEADER, {"min_date": "2018-13-01"}, "m")
    with pytest.raises(ImportRefused, match="does not record the years"):
        legacy_metadata(HEADER.replace("[2013:2017]", "none"), {}, "m")


def test_followed_models_are_name_model_pairs_and_a_bare_name_is_the_default_model() -> None:
    assert parse_followed("sales, promo forecaster=promo") == [Followed("sales", "default"),
                                                                Followed("promo forecaster", "promo")]  # fmt: skip
    assert parse_followed("") == []
    with pytest.raises(RegistryError, match="two MLflow models to one of ours"):
        parse_followed("a=x,b=x")
    with pytest.raises(RegistryError, match="is not a model name"):
        parse_followed("a=Not Ours")


def test_a_canary_takes_its_weight_from_its_tag_and_production_none() -> None:
    assert _weight(found({"forecast.canary_weight": "25"}), "canary") == 25
    assert _weight(found(), "production") is None
    with pytest.raises(BadWeight, match=r"set its tag forecast\.shadow_weight"):
        _weight(found(), "shadow")
    with pytest.raises(BadWeight, match="is not a percent"):
        _weight(found({"forecast.canary_weight": "150"}), "canary")


def test_a_runs_metrics_are_every_holdout_number_and_the_backtest_coverage() -> None:
    card = {"metrics": {"holdout": {"rows": 46000, "model": {"smape": 12.79}, "baseline_name": "seasonal naive"}},
            "intervals": {"coverage": {"day/series/1": {"80": 80.46, "95": 95.3}}}}  # fmt: skip
    assert flat_metrics(card) == {"holdout.rows": 46000.0, "holdout.model.smape": 12.79,
                                  "coverage.day.series.1.80": 80.46, "coverage.day.series.1.95": 95.3}  # fmt: skip
    assert flat_metrics({"metrics": {}, "intervals": None}) == {}


class Artifacts:
    """A tracking server's artifact store for one version: file name -> bytes (the logic only; a real one in
    tests/stack/test_mlflow.py)."""

    tracking_uri = "http://mlflow.test"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def list_artifacts(self, artifact_uri: str) -> list[str]:
        return list(self.files)

    def download(self, artifact_uri: str, name: str) -> bytes:
        return self.files[name]


BOOSTER_MLMODEL = REGRESSOR_MLMODEL.replace("model.skops", "model.lgb").replace(
    "sklearn.LGBMRegressor", "basic.Booster"
)


def whole_model(names: str = "store item month weekday year") -> str:
    text = HEADER.replace("store item month weekday year", names)
    text = text.replace("max_feature_idx=4", f"max_feature_idx={len(names.split()) - 1}")
    return text.replace("tree_sizes=10\n", "") + "end of trees\n"


def fetched(files: dict[str, bytes]) -> Candidate:
    return fetch(Artifacts(files), found())  # Artifacts: the calls fetch makes, not a server


def test_a_booster_or_a_skops_regressor_over_the_ray_features_is_a_candidate_with_its_source() -> None:
    text = whole_model()
    for files in ({"MLmodel": BOOSTER_MLMODEL.encode(), "model.lgb": text.encode()},
                  {"MLmodel": REGRESSOR_MLMODEL.encode(), "model.skops": skops(regressor_schema(text))}):  # fmt: skip
        candidate = fetched(files)
        assert (candidate.model_text, candidate.feature_set.version) == (text, "legacy-1-weekday")
        assert candidate.metadata["source"] == {"mlflow": found().source(Artifacts.tracking_uri)}
    named_day = fetched({"MLmodel": BOOSTER_MLMODEL.encode(), "model.lgb": whole_model("store item month day year")
                         .encode()})  # fmt: skip
    assert named_day.feature_set.version == "legacy-1"


def test_ours_is_taken_with_its_metadata_and_everything_else_is_refused_saying_what_was_expected() -> None:
    ours = whole_model(" ".join(FEATURE_SETS[FEATURE_VERSION].names))
    card = {"feature_version": FEATURE_VERSION, "version": "v7", "checksum": {}, "domain": {"stores": [1]}}
    candidate = fetched({"model.txt": ours.encode(), "metadata.json": json.dumps(card).encode()})
    assert candidate.metadata["domain"] == {"stores": [1]}
    assert "version" not in candidate.metadata  # the local registry names it
    refusals = {
        "unpickling runs code": {"MLmodel": REGRESSOR_MLMODEL.replace("model.skops", "model.pkl").encode()},
        "has no lightgbm flavor": {"MLmodel": REGRESSOR_MLMODEL.replace("  lightgbm:", "  sklearn:").encode()},
        "not a model this service can serve": {"model.onnx": b""},
        "are not a feature set this service knows; expected store item month weekday year": {
            "MLmodel": BOOSTER_MLMODEL.encode(), "model.lgb": whole_model("store item price weekday year").encode()},
        "log it with `train --mlflow`": {"MLmodel": BOOSTER_MLMODEL.encode(), "model.lgb": ours.encode()},
        "cut short": {"MLmodel": BOOSTER_MLMODEL.encode(),
                      "model.lgb": whole_model().removesuffix("end of trees\n").encode()},
    }  # fmt: skip
    for reason, files in refusals.items():
        with pytest.raises(ImportRefused, match=re.escape(reason)):
            fetched(files)


def test_an_alias_naming_the_same_model_text_under_another_version_is_not_moved(registry: Registry) -> None:
    """Pods sharing a registry may each register one MLflow version; the alias must not flap between the two."""
    twin = registry.register(registry.model_path("v1").read_text(), registry.metadata("v1"))
    assert _names_already(registry, "production", "v1", None)
    assert _names_already(registry, "production", twin, None)
    assert not _names_already(registry, "production", twin, 10)  # a weight that changed is a change
    assert not _names_already(registry, "canary", "v1", 10)  # not set
    other = registry.register(registry.model_path("v1").read_text() + "\n", registry.metadata("v1"))
    assert not _names_already(registry, "production", other, None)
