"""Compiled trees: a version's LightGBM model as native code (lleaves, through LLVM), cached beside its text.

Scoring 45,000 rows with compiled trees takes about a seventh of LightGBM's time on one
core, with the same numbers to floating-point rounding (README "Performance"): lleaves
sums the trees in blocks, so the last bit of a sum can differ (measured: at most 2e-15).

The artefact is two files in the version's folder, named for the machine kind
(``compiled-x86_64.o`` and ``compiled-x86_64.json``): the object code, and what it was
made from (the model text's checksum, the object's checksum, the LLVM target, lleaves'
version).  It is compiled for a generic CPU of the machine kind, so one artefact serves a
fleet of mixed CPU models.  It is a cache: a version is whole without it, a registry
mounted read-only gets none, and a process that finds it missing, stale or for another
machine scores with LightGBM instead (:func:`load_compiled` says why).

Compiling is :meth:`forecast.registry.Registry.compile`, run by ``registry verify
--compile`` in the child process that checks a version before an alias may name it;
loading is in the mules, after fork, like LightGBM.  No Flask, no uwsgi here.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = 1
TARGET_CPU = "generic"  # every CPU of the machine kind; measured as fast as the host's own on these trees


def artefact_paths(version_dir: Path) -> tuple[Path, Path]:
    """(object code, its description) for this machine kind, in ``version_dir``."""
    stem = f"compiled-{platform.machine() or 'unknown'}"
    return version_dir / f"{stem}.o", version_dir / f"{stem}.json"


def _file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _expected(model_sha256: str) -> dict[str, Any]:
    """What an artefact usable here was made from (all but the object's own checksum and timings)."""
    import llvmlite.binding as llvm

    return {
        "format": FORMAT,
        "model_sha256": model_sha256,
        "triple": llvm.get_process_triple(),
        "target_cpu": TARGET_CPU,
        "lleaves": importlib.metadata.version("lleaves"),
        "llvmlite": importlib.metadata.version("llvmlite"),
    }


@dataclass(frozen=True)
class CompileReport:
    """What :func:`compile_trees` made: where, how long it took, how big it is."""

    object_path: Path
    seconds: float
    object_bytes: int


def compile_trees(model_path: Path, model_sha256: str) -> CompileReport:
    """Compile the model text at ``model_path`` into the artefact beside it; replaces a stale one.

    Both files are written under temporary names and renamed into place, the description
    last: a reader sees a whole artefact or none.  Raises ``OSError`` when the folder is
    not writable, and whatever lleaves raises on a model it cannot compile.
    """
    import lleaves  # deferred: LLVM is loaded only where trees are compiled

    object_path, info_path = artefact_paths(model_path.parent)
    started = time.perf_counter()
    fd, scratch = tempfile.mkstemp(prefix=".compiling-", suffix=".o", dir=model_path.parent)
    os.close(fd)
    os.unlink(scratch)  # lleaves writes its cache file only when none exists
    try:
        model = lleaves.Model(model_file=str(model_path))
        model.compile(cache=scratch, target_cpu=TARGET_CPU, target_cpu_features="")
        seconds = time.perf_counter() - started
        info = {**_expected(model_sha256), "object_sha256": _file_sha256(Path(scratch)), "compile_s": round(seconds, 3)}
        os.chmod(scratch, 0o444)
        os.replace(scratch, object_path)
        _write_atomically(info_path, json.dumps(info, indent=2) + "\n")
    finally:
        Path(scratch).unlink(missing_ok=True)
    return CompileReport(object_path, seconds, object_path.stat().st_size)


def _write_atomically(path: Path, text: str) -> None:
    fd, scratch = tempfile.mkstemp(prefix=".", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(scratch, 0o444)
    os.replace(scratch, path)


class CompiledTrees:
    """A loaded artefact: ``predict`` scores a feature matrix on this thread.

    Not thread-safe in the sense that matters here (one per process, as in a mule); the
    native call releases the GIL.
    """

    def __init__(self, model: Any, feature_count: int) -> None:
        self._model = model  # owns the LLVM engine that holds the code
        # lleaves' entry point (``forest_root(data, out, start, end)``), typed to take addresses as integers:
        # ctypes' pointer conversions cost more than scoring one row.
        address = ctypes.cast(model._c_entry_func, ctypes.c_void_p).value
        if not address:
            raise ValueError("compiled trees without an entry point")
        self._entry = _ENTRY(address)
        self.feature_count = feature_count

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Raw model output for a float64 ``(n, feature_count)`` matrix (as ``Booster.predict``)."""
        if features.ndim != 2 or features.shape[1] != self.feature_count or features.dtype != np.float64:
            raise ValueError(f"compiled trees take float64 rows of {self.feature_count} features")
        data = np.ascontiguousarray(features)
        out = np.empty(len(data), dtype=np.float64)  # forest_root writes every value
        self._entry(data.ctypes.data, out.ctypes.data, 0, len(data))
        return out


_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


def load_compiled(model_path: Path, model_sha256: str) -> tuple[CompiledTrees | None, str]:
    """The artefact beside ``model_path`` if it was made from this model text for this machine kind.

    Returns (trees, "") or (None, why not): missing, stale, another target, a bad checksum,
    lleaves not installed.  Never raises for any of those: the caller scores with LightGBM.
    """
    object_path, info_path = artefact_paths(model_path.parent)
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        return None, "not compiled"
    except (OSError, ValueError) as exc:
        return None, f"unreadable {info_path.name} ({exc.__class__.__name__})"
    try:
        import lleaves
    except ImportError:
        return None, "lleaves is not installed"
    expected = _expected(model_sha256)
    stale = sorted(key for key, value in expected.items() if info.get(key) != value)
    if stale:
        return None, f"compiled for another {', '.join(stale)}"
    try:
        if _file_sha256(object_path) != info.get("object_sha256"):
            return None, f"{object_path.name} does not match its checksum"
        model = lleaves.Model(model_file=str(model_path))
        model.compile(cache=str(object_path), target_cpu=TARGET_CPU, target_cpu_features="")
    except OSError as exc:
        return None, f"unreadable {object_path.name} ({exc.__class__.__name__})"
    return CompiledTrees(model, model.num_feature()), ""
