"""The Ray Serve sales service's model registry file, and importing the model it names.

The original service reads one small JSON file (its ``model_registry.json``)::

    {"model_type": "lightgbm", "model_file": "<URL of the model text>",
     "input_guardrails": {"min_date": "2018-01-01", "max_date": "2018-03-31",
                          "store_id_max": 10, "item_id_max": 50},
     "output_guardrails": {"max_value": 200.0}}

:func:`import_legacy` fetches that file (a path or an http(s) URL) and the model it
names, checks the text is a whole LightGBM model over the five legacy features (no
LightGBM needed: :mod:`forecast.modeltext`), registers it as a version of the
``legacy-1`` feature set recording its source, checksum and guardrails, verifies it in
a child process, and promotes it when asked (:func:`forecast.sources.add_version`).  A model
already registered (the same checksum) is not registered again.  No Flask, no uWSGI: the CLI and the web workers'
``/reload`` both call it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecast.errors import ImportRefused, RegistryError
from forecast.features import FEATURE_SETS, LEGACY_FEATURE_VERSION
from forecast.modeltext import check_model_text
from forecast.registry import Registry, sha256_text
from forecast.sources import Candidate, add_version

FETCH_TIMEOUT_S = 30
LEGACY = FEATURE_SETS[LEGACY_FEATURE_VERSION]


@dataclass(frozen=True)
class Guardrails:
    """The original's input and output limits, as its registry file gives them."""

    min_date: str
    max_date: str
    store_id_max: int
    item_id_max: int
    max_value: float

    @classmethod
    def from_registry_file(cls, info: dict[str, Any]) -> Guardrails:
        """Raises :class:`ImportRefused` naming a missing or mistyped field."""
        try:
            given, output = info["input_guardrails"], info["output_guardrails"]
            guardrails = cls(str(given["min_date"]), str(given["max_date"]), int(given["store_id_max"]),
                             int(given["item_id_max"]), float(output["max_value"]))  # fmt: skip
            for day in (guardrails.min_date, guardrails.max_date):
                dt.date.fromisoformat(day)  # the domain's dates (the original compares them as text)
        except (KeyError, TypeError, ValueError) as exc:
            raise ImportRefused(f"the registry file's guardrails are incomplete or mistyped ({exc!r})") from None
        return guardrails

    def as_metadata(self) -> dict[str, Any]:
        """The ``guardrails`` of a version's metadata: ids from 0, as the original checks them."""
        return {"min_date": self.min_date, "max_date": self.max_date, "store_id_min": 0,
                "store_id_max": self.store_id_max, "item_id_min": 0, "item_id_max": self.item_id_max,
                "max_value": self.max_value}  # fmt: skip


@dataclass(frozen=True)
class LegacyModel:
    """What a registry file names: the model text, where it came from, its guardrails."""

    source: str
    model_file: str
    model_text: str
    guardrails: Guardrails

    @property
    def checksum(self) -> str:
        return sha256_text(self.model_text)

    def candidate(self) -> Candidate:
        """This model as a version of the legacy feature set (:mod:`forecast.sources`), reused if already there."""
        return Candidate(self.model_text, self.metadata(), LEGACY, reuse_same_text=True)

    def metadata(self) -> dict[str, Any]:
        """The version's metadata (the registry adds version, checksum and feature fields)."""
        g = self.guardrails
        return {
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "lightgbm_version": importlib.metadata.version("lightgbm"),
            "source": {"registry_file": self.source, "model_file": self.model_file},
            "guardrails": g.as_metadata(),
            "data": {"first_date": g.min_date, "trained_through": g.max_date},
            "domain": {
                "stores": list(range(g.store_id_max + 1)),
                "items": list(range(g.item_id_max + 1)),
                "last_date": g.max_date,
            },
            "metrics": {},
        }


def fetch(source: str) -> LegacyModel:
    """Read the registry file at ``source`` and the model it names; check the model's text.

    Raises :class:`ImportRefused` naming what failed: a download, a file that is not the
    original's registry file, a model that is not a whole LightGBM text over its five features.
    """
    info = _registry_file(source)
    if info.get("model_type") != "lightgbm" or not isinstance(info.get("model_file"), str):
        raise ImportRefused(f"{source} is not a LightGBM model registry file (model_type, model_file)")
    guardrails = Guardrails.from_registry_file(info)
    model_file = _resolve(source, info["model_file"])
    model_text = _read(model_file)
    try:
        check_model_text(model_text, LEGACY.names)
    except RegistryError as exc:
        raise ImportRefused(f"{model_file}: {exc.message}") from None
    return LegacyModel(source, model_file, model_text, guardrails)


def import_legacy(registry: Registry, source: str, promote: bool) -> tuple[str, bool]:
    """Register (if new) and verify the model ``source`` names; (its version, whether it was new).

    With ``promote``, ``production`` then names it.  Raises :class:`ImportRefused` or what
    :meth:`Registry.check` raises (verification in a child process); nothing changes then.
    """
    added = add_version(registry, fetch(source).candidate(), promote)
    return added.version, added.registered


def _registry_file(source: str) -> dict[str, Any]:
    try:
        info = json.loads(_read(source))
    except ValueError:
        raise ImportRefused(f"{source} is not JSON") from None
    if not isinstance(info, dict):
        raise ImportRefused(f"{source} is not a registry file (a JSON object)")
    return info


def _resolve(source: str, model_file: str) -> str:
    """``model_file`` as the original reads it (a URL), or relative to a registry file given as a path."""
    if urllib.parse.urlparse(model_file).scheme in ("http", "https", "file"):
        return model_file
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        return urllib.parse.urljoin(source, model_file)
    return str(Path(source).parent / model_file)


def _read(location: str) -> str:
    """The text at a path or an http(s)/file URL; raises :class:`ImportRefused` naming the failure."""
    try:
        if urllib.parse.urlparse(location).scheme in ("http", "https", "file"):
            with urllib.request.urlopen(location, timeout=FETCH_TIMEOUT_S) as response:
                data: bytes = response.read()
        else:
            data = Path(location).read_bytes()
        return data.decode()
    except urllib.error.HTTPError as exc:
        raise ImportRefused(f"{location}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ImportRefused(f"{location}: cannot be read ({getattr(exc, 'reason', exc)})") from None
    except UnicodeDecodeError:
        raise ImportRefused(f"{location}: not text") from None
