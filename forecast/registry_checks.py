"""The registry's verifier: a version's checksum, compatibility, load, compile, and its check in a child process.

A version can only become an alias target after it passed :meth:`Verifier.verify` in a child
process (:meth:`Verifier.check`): checksum, compatibility, the model text's structure, its
features, load, and the same finite predictions from the single-row and the batch path (for
compiled trees: their features, and their recorded reference forecasts).  A model that
crashes LightGBM takes down that child, never the caller.  :meth:`Verifier.check` imports
no LightGBM (a web worker may call it); :meth:`Verifier.load`, :meth:`Verifier.verify` and
:meth:`Verifier.compile` import it and belong in a mule or a CLI.  The files come from a
:class:`forecast.registry_files.RegistryFiles`, never from paths built here.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forecast.child_check import check_versions
from forecast.compiled import CompileReport, Reference, compile_trees, load_compiled
from forecast.errors import CorruptVersion, IncompatibleVersion, RegistryError
from forecast.features import FEATURE_SETS, FeatureSet, Rows
from forecast.intervals import Calibration
from forecast.modeltext import check_model_text
from forecast.registry_files import MODEL_FILE, RegistryFiles, sha256_text
from forecast.trend import Trend

if TYPE_CHECKING:
    from forecast.model import Predictor

logger = logging.getLogger(__name__)

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
SMOKE_ROW_COUNT = 8  # rows verify() scores on both paths, spread over the version's domain
DOMAIN_DATES = 8  # dates per store and item of the reference rows that compiled trees are checked on
# Compiled trees sum in blocks, LightGBM tree by tree: the last bits of a sum may differ (forecast/compiled.py);
# none may for a feature set with ``exact_sum``, compiled to add the trees in LightGBM's order.
COMPILED_TOLERANCE = 1e-9


def compiled_tolerance(feature_set: FeatureSet) -> float:
    """How far a version's compiled trees may forecast from LightGBM: 0 for a feature set with ``exact_sum``."""
    return 0.0 if feature_set.exact_sum else COMPILED_TOLERANCE


class Verifier:
    """Checks, loads and compiles the versions of one model's :class:`RegistryFiles`."""

    def __init__(self, files: RegistryFiles) -> None:
        self.files = files

    def load(self, ref: str, compiled: bool = True) -> Predictor:
        """Load a version or alias target after checking checksum and compatibility.

        With ``compiled``, the version's compiled trees score its rows when they were made
        from this model text for this machine kind (:mod:`forecast.compiled`), and LightGBM
        is not loaded; otherwise, and when they were not, LightGBM scores (logged, with the
        reason).  Raises :class:`VersionNotFound`, :class:`CorruptVersion` or
        :class:`IncompatibleVersion`.  Call only in a process that predicts, after fork
        (see :mod:`forecast.model`).
        """
        from forecast.model import Predictor  # deferred: LightGBM and compiled trees are loaded after fork

        metadata = self.files.metadata(ref)
        version = metadata["version"]
        feature_set = check_compatible(metadata)
        model_text = self.model_text(version, metadata)
        try:
            trend = Trend.from_dict(metadata["trend"]) if feature_set.log_target else None
        except (KeyError, TypeError, ValueError) as exc:  # a damaged metadata.json
            raise CorruptVersion(f"version {version}: unreadable trend ({exc.__class__.__name__})") from exc
        try:
            Calibration.of_version(metadata)  # its bands are served from the metadata (app/forecasting.py)
        except ValueError as exc:
            raise CorruptVersion(f"version {version}: its interval calibration cannot be used: {exc}") from exc
        if compiled:
            checksum = metadata["checksum"][MODEL_FILE]
            trees, why_not = load_compiled(self.files.compiled_paths(version), checksum, feature_set.exact_sum)
            if trees is not None:
                return Predictor(trees, trend, version, feature_set)
            logger.info("%s %s: scoring with LightGBM (compiled trees: %s)", self.files.model, version, why_not)
        try:
            return Predictor.from_model_text(model_text, trend, version, feature_set)
        except Exception as exc:  # LightGBM raises its own error type, or others on bad text
            raise CorruptVersion(f"version {version}: model does not load ({exc.__class__.__name__})") from exc

    def compiled_state(self, ref: str) -> str:
        """Why a version's compiled trees would not be used here ("" when they would); loads them to know."""
        metadata = self.files.metadata(ref)
        artefact = self.files.compiled_paths(metadata["version"])
        feature_set = FEATURE_SETS.get(str(metadata.get("feature_version")))  # an unknown one loads nothing anyway
        exact_sum = feature_set is not None and feature_set.exact_sum
        return load_compiled(artefact, metadata.get("checksum", {}).get(MODEL_FILE, ""), exact_sum)[1]

    def compile(self, ref: str) -> CompileReport:
        """Compile a version's trees into the artefact beside its text (see :mod:`forecast.compiled`), with LightGBM's
        forecasts of the version's reference rows (:func:`domain_rows`).  Imports LightGBM and LLVM.

        Raises like :meth:`load`, and :class:`RegistryError` when the trees cannot be
        compiled or the folder cannot be written (a read-only registry).
        """
        metadata = self.files.metadata(ref)
        version, rows = metadata["version"], domain_rows(metadata)
        reference = Reference(rows, self.load(version, compiled=False).predict(rows))  # checks the model text too
        try:
            path, exact_sum = self.files.model_path(version), check_compatible(metadata).exact_sum
            checksum, artefact = metadata["checksum"][MODEL_FILE], self.files.compiled_paths(version)
            return compile_trees(path, artefact, checksum, reference, exact_sum)
        except OSError as exc:
            raise RegistryError(f"version {version}: cannot write its compiled trees ({exc.strerror})") from exc
        except RegistryError as exc:  # no linker, or it failed
            raise RegistryError(f"version {version}: {exc.message}") from exc
        except Exception as exc:  # LLVM or lleaves on a model it cannot compile
            raise RegistryError(f"version {version}: trees do not compile ({exc.__class__.__name__})") from exc

    def model_text(self, version: str, metadata: dict[str, Any]) -> str:
        """The version's model text, checked against its checksum and structure (no LightGBM).

        Raises :class:`CorruptVersion` or :class:`IncompatibleVersion`.
        """
        try:
            model_text = self.files.model_path(version).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptVersion(f"version {version}: unreadable {MODEL_FILE}") from exc
        if sha256_text(model_text) != metadata.get("checksum", {}).get(MODEL_FILE):
            raise CorruptVersion(f"version {version}: {MODEL_FILE} does not match its checksum")
        try:
            check_model_text(model_text, FEATURE_SETS[metadata["feature_version"]].names)
        except RegistryError as exc:
            raise exc.__class__(f"version {version}: {exc.message}") from exc
        return model_text

    def verify(self, ref: str, compiled: bool = True) -> Predictor:
        """Load a version and check it predicts; return the predictor (in this process: a mule, the CLI).

        Beyond :meth:`load`: compiled trees must take the feature set's features and forecast
        their reference rows (every store and item of the domain on a spread of dates) as
        LightGBM did when they were compiled, to :func:`compiled_tolerance` (LightGBM is
        not loaded).  LightGBM's trees must take exactly the feature set's features, and
        rows spread over the version's domain must get the same finite predictions from its
        single-row and batch paths (a model over other features does not).
        Raises like :meth:`load`, plus :class:`CorruptVersion` naming the mismatch.
        """
        predictor = self.load(ref, compiled)
        if predictor.compiled is not None:
            _check_compiled(predictor)
        else:
            _check_lightgbm(predictor, self.files.metadata(predictor.version))
        return predictor

    def verify_compiled(self, ref: str, lightgbm: Predictor) -> Predictor | None:
        """:meth:`verify` the version's compiled trees, and their recorded reference against ``lightgbm``'s forecasts
        of it (the version, verified and loaded with LightGBM): None when the version has no usable compiled trees.

        What ``registry verify`` runs before an alias may name the version.  Raises like :meth:`verify`.
        """
        predictor = self.verify(ref, compiled=True)
        if predictor.compiled is None:
            return None
        reference = predictor.compiled.reference
        difference = _largest_difference(reference.sales, lightgbm.predict(reference.rows))
        if not difference <= compiled_tolerance(predictor.feature_set):
            raise CorruptVersion(
                f"version {predictor.version}: the forecasts recorded with its compiled trees are up to "
                f"{difference:.3g} away from LightGBM's; compile it again (python -m forecast registry compile)"
            )
        return predictor

    def check(self, ref: str, timeout_s: float = 120) -> str:
        """:meth:`verify` ``ref`` in a child process (:mod:`forecast.child_check`; LightGBM never runs
        here); return the version.

        The child first compiles the version's trees if they are not (``FORECAST_COMPILED_TREES``),
        so every version an alias names has them; ``timeout_s`` must allow for that (seconds).
        Raises :class:`CorruptVersion` naming what happened (a crash, a hang), or what :meth:`verify`
        raised.
        """
        version = self.files.resolve(ref)
        wanted = (self.files.model, version)
        refusal = check_versions(self.files.root, python_executable(), [wanted], timeout_s)[wanted]
        if refusal is not None:
            raise refusal
        return version


def check_compatible(metadata: dict[str, Any]) -> FeatureSet:
    """The version's feature set; raises :class:`IncompatibleVersion` unless this code can serve the version."""
    import importlib.metadata

    version = metadata.get("version", "?")
    feature_set = FEATURE_SETS.get(str(metadata.get("feature_version")))
    if feature_set is None or metadata.get("feature_names") != list(feature_set.names):
        raise IncompatibleVersion(
            f"version {version}: built with feature version {metadata.get('feature_version')!r}, "
            f"this server computes feature versions {', '.join(repr(v) for v in FEATURE_SETS)}"
        )
    built_with = str(metadata.get("lightgbm_version", ""))
    running = importlib.metadata.version("lightgbm")
    if built_with.split(".")[0] != running.split(".")[0]:
        raise IncompatibleVersion(f"version {version}: built with LightGBM {built_with!r}, this server runs {running}")
    return feature_set


def smoke_rows(metadata: dict[str, Any]) -> Rows:
    """Rows spread over a version's domain (its first and last dates, its stores and items)."""
    domain, data = metadata["domain"], metadata["data"]
    first = dt.date.fromisoformat(data["first_date"])
    last = dt.date.fromisoformat(domain.get("last_date", data["trained_through"]))
    count = SMOKE_ROW_COUNT
    days = np.linspace(first.toordinal(), last.toordinal(), count).astype(int)
    dates = [dt.date.fromordinal(int(day)).isoformat() for day in days]
    stores, items = domain["stores"], domain["items"]
    return Rows.from_columns(dates, [stores[i * len(stores) // count] for i in range(count)],
                             [items[i * len(items) // count] for i in range(count)])  # fmt: skip


def _check_compiled(predictor: Predictor) -> None:
    """Raise unless ``predictor``'s compiled trees take its features and forecast their reference (see ``verify``)."""
    version, names = predictor.version, predictor.feature_set.names
    assert predictor.compiled is not None
    reference = predictor.compiled.reference
    if predictor.compiled.feature_count != len(names):
        raise IncompatibleVersion(
            f"version {version}: its compiled trees take {predictor.compiled.feature_count} features, not {len(names)}"
        )
    difference = _largest_difference(predictor.predict(reference.rows), reference.sales)
    if not difference <= compiled_tolerance(predictor.feature_set):
        raise CorruptVersion(
            f"version {version}: its compiled trees forecast up to {difference:.3g} away from LightGBM; "
            "compile it again (python -m forecast registry compile)"
        )


def _check_lightgbm(predictor: Predictor, metadata: dict[str, Any]) -> None:
    """Raise unless ``predictor``'s LightGBM trees take exactly its features and both paths agree (see ``verify``)."""
    version, names = predictor.version, predictor.feature_set.names
    assert predictor.booster is not None
    loaded = tuple(predictor.booster.feature_name())
    if loaded != names:
        raise IncompatibleVersion(f"version {version}: the loaded model's features {loaded} are not {names}")
    try:
        single, batch = predictor.predict_both_paths(smoke_rows(metadata))
    except Exception as exc:
        raise CorruptVersion(f"version {version}: smoke prediction failed ({exc.__class__.__name__})") from exc
    if not (np.all(np.isfinite(batch)) and np.array_equal(single, batch)):
        raise CorruptVersion(
            f"version {version}: the single-row and batch paths disagree or are not finite "
            f"(single {single[:3].tolist()}, batch {batch[:3].tolist()})"
        )


def _largest_difference(forecasts: np.ndarray, expected: np.ndarray) -> float:
    """The largest absolute difference, infinite when either side has a value that is not finite."""
    with np.errstate(invalid="ignore"):
        difference = np.abs(forecasts - expected)
    return float(np.max(difference, initial=0.0)) if np.all(np.isfinite(difference)) else float("inf")


def domain_rows(metadata: dict[str, Any]) -> Rows:
    """Every store and item of a version's domain, each on :data:`DOMAIN_DATES` dates spread over its range."""
    domain, data = metadata["domain"], metadata["data"]
    first = dt.date.fromisoformat(data["first_date"])
    last = dt.date.fromisoformat(domain.get("last_date", data["trained_through"]))
    days = np.linspace(first.toordinal(), last.toordinal(), DOMAIN_DATES).astype(np.int64) - _EPOCH_ORDINAL
    stores, items, dates = np.meshgrid(domain["stores"], domain["items"], days, indexing="ij")
    return Rows(dates.ravel().astype("datetime64[D]"), stores.ravel().astype(np.int64), items.ravel().astype(np.int64))


def python_executable() -> str:
    """This environment's Python, also from inside uWSGI, where ``sys.executable`` may be uwsgi itself or
    the interpreter a virtualenv was made from (without its packages): ``sys.prefix`` is the environment."""
    candidate = Path(sys.prefix) / "bin" / "python3"
    return str(candidate) if candidate.exists() else sys.executable
