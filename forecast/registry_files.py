"""The registry's store: its folder layout, versions written whole, aliases replaced atomically, metadata.

The only module that knows the layout (the default model at the root, as before models had names;
others under ``models/``)::

    <root>/versions/<version>/model.txt                LightGBM model text
    <root>/versions/<version>/metadata.json            see ``register``
    <root>/versions/<version>/compiled-<machine>.*     compiled trees, a cache (forecast/compiled.py)
    <root>/aliases/<alias>                             one line: the version it names [weight=N]
    <root>/aliases/production.history                  the versions production named before
    <root>/models/<name>/versions/..., aliases/...     another model, the same way

A version is written in a staging directory and renamed into place, then made read-only:
readers see a whole version or none.  An alias is replaced with write-to-temporary then
``os.replace``: readers see the old or the new target, never a torn file.  Nothing here
verifies a version or imports LightGBM (that is :mod:`forecast.registry_checks`), so a web
worker can use it.  Callers go through :class:`forecast.registry.Registry`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecast.compiled import ArtefactPaths, machine_kind
from forecast.errors import CorruptVersion, RegistryError, VersionNotFound
from forecast.features import FEATURE_SETS, FEATURE_VERSION, FeatureSet

DEFAULT_MODEL = "default"
ALIASES = ("production", "canary", "shadow")
MODEL_FILE = "model.txt"  # also the key of the model text's checksum in a version's metadata
METADATA_FILE = "metadata.json"
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_VERSION_RE = re.compile(r"^v(\d+)$")


def sha256_text(text: str) -> str:
    """The checksum a version records for its model text: ``sha256:`` and the hex digest of its UTF-8 bytes."""
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


class RegistryFiles:
    """One model's versions and aliases under ``root``, as files.  Safe for concurrent readers."""

    def __init__(self, root: Path, model: str = DEFAULT_MODEL) -> None:
        self.root = Path(root)
        self.model = check_model_name(model)
        base = self.root if model == DEFAULT_MODEL else self.root / "models" / model
        self.versions_dir = base / "versions"
        self.aliases_dir = base / "aliases"

    def models(self) -> list[str]:
        """Every model with a version: the default one first, the others by name."""
        folders = (self.root / "models").glob("*/versions")
        named = sorted(p.parent.name for p in folders if is_model_name(p.parent.name))
        default = [DEFAULT_MODEL] if (self.root / "versions").is_dir() else []
        return default + [name for name in named if name != DEFAULT_MODEL]

    # -- a version's files (for the verifier, and for tests that damage one) --------

    def model_path(self, version: str) -> Path:
        """The file holding ``version``'s model text (read-only once registered)."""
        return self.versions_dir / version / MODEL_FILE

    def metadata_path(self, version: str) -> Path:
        """The file holding ``version``'s metadata (read-only once registered)."""
        return self.versions_dir / version / METADATA_FILE

    def compiled_paths(self, version: str) -> ArtefactPaths:
        """(shared library, its description): ``version``'s compiled trees for this machine kind, if made."""
        folder, stem = self.versions_dir / version, f"compiled-{machine_kind()}"
        return ArtefactPaths(folder / f"{stem}.so", folder / f"{stem}.json")

    def footprint_bytes(self, version: str, compiled: bool) -> int:
        """The size on disk of what scores ``version``: its compiled trees' library, or its model text (0 if gone)."""
        scoring = self.compiled_paths(version)[0] if compiled else self.model_path(version)
        with contextlib.suppress(OSError):
            return scoring.stat().st_size
        return 0

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
        return {name: alias for name in ALIASES if (alias := self.alias(name)) is not None}

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
        """Return the version named by ``ref`` (a version or an alias).  Raises :class:`VersionNotFound`."""
        if ref in ALIASES:
            alias = self.alias(ref)
            if alias is None:
                raise VersionNotFound(f"alias {ref!r} is not set")
            return alias.version
        if not _VERSION_RE.fullmatch(ref) or not (self.versions_dir / ref).is_dir():
            raise VersionNotFound(f"version {ref!r} does not exist")
        return ref

    def metadata(self, ref: str) -> dict[str, Any]:
        """The metadata of a version or alias target.  Raises :class:`VersionNotFound` or :class:`CorruptVersion`."""
        version = self.resolve(ref)
        try:
            metadata = json.loads(self.metadata_path(version).read_text())
        except (OSError, ValueError) as exc:
            raise CorruptVersion(f"version {version}: unreadable {METADATA_FILE} ({exc.__class__.__name__})") from exc
        if not isinstance(metadata, dict) or metadata.get("version") != version:
            raise CorruptVersion(f"version {version}: {METADATA_FILE} does not describe this version")
        return metadata

    def checksum(self, ref: str) -> str:
        """The checksum (``sha256:...``) of a version's model text, as recorded in its metadata ("" if none)."""
        return str(self.metadata(ref).get("checksum", {}).get(MODEL_FILE, ""))

    def with_checksum(self, checksum: str) -> str | None:
        """The newest version whose model text has ``checksum`` (``sha256:...``), if any."""
        for version in reversed(self.versions()):
            try:
                if self.checksum(version) == checksum:
                    return version
            except RegistryError:
                continue
        return None

    # -- writing -----------------------------------------------------------

    def register(
        self, model_text: str, metadata: dict[str, Any], feature_set: FeatureSet = FEATURE_SETS[FEATURE_VERSION]
    ) -> str:
        """Store a new immutable version and return its name (``v<N>``).

        ``metadata`` is completed with ``version``, ``checksum``, ``feature_names`` and
        ``feature_version`` (of ``feature_set``, ours by default).  Nothing is verified here:
        ``promote`` does that before an alias may name the version.
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

    def copy_version(self, source: str, target: str, model_text: str | None = None) -> None:
        """Copy version ``source`` as ``target``, writable; with ``model_text``, holding that text under its checksum.

        For tests and drills that damage or forge a version (:meth:`model_path`, :meth:`metadata_path`).  Not served.
        """
        copy = self.versions_dir / target
        shutil.copytree(self.versions_dir / source, copy)
        for file in copy.iterdir():
            file.chmod(0o644)
        metadata = {**json.loads(self.metadata_path(target).read_text()), "version": target}
        if model_text is not None:
            self.model_path(target).write_text(model_text)
            metadata["checksum"] = {**metadata.get("checksum", {}), MODEL_FILE: sha256_text(model_text)}
        self.metadata_path(target).write_text(json.dumps(metadata))

    def record_production(self, previous: str) -> None:
        """Remember the version ``production`` named before it moves, for ``rollback``."""
        with (self.aliases_dir / "production.history").open("a") as history:
            history.write(previous + "\n")

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
        (``promote`` does both; a test that verified in-process)."""
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{alias}-", dir=self.aliases_dir)
        with os.fdopen(fd, "w") as handle:
            handle.write(version + ("" if weight is None else f" weight={weight}") + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.aliases_dir / alias)


def _version_number(name: str) -> int:
    match = _VERSION_RE.fullmatch(name)
    return int(match.group(1)) if match else -1
