"""A model registry on a plain directory (a local disk or a mounted volume).

Layout::

    <root>/versions/<version>/model.txt       LightGBM model text
    <root>/versions/<version>/metadata.json   see ``register``
    <root>/aliases/<alias>                    one line: the version it names

A version is written in a staging directory and renamed into place, then made
read-only: readers see a whole version or none.  An alias is replaced with
write-to-temporary then ``os.replace``: readers see the old or the new target,
never a torn file.  A version can only become an alias target after
:meth:`Registry.verify` passed (checksum, compatibility, load, smoke predict).

Reading metadata never imports LightGBM, so a web worker can use this module;
:meth:`Registry.load` and :meth:`Registry.verify` do import it and belong in a
mule or a CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecast.errors import CorruptVersion, IncompatibleVersion, RegistryError, VersionNotFound
from forecast.features import FEATURE_NAMES, FEATURE_VERSION, Rows
from forecast.trend import Trend

if TYPE_CHECKING:
    from forecast.model import Predictor

ALIASES = ("production", "canary")
MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
_VERSION_RE = re.compile(r"^v(\d+)$")
# A row every model must be able to score, used by verify().
SMOKE_ROWS = Rows.from_columns(["2018-01-21"], [1], [1])


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Registry:
    """Versions and aliases under ``root``.  Safe for concurrent readers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.aliases_dir = self.root / "aliases"

    # -- reading -----------------------------------------------------------

    def versions(self) -> list[str]:
        """Every registered version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if _VERSION_RE.match(p.name)]
        return sorted(names, key=_version_number)

    def aliases(self) -> dict[str, str]:
        """Alias name -> version, for every alias that is set."""
        found = {}
        for alias in ALIASES:
            version = self._read_alias(alias)
            if version is not None:
                found[alias] = version
        return found

    def resolve(self, ref: str) -> str:
        """Return the version named by ``ref`` (a version or an alias).

        Raises :class:`VersionNotFound`.
        """
        if ref in ALIASES:
            version = self._read_alias(ref)
            if version is None:
                raise VersionNotFound(f"alias {ref!r} is not set")
            return version
        if not _VERSION_RE.match(ref) or not (self.versions_dir / ref).is_dir():
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

    def load(self, ref: str) -> Predictor:
        """Load a version or alias target after checking checksum and compatibility.

        Raises :class:`VersionNotFound`, :class:`CorruptVersion` or
        :class:`IncompatibleVersion`.  Call only in a process that predicts,
        after fork (see :mod:`forecast.model`).
        """
        from forecast.model import Predictor  # deferred: imports LightGBM

        metadata = self.metadata(ref)
        version = metadata["version"]
        check_compatible(metadata)
        try:
            model_text = (self.versions_dir / version / MODEL_FILE).read_text()
        except OSError as exc:
            raise CorruptVersion(f"version {version}: unreadable {MODEL_FILE}") from exc
        if sha256_text(model_text) != metadata.get("checksum", {}).get(MODEL_FILE):
            raise CorruptVersion(f"version {version}: {MODEL_FILE} does not match its checksum")
        try:
            trend = Trend.from_dict(metadata["trend"])
            return Predictor.from_model_text(model_text, trend, version)
        except Exception as exc:  # LightGBM raises its own error type, or others on bad text
            raise CorruptVersion(f"version {version}: model does not load ({exc.__class__.__name__})") from exc

    def verify(self, ref: str) -> Predictor:
        """Load a version and score :data:`SMOKE_ROWS`; return the predictor.

        Raises like :meth:`load`, plus :class:`CorruptVersion` when the smoke
        prediction is not a finite non-negative number.
        """
        predictor = self.load(ref)
        try:
            prediction = predictor.predict(SMOKE_ROWS)
        except Exception as exc:
            raise CorruptVersion(f"version {predictor.version}: smoke prediction failed ({exc})") from exc
        if prediction.shape != (1,) or not (prediction[0] >= 0 and prediction[0] < float("inf")):
            raise CorruptVersion(f"version {predictor.version}: smoke prediction {prediction!r} is not a sales count")
        return predictor

    # -- writing -----------------------------------------------------------

    def register(self, model_text: str, metadata: dict[str, Any]) -> str:
        """Store a new immutable version and return its name (``v<N>``).

        ``metadata`` is completed with ``version``, ``checksum``,
        ``feature_names`` and ``feature_version``.
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        (staging / MODEL_FILE).write_text(model_text)
        while True:
            version = f"v{max(map(_version_number, self.versions()), default=0) + 1}"
            full = {
                **metadata,
                "version": version,
                "feature_names": list(FEATURE_NAMES),
                "feature_version": FEATURE_VERSION,
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

    def promote(self, ref: str, alias: str = "production") -> str:
        """Point ``alias`` at a verified version; return the version.

        Verification runs first: a corrupt or incompatible version raises and
        the alias keeps its old target.
        """
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        version = self.verify(ref).version
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{alias}-", dir=self.aliases_dir)
        with os.fdopen(fd, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.aliases_dir / alias)
        return version

    def _read_alias(self, alias: str) -> str | None:
        try:
            return (self.aliases_dir / alias).read_text().strip() or None
        except FileNotFoundError:
            return None


def check_compatible(metadata: dict[str, Any]) -> None:
    """Raise :class:`IncompatibleVersion` unless this code can serve the version."""
    import importlib.metadata

    version = metadata.get("version", "?")
    if metadata.get("feature_version") != FEATURE_VERSION or metadata.get("feature_names") != list(FEATURE_NAMES):
        raise IncompatibleVersion(
            f"version {version}: built with feature version {metadata.get('feature_version')!r}, "
            f"this server computes feature version {FEATURE_VERSION!r}"
        )
    built_with = str(metadata.get("lightgbm_version", ""))
    running = importlib.metadata.version("lightgbm")
    if built_with.split(".")[0] != running.split(".")[0]:
        raise IncompatibleVersion(f"version {version}: built with LightGBM {built_with!r}, this server runs {running}")


def _version_number(name: str) -> int:
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else -1
