"""Following an MLflow model registry: its aliases become the local registry's, version by version.

``FORECAST_MLFLOW_MODELS`` maps MLflow registered models to ours (``sales=default,promo=promo``).
:meth:`MlflowFollower.pull` reads each one's aliases (``production``, ``canary``, ``shadow``; a
canary's or shadow's share of rows is the version's tag ``forecast.canary_weight`` or
``forecast.shadow_weight``, percent) and, for each that names a version not seen before, fetches it
(:func:`forecast.mlflow_models.fetch`), adds it to the local registry and points the local alias at
it (:meth:`forecast.registry.Registry.promote`: verified in a child process first).  The pod's
rollout (:mod:`app.rollout`) then rolls the local aliases out as it does any promote.  A canary
or shadow alias removed in MLflow is removed here; ``production`` only ever moves.

A version that is refused (its artifacts are not a model this service serves, or it does not
verify) leaves the local alias where it was: the last good version keeps serving, and the refusal
is reported (``model/mlflow:name/version`` -> why) and not tried again.  A tracking server that
does not answer raises :class:`forecast.mlflow_api.MlflowUnreachable`, changing nothing.  No
LightGBM, no Flask: a web worker runs this (app/mlflow_follow.py), so does the CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from forecast.errors import ImportRefused, RegistryError
from forecast.mlflow_api import MlflowApi, MlflowRefused
from forecast.mlflow_models import ModelVersion, fetch
from forecast.registry import ALIASES, DEFAULT_MODEL, Registry, check_model_name
from forecast.sources import add_version

logger = logging.getLogger(__name__)

WEIGHT_TAG = "forecast.{alias}_weight"  # a canary's or shadow's share of rows, percent, on the version it names


@dataclass(frozen=True)
class Followed:
    """An MLflow registered model (``name``) served as our model ``model``."""

    name: str
    model: str


def parse_followed(text: str) -> list[Followed]:
    """``FORECAST_MLFLOW_MODELS``: ``name=model`` pairs, comma-separated; a bare ``name`` is our default model.

    Raises :class:`RegistryError` for a model name ours cannot be, or one model followed twice.
    """
    found = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, model = entry.rpartition("=") if "=" in entry else (entry, "", DEFAULT_MODEL)
        found.append(Followed(name.strip(), check_model_name(model.strip())))
    models = [f.model for f in found]
    if len(set(models)) != len(models):
        raise RegistryError(f"FORECAST_MLFLOW_MODELS maps two MLflow models to one of ours: {text!r}")
    return found


@dataclass
class MlflowFollower:
    """One process's follower of MLflow's aliases into ``registry`` (see the module docstring)."""

    registry: Registry
    api: MlflowApi
    followed: list[Followed]
    _local: dict[tuple[str, str], str] = field(default_factory=dict)  # (MLflow name, version) -> our version
    _refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (MLflow name, version) -> why

    def pull(self) -> dict[str, str]:
        """Bring the local aliases to MLflow's; return the refusals of what MLflow names now (``model/mlflow:name``
        or ``model/mlflow:name/version`` -> why).

        Raises :class:`forecast.mlflow_api.MlflowUnreachable` when the server does not answer (the
        local aliases stay as the last pass left them).
        """
        refusals: dict[str, str] = {}
        named: set[tuple[str, str]] = set()
        for followed in self.followed:
            try:
                aliases = self._aliases(followed.name)
            except MlflowRefused as exc:  # no such registered model (yet): nothing to follow
                refusals[f"{followed.model}/mlflow:{followed.name}"] = exc.message
                continue
            named |= {(followed.name, version) for version in aliases.values()}
            refusals |= self._follow_model(followed, aliases)
        for key in set(self._refused) - named:  # an alias moved back to a refused version tries it afresh
            del self._refused[key]
        return refusals

    def _aliases(self, name: str) -> dict[str, str]:
        """Alias -> MLflow version, for the aliases of ours that MLflow sets on ``name``."""
        found = self.api.get("registered-models/get", name=name)["registered_model"]
        return {entry["alias"]: str(entry["version"]) for entry in found.get("aliases", [])
                if entry["alias"] in ALIASES}  # fmt: skip

    def _follow_model(self, followed: Followed, aliases: dict[str, str]) -> dict[str, str]:
        registry = self.registry.named(followed.model)
        refusals = {}
        for alias, mlflow_version in aliases.items():
            key = (followed.name, mlflow_version)
            try:
                self._follow(registry, followed, alias, mlflow_version)
            except BadWeight as exc:  # the tag may be set later: tried again next pass
                refusals[f"{followed.model}/mlflow:{followed.name}/{mlflow_version}"] = exc.message
            except (ImportRefused, RegistryError, MlflowRefused) as exc:
                self._refused[key] = exc.message
                logger.error("MLflow %s %s v%s refused: %s", followed.name, alias, mlflow_version, exc.message)
            if key in self._refused:
                refusals[f"{followed.model}/mlflow:{followed.name}/{mlflow_version}"] = self._refused[key]
        for alias in ("canary", "shadow"):  # removed in MLflow: removed here (production only ever moves)
            if alias not in aliases and registry.alias(alias) is not None:
                registry.rollback(alias)
                logger.info("MLflow %s has no %s: %s's removed", followed.name, alias, followed.model)
        return refusals

    def _follow(self, registry: Registry, followed: Followed, alias: str, mlflow_version: str) -> None:
        if (followed.name, mlflow_version) in self._refused:
            return
        found = ModelVersion.get(self.api, followed.name, mlflow_version)
        weight = _weight(found, alias)
        version = self._local_version(registry, found)
        if not _names_already(registry, alias, version, weight):
            registry.promote(version, alias, weight)  # verified in a child process first; raises if refused
            logger.info("MLflow %s %s v%s: %s %s -> %s", followed.name, alias, mlflow_version, followed.model,
                        alias, version)  # fmt: skip

    def _local_version(self, registry: Registry, found: ModelVersion) -> str:
        """Our version of an MLflow version: known to this process, else fetched and added (reused if its model
        text is already registered)."""
        key = (found.name, found.version)
        if key not in self._local:
            self._local[key] = add_version(registry, fetch(self.api, found), promote=False, verify=False).version
        return self._local[key]


class BadWeight(ImportRefused):
    """A canary or shadow version without a usable weight tag."""


def _names_already(registry: Registry, alias: str, version: str, weight: int | None) -> bool:
    """Whether ``alias`` names ``version``'s model text with ``weight`` already.  By checksum, not by name: pods
    sharing a registry may each register the same MLflow version (two names, one text), and must not move the
    alias back and forth between them."""
    current = registry.alias(alias)
    if current is None or current.weight != weight:
        return False
    return current.version == version or registry.checksum(current.version) == registry.checksum(version)


def _weight(found: ModelVersion, alias: str) -> int | None:
    """``production``: None; a canary's or shadow's weight from its tag, 0-100 (else refused)."""
    if alias == "production":
        return None
    tag = WEIGHT_TAG.format(alias=alias)
    try:
        weight = int(found.tags[tag])
    except (KeyError, ValueError):
        raise BadWeight(f"{found.label} is the {alias}: set its tag {tag} to the percent of rows "
                            f"it takes (0-100)") from None  # fmt: skip
    if not 0 <= weight <= 100:
        raise BadWeight(f"{found.label}: tag {tag}={weight} is not a percent (0-100)")
    return weight
