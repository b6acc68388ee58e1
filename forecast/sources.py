"""Where a model version comes from: the one way every source adds a version to the registry.

A source makes a :class:`Candidate` (a LightGBM model text, what the version says about
itself, the feature set its trees take) and hands it to :func:`add_version`, which registers
it (or finds it, when the source asks to reuse a model text already there), verifies it in
a child process and promotes it when asked.  Today's sources:

- our training: :meth:`forecast.train.TrainResult.candidate` (``python -m forecast train``);
- the Ray Serve service's registry file: :meth:`forecast.legacy.LegacyModel.candidate`
  (``python -m forecast import-legacy``, ``/reload`` with a legacy URL);
- an MLflow model version: :func:`forecast.mlflow_models.fetch` (a pod following MLflow's aliases,
  :mod:`forecast.mlflow_sync`).

A new source is one module: fetch the model text and its description, build a
:class:`Candidate`, call :func:`add_version` (and a CLI command that calls it).  Nothing in it
knows the registry's layout.  The metadata a candidate must carry, for the verifier and the
app (the registry adds ``version``, ``checksum``, ``feature_names`` and ``feature_version``):

- ``created_at`` (ISO 8601) and ``lightgbm_version`` (the major version must match the server's);
- ``data``: ``first_date`` and ``trained_through`` (ISO dates), ``domain``: ``stores`` and
  ``items`` (lists of ints) and optionally ``last_date``: the rows verification scores;
- ``trend`` (:meth:`forecast.trend.Trend.to_dict`) when the feature set has ``log_target``;
- ``metrics`` (may be empty) and whatever says where it came from (``source``, ``training``).

No LightGBM here (verification runs it in a child): a web worker may add a version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from forecast.features import FEATURE_SETS, FEATURE_VERSION, FeatureSet
from forecast.registry import Registry, sha256_text

Metadata = dict[str, object]  # a JSON object: see the module's docstring for the fields a version needs


@dataclass(frozen=True)
class Candidate:
    """A model a source offers as a version: its text, its metadata, the feature set its trees take.

    ``reuse_same_text``: a model text already registered is that version, not a new one (an
    import run twice registers once); our training registers every run anew.
    """

    model_text: str
    metadata: Metadata
    feature_set: FeatureSet = field(default_factory=lambda: FEATURE_SETS[FEATURE_VERSION])
    reuse_same_text: bool = False


class VersionSource(Protocol):
    """Anything that can offer a model as a version (a training result, a fetched registry file)."""

    def candidate(self) -> Candidate:
        """The model and its description; raises the source's own error when it has none to offer."""
        ...


@dataclass(frozen=True)
class Added:
    """What :func:`add_version` did: the version, and whether it is new (False: the same text was there)."""

    version: str
    registered: bool


def add_version(
    registry: Registry,
    candidate: Candidate,
    promote: bool,
    verify: bool = True,
    on_registered: Callable[[str], None] = lambda _: None,
) -> Added:
    """Register ``candidate`` (unless it reuses a version), then promote it to ``production`` or only verify it.

    Verification runs in a child process (:meth:`Registry.check`, also inside
    :meth:`Registry.promote`): a model that crashes LightGBM takes down the child only, and a
    refused version is never promoted.  ``verify`` False with ``promote`` False registers
    without verifying (``train --no-promote``: promote verifies later).  ``on_registered`` is
    told a new version's name as soon as it is stored.  Raises what :meth:`Registry.check` raises.
    """
    found = registry.with_checksum(sha256_text(candidate.model_text)) if candidate.reuse_same_text else None
    if found is not None and promote and registry.aliases().get("production") == found:
        return Added(found, registered=False)  # unchanged, and verified when it was promoted
    version = found or registry.register(candidate.model_text, candidate.metadata, candidate.feature_set)
    if found is None:
        on_registered(version)
    if promote:
        registry.promote(version)  # verifies it first, in a child process
    elif verify:
        registry.check(version)
    return Added(version, registered=found is None)
