"""A model registry on a plain directory (a local disk or a mounted volume).

Layout (the default model at the root, as before models had names; others under ``models/``)::

    <root>/versions/<version>/model.txt                LightGBM model text
    <root>/versions/<version>/metadata.json            see ``register``
    <root>/aliases/<alias>                             one line: the version it names [weight=N]
    <root>/aliases/production.history                  the versions production named before
    <root>/models/<name>/versions/..., aliases/...     another model, the same way

Aliases: ``production`` (what is served), ``canary`` (a share of rows, ``weight`` percent,
scored by another version) and ``shadow`` (a ``weight`` percent sample of rows also scored
by another version, after the answer, to compare).

A version is written in a staging directory and renamed into place, then made
read-only: readers see a whole version or none.  An alias is replaced with
write-to-temporary then ``os.replace``: readers see the old or the new target,
never a torn file.  A version can only become an alias target after it passed
:meth:`Registry.verify` in a child process (:meth:`Registry.check`): checksum,
compatibility, the model text's structure, its features, load, and the same finite
predictions from the single-row and the batch path.  A model that crashes LightGBM
takes down that child, never the caller.

Reading metadata never imports LightGBM, so a web worker can use this module
(and :meth:`Registry.check`, which runs LightGBM in a child); :meth:`Registry.load`
and :meth:`Registry.verify` import it and belong in a mule or a CLI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forecast.compiled import CompileReport, Reference, compile_trees, load_compiled
from forecast.errors import CorruptVersion, IncompatibleVersion, RegistryError, VersionNotFound
from forecast.features import FEATURE_SETS, FEATURE_VERSION, FeatureSet, Rows
from forecast.modeltext import check_model_text
from forecast.trend import Trend

if TYPE_CHECKING:
    from forecast.model import Predictor

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
ALIASES = ("production", "canary", "shadow")
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^v(\d+)$")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_REFUSALS: dict[str, type[RegistryError]] = {
    cls.code: cls for cls in (RegistryError, VersionNotFound, CorruptVersion, IncompatibleVersion)
}
SMOKE_ROW_COUNT = 8  # rows verify() scores on both paths, spread over the version's domain
DOMAIN_DATES = 8  # dates per store and item of the reference rows that compiled trees are checked on
# Compiled trees sum in blocks, LightGBM tree by tree: the last bits of a sum may differ (forecast/compiled.py);
# none may for a feature set with ``exact_sum``, compiled to add the trees in LightGBM's order.
COMPILED_TOLERANCE = 1e-9


def compiled_tolerance(feature_set: FeatureSet) -> float:
    """How far a version's compiled trees may forecast from LightGBM: 0 for a feature set with ``exact_sum``."""
    return 0.0 if feature_set.exact_sum else COMPILED_TOLERANCE


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Alias:
    """Where an alias points, and for ``canary`` and ``shadow`` the share of rows it takes (percent)."""

    version: str
    weight: int | None = None


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a model: 1-40 lower-case letters, digits, ``-``, ``_`` (nothing else, no newline)."""
    return _MODEL_RE.fullmatch(name) is not None


def check_model_name(name: str) -> str:
    """``name`` if it can name a model (see :func:`is_model_name`); raises :class:`RegistryError`."""
    if not is_model_name(name):
        raise RegistryError(f"{name!r} is not a model name (a-z, 0-9, '-', '_'; at most 40 characters)")
    return name


class Registry:
    """One model's versions and aliases under ``root``.  Safe for concurrent readers."""

    def __init__(self, root: Path, model: str = DEFAULT_MODEL) -> None:
        self.root = Path(root)
        self.model = check_model_name(model)
        base = self.root if model == DEFAULT_MODEL else self.root / "models" / model
        self.versions_dir = base / "versions"
        self.aliases_dir = base / "aliases"

    def named(self, model: str) -> Registry:
        """The registry of another model under the same root."""
        return Registry(self.root, model)

    def models(self) -> list[str]:
        """Every model with a version: the default one first, the others by name."""
        folders = (self.root / "models").glob("*/versions")
        named = sorted(p.parent.name for p in folders if is_model_name(p.parent.name))
        default = [DEFAULT_MODEL] if (self.root / "versions").is_dir() else []
        return default + [name for name in named if name != DEFAULT_MODEL]

    # -- reading -----------------------------------------------------------

    def versions(self) -> list[str]:
        """Every registered version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if _VERSION_RE.fullmatch(p.name)]
        return sorted(names, key=_version_number)

    def aliases(self) -> dict[str, str]:
        """Alias name -> version, for every alias that is set."""
        return {name: alias.version for name, alias in self.alias_table().items()}

    def alias_table(self) -> dict[str, Alias]:
        """Alias name -> where it points and its weight, for every alias that is set."""
        found = {}
        for name in ALIASES:
            alias = self.alias(name)
            if alias is not None:
                found[name] = alias
        return found

    def alias(self, name: str) -> Alias | None:
        try:
            words = (self.aliases_dir / name).read_text().split()
        except FileNotFoundError:
            return None
        if not words:
            return None
        weight = next((int(w.removeprefix("weight=")) for w in words[1:] if w.startswith("weight=")), None)
        return Alias(words[0], weight)

    def resolve(self, ref: str) -> str:
        """Return the version named by ``ref`` (a version or an alias).

        Raises :class:`VersionNotFound`.
        """
        if ref in ALIASES:
            alias = self.alias(ref)
            if alias is None:
                raise VersionNotFound(f"alias {ref!r} is not set")
            return alias.version
        if not _VERSION_RE.fullmatch(ref) or not (self.versions_dir / ref).is_dir():
            raise VersionNotFound(f"version {ref!r} does not exist")
        return ref

    def metadata(self, ref: str) -> dict[str, Any]:
        """The metadata of a version or alias target.

        Raises :class:`VersionNotFound` or :class:`CorruptVersion`.
        """
        version = self.resolve(ref)
        try:
            metadata = json.loads((self.versions_dir / version / METADATA_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise CorruptVersion(f"version {version}: unreadable {METADATA_FILE} ({exc.__class__.__name__})") from exc
        if not isinstance(metadata, dict) or metadata.get("version") != version:
            raise CorruptVersion(f"version {version}: {METADATA_FILE} does not describe this version")
        return metadata

    # -- loading (imports LightGBM) ----------------------------------------

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

        metadata = self.metadata(ref)
        version = metadata["version"]
        feature_set = check_compatible(metadata)
        model_text = self.model_text(version, metadata)
        try:
            trend = Trend.from_dict(metadata["trend"]) if feature_set.log_target else None
        except (KeyError, TypeError, ValueError) as exc:  # a damaged metadata.json
            raise CorruptVersion(f"version {version}: unreadable trend ({exc.__class__.__name__})") from exc
        if compiled:
            path, checksum = self.versions_dir / version / MODEL_FILE, metadata["checksum"][MODEL_FILE]
            trees, why_not = load_compiled(path, checksum, feature_set.exact_sum)
            if trees is not None:
                return Predictor(None, trend, version, feature_set, compiled=trees)
            logger.info("%s %s: scoring with LightGBM (compiled trees: %s)", self.model, version, why_not)
        try:
            return Predictor.from_model_text(model_text, trend, version, feature_set)
        except Exception as exc:  # LightGBM raises its own error type, or others on bad text
            raise CorruptVersion(f"version {version}: model does not load ({exc.__class__.__name__})") from exc

    def compiled_state(self, ref: str) -> str:
        """Why a version's compiled trees would not be used here ("" when they would); loads them to know."""
        metadata = self.metadata(ref)
        path = self.versions_dir / metadata["version"] / MODEL_FILE
        feature_set = FEATURE_SETS.get(str(metadata.get("feature_version")))  # an unknown one loads nothing anyway
        exact_sum = feature_set is not None and feature_set.exact_sum
        return load_compiled(path, metadata.get("checksum", {}).get(MODEL_FILE, ""), exact_sum)[1]

    def compile(self, ref: str) -> CompileReport:
        """Compile a version's trees into the artefact beside its text (see :mod:`forecast.compiled`), with LightGBM's
        forecasts of the version's reference rows (:func:`domain_rows`).  Imports LightGBM and LLVM.

        Raises like :meth:`load`, and :class:`RegistryError` when the trees cannot be
        compiled or the folder cannot be written (a read-only registry).
        """
        metadata = self.metadata(ref)
        version, rows = metadata["version"], domain_rows(metadata)
        reference = Reference(rows, self.load(version, compiled=False).predict(rows))  # checks the model text too
        try:
            path, exact_sum = self.versions_dir / version / MODEL_FILE, check_compatible(metadata).exact_sum
            return compile_trees(path, metadata["checksum"][MODEL_FILE], reference, exact_sum)
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
            model_text = (self.versions_dir / version / MODEL_FILE).read_text()
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
            _check_lightgbm(predictor, self.metadata(predictor.version))
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
        """:meth:`verify` ``ref`` in a child process (LightGBM never runs here); return the version.

        The child first compiles the version's trees if they are not (``FORECAST_COMPILED_TREES``),
        so every version an alias names has them; ``timeout_s`` must allow for that (seconds).

        A model that crashes LightGBM or hangs takes down the child, not the caller:
        raises :class:`CorruptVersion` naming what happened, or what :meth:`verify` raised.
        """
        version = self.resolve(ref)
        command = [python_executable(), "-m", "forecast", "--registry", str(self.root), "registry", "verify", version,
                   "--json", "--compile", "--model", self.model]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        except subprocess.TimeoutExpired:
            raise CorruptVersion(f"version {version}: verification did not finish within {timeout_s:g} s") from None
        if done.returncode == 0:
            return version
        try:
            refusal = json.loads(done.stdout.strip().splitlines()[-1])
            error = _REFUSALS[refusal["code"]](refusal["message"])
        except (IndexError, ValueError, KeyError, TypeError):
            reason = f"exit {done.returncode}" if done.returncode >= 0 else f"killed by signal {-done.returncode}"
            last = done.stderr.strip().splitlines()[-1:]  # e.g. LightGBM's "terminate called ..."
            raise CorruptVersion(
                f"version {version}: verifying it crashed ({reason}{': ' + last[0] if last else ''})"
            ) from None
        raise error

    # -- writing -----------------------------------------------------------

    def register(
        self, model_text: str, metadata: dict[str, Any], feature_set: FeatureSet = FEATURE_SETS[FEATURE_VERSION]
    ) -> str:
        """Store a new immutable version and return its name (``v<N>``).

        ``metadata`` is completed with ``version``, ``checksum``, ``feature_names`` and
        ``feature_version`` (of ``feature_set``, ours by default).  Nothing is verified here:
        :meth:`promote` does that before an alias may name the version.
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        (staging / MODEL_FILE).write_text(model_text)
        while True:
            version = f"v{max(map(_version_number, self.versions()), default=0) + 1}"
            full = {
                **metadata,
                "version": version,
                "feature_names": list(feature_set.names),
                "feature_version": feature_set.version,
                "checksum": {MODEL_FILE: sha256_text(model_text)},
            }
            (staging / METADATA_FILE).write_text(json.dumps(full, indent=2) + "\n")
            for path in staging.iterdir():
                path.chmod(0o444)
            try:
                staging.rename(self.versions_dir / version)
            except OSError:  # another writer took this number first: try the next
                for path in staging.iterdir():
                    path.chmod(0o644)
                continue
            return version

    def with_checksum(self, checksum: str) -> str | None:
        """The newest version whose model text has ``checksum`` (``sha256:...``), if any."""
        for version in reversed(self.versions()):
            try:
                if self.metadata(version).get("checksum", {}).get(MODEL_FILE) == checksum:
                    return version
            except RegistryError:
                continue
        return None

    def promote(self, ref: str, alias: str = "production", weight: int | None = None) -> str:
        """Point ``alias`` at a verified version (``weight``: canary's or shadow's share, percent); return it.

        Verification runs first, in a child process (:meth:`check`): a corrupt or
        incompatible version raises and the alias keeps its old target.  Moving
        ``production`` records the version it named before, for :meth:`rollback`.
        """
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        if (weight is not None) == (alias == "production") or not 0 <= (weight or 0) <= 100:
            raise RegistryError("canary and shadow take a --weight from 0 to 100 (percent of rows); production none")
        version = self.check(ref)
        previous = self.alias(alias)
        if alias == "production" and previous is not None and previous.version != version:
            with (self.aliases_dir / "production.history").open("a") as history:
                history.write(previous.version + "\n")
        self.set_alias(alias, version, weight)
        return version

    def rollback(self, alias: str = "production") -> str | None:
        """``production`` back to the version it named before; ``canary`` or ``shadow`` removed. The new target."""
        if alias != "production":
            (self.aliases_dir / alias).unlink(missing_ok=True)
            return None
        history = self.aliases_dir / "production.history"
        earlier = history.read_text().split() if history.exists() else []
        if not earlier:
            raise RegistryError("production has no earlier version to go back to")
        self.set_alias("production", earlier[-1])
        history.write_text("".join(f"{version}\n" for version in earlier[:-1]))
        return earlier[-1]

    def set_alias(self, alias: str, version: str, weight: int | None = None) -> None:
        """Point ``alias`` at ``version`` atomically, without verifying it: for a caller that just did
        (:meth:`promote` does both; a test that verified in-process)."""
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{alias}-", dir=self.aliases_dir)
        with os.fdopen(fd, "w") as handle:
            handle.write(version + ("" if weight is None else f" weight={weight}") + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.aliases_dir / alias)


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


def _version_number(name: str) -> int:
    match = _VERSION_RE.fullmatch(name)
    return int(match.group(1)) if match else -1
