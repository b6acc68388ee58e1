"""A model registry on a plain directory (a local disk or a mounted volume): the public face.

:class:`Registry` is what every caller uses; its jobs live in two modules:

- :mod:`forecast.registry_files`, the store: the folder layout (documented there and known
  nowhere else), versions written whole, aliases replaced atomically, metadata;
- :mod:`forecast.registry_checks`, the verifier: checksum, compatibility, load, compiled trees,
  and the check in a child process that every alias target passes first.

Aliases: ``production`` (what is served), ``canary`` (a share of rows, ``weight`` percent,
scored by another version) and ``shadow`` (a ``weight`` percent sample of rows also scored
by another version, after the answer, to compare).

New versions come from a source (training, a legacy import, ...) through
:func:`forecast.sources.add_version`.  Reading metadata never imports LightGBM, so a web
worker can use this module (and :meth:`Registry.check`, which runs LightGBM in a child);
:meth:`Registry.load` and :meth:`Registry.verify` import it and belong in a mule or a CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecast.child_check import Wanted, check_versions
from forecast.compiled import CompileReport
from forecast.errors import RegistryError
from forecast.registry_checks import COMPILED_TOLERANCE, Verifier, domain_rows, python_executable
from forecast.registry_files import (
    ALIASES,
    DEFAULT_MODEL,
    Alias,
    RegistryFiles,
    check_model_name,
    is_model_name,
    sha256_text,
)

if TYPE_CHECKING:
    from forecast.model import Predictor

__all__ = [
    "ALIASES",
    "COMPILED_TOLERANCE",
    "DEFAULT_MODEL",
    "Alias",
    "Registry",
    "check_model_name",
    "domain_rows",
    "is_model_name",
    "python_executable",
    "sha256_text",
]


class Registry(RegistryFiles):
    """One model's versions and aliases under ``root``: the store's methods, and the verifier's below.

    Safe for concurrent readers.
    """

    def __init__(self, root: Path, model: str = DEFAULT_MODEL) -> None:
        super().__init__(root, model)
        self.verifier = Verifier(self)

    def named(self, model: str) -> Registry:
        """The registry of another model under the same root."""
        return Registry(self.root, model)

    def load(self, ref: str, compiled: bool = True) -> Predictor:
        """See :meth:`Verifier.load`."""
        return self.verifier.load(ref, compiled)

    def verify(self, ref: str, compiled: bool = True) -> Predictor:
        """See :meth:`Verifier.verify`."""
        return self.verifier.verify(ref, compiled)

    def verify_compiled(self, ref: str, lightgbm: Predictor) -> Predictor | None:
        """See :meth:`Verifier.verify_compiled`."""
        return self.verifier.verify_compiled(ref, lightgbm)

    def check(self, ref: str, timeout_s: float = 120) -> str:
        """See :meth:`Verifier.check`."""
        return self.verifier.check(ref, timeout_s)

    def check_many(self, wanted: Sequence[Wanted], timeout_s: float = 120) -> dict[Wanted, RegistryError | None]:
        """Versions of any models under this root checked as :meth:`check` does, in one child process
        (:func:`forecast.child_check.check_versions`): each (model, version), None or why it was refused."""
        return check_versions(self.root, python_executable(), wanted, timeout_s)

    def compile(self, ref: str) -> CompileReport:
        """See :meth:`Verifier.compile`."""
        return self.verifier.compile(ref)

    def compiled_state(self, ref: str) -> str:
        """See :meth:`Verifier.compiled_state`."""
        return self.verifier.compiled_state(ref)

    def model_text(self, version: str, metadata: dict[str, Any]) -> str:
        """See :meth:`Verifier.model_text`."""
        return self.verifier.model_text(version, metadata)

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
            self.record_production(previous.version)
        self.set_alias(alias, version, weight)
        return version
