"""Recording our versions in MLflow: a run with the version's parameters and metrics, its files, a model version.

:func:`export_version` is what ``python -m forecast train --mlflow`` and ``registry export --mlflow``
call for each version (:mod:`forecast.cli`).  The run (experiment ``FORECAST_MLFLOW_EXPERIMENT``)
holds:

- parameters: the LightGBM parameters, the boosting rounds, the feature set, our version's name;
- metrics: every number of the version's holdout evaluation (``holdout.model.smape``, ...) and the
  interval calibration's backtest coverage per cell and level (``coverage.day.series.1.80``, percent);
- artifacts under ``model/``: ``model.txt`` (LightGBM's text), ``metadata.json`` (our model card,
  which a pod following MLflow reads back: :mod:`forecast.mlflow_models`) and an ``MLmodel`` with
  the ``lightgbm`` flavor, so ``mlflow.lightgbm.load_model("models:/name/1")`` gives the Booster.

The run's model is registered as a version of the MLflow model that ``FORECAST_MLFLOW_MODELS`` maps
ours to, tagged with our version and checksum: a version already there (the same checksum) is not
exported again.  :func:`set_alias` moves an MLflow alias (``registry promote`` with MLflow set), so
one command reaches every pod that follows MLflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from forecast.config import ModelSettings
from forecast.errors import RegistryError
from forecast.mlflow_api import MlflowApi, MlflowRefused
from forecast.mlflow_models import METADATA_ARTIFACT, MLMODEL
from forecast.mlflow_sync import WEIGHT_TAG, parse_followed
from forecast.registry import Registry
from forecast.registry_files import MODEL_FILE

ARTIFACT_DIR = "model"
CHECKSUM_TAG = "forecast.checksum"
VERSION_TAG = "forecast.version"


@dataclass(frozen=True)
class MlflowTarget:
    """Where the CLI records a model of ours: the tracking server, the MLflow model's name, the experiment."""

    api: MlflowApi
    name: str
    experiment: str

    @classmethod
    def of(cls, settings: ModelSettings, model: str) -> MlflowTarget:
        """From ``FORECAST_MLFLOW_*``: the MLflow model mapped to ``model``, else ``forecast-<model>``.

        Raises :class:`RegistryError` when no tracking server is set."""
        if not settings.mlflow_tracking_uri:
            raise RegistryError("set FORECAST_MLFLOW_TRACKING_URI to the MLflow tracking server (http://host:port)")
        names = {f.model: f.name for f in parse_followed(settings.mlflow_models or "")}
        api = MlflowApi(settings.mlflow_tracking_uri, settings.mlflow_timeout_s)
        return cls(api, names.get(model, f"forecast-{model}"), settings.mlflow_experiment)

    def export(self, registry: Registry, version: str) -> str:
        """:func:`export_version` of ``version`` to this target; its MLflow version."""
        return export_version(self.api, registry, version, self.name, self.experiment)


def export_version(api: MlflowApi, registry: Registry, version: str, name: str, experiment: str) -> str:
    """Log ``version`` as a run of ``experiment`` and register it as a version of MLflow's ``name``; that
    version's number (an existing one when MLflow already holds the same model text)."""
    metadata = registry.metadata(version)
    checksum = registry.checksum(version)
    _registered_model(api, name)
    existing = _with_checksum(api, name, checksum)
    if existing is not None:
        return existing
    run = api.post("runs/create", {
        "experiment_id": _experiment_id(api, experiment), "start_time": _now_ms(),
        "run_name": f"{registry.model} {version}",
        "tags": [{"key": "mlflow.runName", "value": f"{registry.model} {version}"}],
    })["run"]["info"]  # fmt: skip
    api.post("runs/log-batch", {"run_id": run["run_id"], "params": _params(metadata),
                                "metrics": _metrics(metadata, _now_ms())})  # fmt: skip
    folder = f"{run['artifact_uri']}/{ARTIFACT_DIR}"
    api.upload(folder, MODEL_FILE, registry.model_path(version).read_bytes())
    api.upload(folder, METADATA_ARTIFACT, registry.metadata_path(version).read_bytes())
    api.upload(folder, MLMODEL, mlmodel(metadata, run["run_id"]).encode())
    api.post("runs/update", {"run_id": run["run_id"], "status": "FINISHED", "end_time": _now_ms()})
    tags = [{"key": VERSION_TAG, "value": version}, {"key": CHECKSUM_TAG, "value": checksum},
            {"key": "forecast.model", "value": registry.model}]  # fmt: skip
    created = api.post("model-versions/create", {"name": name, "source": folder, "run_id": run["run_id"],
                                                 "tags": tags})["model_version"]  # fmt: skip
    return str(created["version"])


def set_alias(api: MlflowApi, name: str, alias: str, mlflow_version: str, weight: int | None = None) -> None:
    """Point MLflow's ``alias`` of ``name`` at ``mlflow_version`` (a canary's or shadow's weight as its tag)."""
    if weight is not None:
        api.post("model-versions/set-tag", {"name": name, "version": mlflow_version,
                                            "key": WEIGHT_TAG.format(alias=alias), "value": str(weight)})  # fmt: skip
    api.post("registered-models/alias", {"name": name, "alias": alias, "version": mlflow_version})


def remove_alias(api: MlflowApi, name: str, alias: str) -> None:
    """Remove MLflow's ``alias`` of ``name`` (``registry rollback`` of a canary or shadow); unset already is fine."""
    try:
        api.delete("registered-models/alias", {"name": name, "alias": alias})
    except MlflowRefused as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise


def mlmodel(metadata: dict[str, Any], run_id: str) -> str:
    """An MLmodel file with MLflow's ``lightgbm`` flavor over our model text: a Booster (YAML, as MLflow writes it)."""
    return (
        f"artifact_path: {ARTIFACT_DIR}\n"
        "flavors:\n"
        "  lightgbm:\n"
        "    code: null\n"
        f"    data: {MODEL_FILE}\n"
        f"    lgb_version: {metadata.get('lightgbm_version')}\n"
        "    model_class: lightgbm.basic.Booster\n"
        f"run_id: {run_id}\n"
        f"utc_time_created: '{metadata.get('created_at')}'\n"
    )


def flat_metrics(metadata: dict[str, Any]) -> dict[str, float]:
    """The version's numbers as MLflow metrics: ``holdout.*`` and ``coverage.<cell>.<level>`` (see the module)."""
    found = {f"holdout.{key}": value for key, value in _numbers(metadata.get("metrics", {}).get("holdout", {}))}
    coverage = (metadata.get("intervals") or {}).get("coverage", {})
    for cell, levels in coverage.items():
        for level, share in levels.items():
            found[f"coverage.{cell.replace('/', '.')}.{level}"] = float(share)
    return found


def _numbers(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            found += _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((prefix + key, float(value)))
    return found


def _metrics(metadata: dict[str, Any], at_ms: int) -> list[dict[str, Any]]:
    found = flat_metrics(metadata).items()
    return [{"key": key, "value": value, "timestamp": at_ms, "step": 0} for key, value in found]


def _params(metadata: dict[str, Any]) -> list[dict[str, str]]:
    training = metadata.get("training") or {}
    params = {f"lightgbm.{key}": value for key, value in (training.get("params") or {}).items()}
    params |= {"rounds": training.get("rounds"), "feature_version": metadata.get("feature_version"),
               "forecast.version": metadata.get("version"), "data.first_date": metadata.get("data", {}).get(
                   "first_date"), "data.trained_through": metadata.get("data", {}).get("trained_through")}  # fmt: skip
    return [{"key": key, "value": str(value)} for key, value in params.items() if value is not None]


def _experiment_id(api: MlflowApi, experiment: str) -> str:
    try:
        return str(api.get("experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"])
    except MlflowRefused as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    return str(api.post("experiments/create", {"name": experiment})["experiment_id"])


def _registered_model(api: MlflowApi, name: str) -> None:
    try:
        api.post("registered-models/create", {"name": name})
    except MlflowRefused as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _with_checksum(api: MlflowApi, name: str, checksum: str) -> str | None:
    """The MLflow version of ``name`` tagged with ``checksum``, if any."""
    query = f"name = '{name}' and tags.`{CHECKSUM_TAG}` = '{checksum}'"
    found = api.get("model-versions/search", filter=query).get("model_versions", [])
    return str(found[0]["version"]) if found else None


def _now_ms() -> int:
    return int(time.time() * 1000)
