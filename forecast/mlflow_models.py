"""An MLflow model version as a version of ours: which MLflow models this service accepts, and how.

:func:`fetch` reads a registered model version's artifacts through the tracking server
(:mod:`forecast.mlflow_api`) and returns a :class:`forecast.sources.Candidate`:

- **ours**, logged by ``python -m forecast train --mlflow`` (:mod:`forecast.mlflow_record`):
  ``model.txt`` and ``metadata.json`` (the trend, the domain, the calibration), taken as they are;
- **MLflow's own ``lightgbm`` flavor** (``mlflow.lightgbm.log_model``): a ``Booster`` (``model.lgb``,
  LightGBM's model text) or an ``LGBMRegressor`` saved with skops (``model.skops``, MLflow 3's
  default: a zip of JSON holding the Booster's model text, read here as data, never unpickled).
  Its trees must take the Ray Serve service's features (``store item month weekday year``, or
  ``day`` for weekday as the original named it): our own features need our metadata, which a
  plain flavor does not carry.  Its domain comes from the version's tags when set (the original
  registry file's names: ``min_date``, ``max_date``, ``store_id_max``, ``item_id_max``, and
  ``max_value`` for its output cap), else from the model: the stores and items its trees saw
  (``feature_infos``), its training years through the year after.

Anything else is refused (:class:`forecast.errors.ImportRefused`) saying what was expected: a
pickled model (``model.pkl``) is never loaded, as unpickling runs whatever it holds.  No LightGBM
here; the version is verified in a child process when it is added (:func:`forecast.sources.add_version`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

from forecast.errors import ImportRefused, RegistryError
from forecast.features import FEATURE_SETS, FEATURE_VERSION, LEGACY_FEATURE_VERSION, LEGACY_WEEKDAY_FEATURE_VERSION
from forecast.legacy import Guardrails
from forecast.mlflow_api import MlflowApi
from forecast.modeltext import check_model_text, header
from forecast.registry_files import MODEL_FILE
from forecast.sources import Candidate

METADATA_ARTIFACT = "metadata.json"
MLMODEL = "MLmodel"
BOOSTER_FILE = "model.lgb"  # mlflow.lightgbm's file for a Booster: LightGBM's model text
SKOPS_FILE = "model.skops"  # for an LGBMRegressor since MLflow 3 (skops serialisation)
PICKLE_FILE = "model.pkl"  # for an LGBMRegressor before: refused
LEGACY_SETS = (FEATURE_SETS[LEGACY_FEATURE_VERSION], FEATURE_SETS[LEGACY_WEEKDAY_FEATURE_VERSION])
GUARDRAIL_TAGS = ("min_date", "max_date", "store_id_max", "item_id_max", "max_value")
_RANGE = re.compile(r"\[(-?\d+):(-?\d+)\]")


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version in MLflow: where its artifacts are, the run and the tags it has."""

    name: str
    version: str
    artifact_uri: str
    run_id: str
    tags: dict[str, str]

    @classmethod
    def get(cls, api: MlflowApi, name: str, version: str) -> ModelVersion:
        """Read it from the tracking server (two calls: the version, and where its artifacts are)."""
        found = api.get("model-versions/get", name=name, version=version)["model_version"]
        uri = api.get("model-versions/get-download-uri", name=name, version=version)["artifact_uri"]
        tags = {tag["key"]: tag["value"] for tag in found.get("tags", [])}
        return cls(name, version, str(uri), str(found.get("run_id", "")), tags)

    @property
    def label(self) -> str:
        return f"MLflow model {self.name!r} version {self.version}"

    def source(self, tracking_uri: str) -> dict[str, str]:
        """Where it came from, for the version's metadata (``source.mlflow``)."""
        return {"tracking_uri": tracking_uri, "name": self.name, "version": self.version, "run_id": self.run_id,
                "artifact_uri": self.artifact_uri}  # fmt: skip


def fetch(api: MlflowApi, found: ModelVersion) -> Candidate:
    """The model ``found`` holds, as a candidate version; raises :class:`ImportRefused` saying why it is not one.

    :class:`forecast.mlflow_api.MlflowUnreachable` passes through: the server, not the model, failed.
    """
    files = set(api.list_artifacts(found.artifact_uri))
    if {MODEL_FILE, METADATA_ARTIFACT} <= files:
        return _ours(api, found)
    if MLMODEL not in files:
        raise ImportRefused(f"{found.label}: no {MLMODEL} file, nor this service's {MODEL_FILE} and "
                            f"{METADATA_ARTIFACT}: not a model this service can serve")  # fmt: skip
    text = _flavor_model_text(api, found, files)
    return _ray_features(text, found, api.tracking_uri)


def _ours(api: MlflowApi, found: ModelVersion) -> Candidate:
    text = _text(api.download(found.artifact_uri, MODEL_FILE), found, MODEL_FILE)
    try:
        metadata = json.loads(api.download(found.artifact_uri, METADATA_ARTIFACT))
        feature_set = FEATURE_SETS[metadata["feature_version"]]
    except (ValueError, KeyError, TypeError):
        raise ImportRefused(f"{found.label}: {METADATA_ARTIFACT} is not this service's version metadata") from None
    _check(text, feature_set.names, found)
    kept = {k: v for k, v in metadata.items() if k not in ("version", "checksum", "feature_names", "feature_version")}
    return Candidate(text, {**kept, "source": {"mlflow": found.source(api.tracking_uri)}}, feature_set,
                     reuse_same_text=True)  # fmt: skip


def _flavor_model_text(api: MlflowApi, found: ModelVersion, files: set[str]) -> str:
    """The LightGBM model text of a ``lightgbm`` flavor: a Booster's file, or the Booster inside skops."""
    flavor = lightgbm_flavor(api.download(found.artifact_uri, MLMODEL).decode(errors="replace"))
    if flavor is None:
        raise ImportRefused(f"{found.label}: its {MLMODEL} has no lightgbm flavor (mlflow.lightgbm.log_model)")
    data, model_class = flavor.get("data", ""), flavor.get("model_class", "")
    if data == BOOSTER_FILE and data in files:
        return _text(api.download(found.artifact_uri, data), found, data)
    if data == SKOPS_FILE and data in files and model_class.endswith("LGBMRegressor"):
        return booster_text_from_skops(api.download(found.artifact_uri, data), found.label)
    if data == PICKLE_FILE:
        raise ImportRefused(f"{found.label}: a pickled model ({PICKLE_FILE}) is not loaded (unpickling runs "
                            "code); log a Booster, or an LGBMRegressor with MLflow 3 (skops)")  # fmt: skip
    raise ImportRefused(f"{found.label}: a lightgbm flavor of {model_class or 'an unknown class'} in {data!r}; "
                        f"expected a Booster ({BOOSTER_FILE}) or an LGBMRegressor ({SKOPS_FILE})")  # fmt: skip


def lightgbm_flavor(mlmodel: str) -> dict[str, str] | None:
    """The ``key: value`` lines of an MLmodel file's ``flavors: lightgbm:`` block (None: no such flavor).

    MLmodel is YAML; this reads only the two-level block MLflow writes, so the web workers need no
    YAML parser for it.
    """
    block: dict[str, str] | None = None
    section = flavor = ""
    for line in mlmodel.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        key, _, value = line.strip().partition(":")
        if indent == 0:
            section = key
        elif section == "flavors" and indent == 2:
            flavor = key
            block = {} if key == "lightgbm" else block
        elif section == "flavors" and flavor == "lightgbm" and indent == 4 and block is not None and value.strip():
            block[key] = value.strip().strip("'\"")
    return block


def booster_text_from_skops(data: bytes, label: str) -> str:
    """The Booster's model text inside a skops file of an ``LGBMRegressor`` (its ``_Booster``'s ``_handle``)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
        if schema.get("__class__") != "LGBMRegressor":
            raise ImportRefused(f"{label}: a skops file of {schema.get('__class__')}, not an LGBMRegressor")
        booster = schema["content"]["content"]["_Booster"]["content"]["content"]
        text = json.loads(booster["_handle"]["content"])
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError):
        raise ImportRefused(f"{label}: {SKOPS_FILE} is not an LGBMRegressor saved by skops") from None
    if not isinstance(text, str):
        raise ImportRefused(f"{label}: {SKOPS_FILE} holds no LightGBM model text")
    return text


def _ray_features(text: str, found: ModelVersion, tracking_uri: str) -> Candidate:
    """A flavor's model over the Ray Serve service's features, with its domain; else refused saying why."""
    names = tuple(_header(text, found).get("feature_names", "").split())
    feature_set = next((s for s in LEGACY_SETS if s.names == names), None)
    if feature_set is None:
        ours = " ".join(FEATURE_SETS[FEATURE_VERSION].names)
        hint = f" (this service's own features: log it with `train --mlflow`, which adds {METADATA_ARTIFACT})"
        raise ImportRefused(
            f"{found.label}: its features {' '.join(names) or '(none)'} are not a feature set this service knows; "
            f"expected {' '.join(LEGACY_SETS[1].names)} (the Ray Serve service's; 'day' for weekday also)"
            + (hint if names == FEATURE_SETS[FEATURE_VERSION].names else f", or {ours} with {METADATA_ARTIFACT}")
        )
    _check(text, feature_set.names, found)
    metadata = legacy_metadata(text, found.tags, found.label)
    metadata["source"] = {"mlflow": found.source(tracking_uri)}
    return Candidate(text, metadata, feature_set, reuse_same_text=True)


def legacy_metadata(text: str, tags: dict[str, str], label: str) -> dict[str, Any]:
    """A Ray-features model's metadata: its domain from the version's tags, else from the model (module docstring)."""
    infos = _header(text, label).get("feature_infos", "").split()
    stores = _ids(tags.get("store_id_max"), infos, 0, label, "store")
    items = _ids(tags.get("item_id_max"), infos, 1, label, "item")
    years = _range(infos, 4, label, "year")
    first = tags.get("min_date") or f"{years[0]:04d}-01-01"
    last = tags.get("max_date") or f"{years[1] + 1:04d}-12-31"
    for name, day in (("min_date", first), ("max_date", last)):
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise ImportRefused(f"{label}: tag {name}={day!r} is not a date (YYYY-MM-DD)") from None
    metadata: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "lightgbm_version": importlib.metadata.version("lightgbm"),
        "data": {"first_date": first, "trained_through": last},
        "domain": {"stores": stores, "items": items, "last_date": last},
        "metrics": {},
    }
    if all(tags.get(name) for name in GUARDRAIL_TAGS):  # the original's registry file, as tags: its exact answers
        given = {"input_guardrails": {name: tags[name] for name in GUARDRAIL_TAGS[:4]},
                 "output_guardrails": {"max_value": tags["max_value"]}}  # fmt: skip
        try:
            metadata["guardrails"] = Guardrails.from_registry_file(given).as_metadata()
        except ImportRefused as exc:
            raise ImportRefused(f"{label}: {exc.message}") from None
    return metadata


def _ids(tag: str | None, infos: list[str], index: int, label: str, what: str) -> list[int]:
    if tag:
        try:
            return list(range(int(tag) + 1))  # from 0, as the original's guardrails check
        except ValueError:
            raise ImportRefused(f"{label}: tag {what}_id_max={tag!r} is not a whole number") from None
    low, high = _range(infos, index, label, what)
    return list(range(max(low, 0), high + 1))


def _range(infos: list[str], index: int, label: str, what: str) -> tuple[int, int]:
    """The ``[low:high]`` LightGBM recorded for feature ``index`` (a numerical feature's range)."""
    match = _RANGE.fullmatch(infos[index]) if index < len(infos) else None
    if match is None:
        raise ImportRefused(f"{label}: the model does not record the {what}s it saw (feature_infos); "
                            f"set the version's tags {', '.join(GUARDRAIL_TAGS[:4])}")  # fmt: skip
    return int(match.group(1)), int(match.group(2))


def _header(text: str, found: ModelVersion | str) -> dict[str, str]:
    label = found if isinstance(found, str) else found.label
    try:
        return header(text)
    except RegistryError as exc:
        raise ImportRefused(f"{label}: {exc.message}") from None


def _check(text: str, names: tuple[str, ...], found: ModelVersion) -> None:
    try:
        check_model_text(text, names)
    except RegistryError as exc:
        raise ImportRefused(f"{found.label}: {exc.message}") from None


def _text(data: bytes, found: ModelVersion, name: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ImportRefused(f"{found.label}: {name} is not text") from None
