"""Compiled trees: a version's LightGBM model as native code (lleaves, through LLVM), a cache in the registry.

Scoring 45,000 rows with compiled trees takes about a seventh of LightGBM's time on one
core, with the same numbers to floating-point rounding (README "Performance"): lleaves
sums the trees in blocks, so the last bits of a sum can differ.  A feature set with
``exact_sum`` (the Ray Serve service's) is compiled one tree per block instead
(:func:`tree_block`): its sums are LightGBM's to the bit.

The artefact is two files, where the registry puts them (:class:`ArtefactPaths`; beside the
version's model text, named for the machine kind: ``compiled-x86_64.so`` and ``.json``): a
shared library (lleaves' object code linked by the system's ``ld``), and what it was made
from (the model text's checksum, the library's checksum, the machine, lleaves' version, the
feature count) with LightGBM's forecasts of reference rows, recorded when it was compiled
(:class:`Reference`): a process that loads the trees checks them against those, without
loading LightGBM.  It is compiled
for a generic CPU of the machine kind, so one artefact serves a fleet of mixed CPU models.
It is a cache: a version is whole without it, a registry mounted read-only gets none, and
a process that finds it missing, stale or for another machine scores with LightGBM
instead (:func:`load_compiled` says why).

Compiling is :meth:`forecast.registry.Registry.compile`, run by ``registry verify
--compile`` in the child process that checks a version before an alias may name it; it
needs LLVM (llvmlite) and a linker (binutils).  Loading is ``dlopen`` (ctypes) in the
mules, after fork, like LightGBM: no LLVM in the process that scores (its runtime took
about 25 MB of every mule's memory; docs/model.md, "Compiled trees").  No Flask, no uwsgi here.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from forecast.errors import RegistryError
from forecast.features import Rows

logger = logging.getLogger(__name__)

FORMAT = 2  # 1: an object file that LLVM's JIT loaded in the mules
ENTRY_SYMBOL = "forest_root"  # lleaves' entry point: forest_root(rows, out, start, end)
TARGET_CPU = "generic"  # every CPU of the machine kind; measured as fast as the host's own on these trees
# Trees per block (lleaves' ``fblocksize``): each block is one pass over the rows that sums its trees from 0.0,
# then adds that sum to the row's total. LightGBM adds tree after tree to the total ((t0 + t1) + t2 ...), so
# blocks of 34 (lleaves' default) change the last bits of most sums. One tree per block adds each tree to the
# total in LightGBM's order: bit-identical. Measured on the Ray service's own model (500 trees), 45,000 rows,
# one core of the loaded 2-core machine: blocks of 34, inlined: compiled in 79 s, scored in 0.18 s, 42,266 rows
# differing from LightGBM (up to 2.8e-13); one tree per block, not inlined: 28 s, 0.21 s, none; one tree per
# block inlined: 159 s (past the 120 s a verification may take), 0.14 s, none. LightGBM: 2.19 s.
TREE_BLOCK, EXACT_TREE_BLOCK = 34, 1


def tree_block(exact_sum: bool) -> int:
    """Trees per block for a feature set: one when its forecasts must be LightGBM's to the bit (then not inlined)."""
    return EXACT_TREE_BLOCK if exact_sum else TREE_BLOCK


def machine_kind() -> str:
    """The machine kind an artefact is compiled for (``x86_64``): the registry names the artefact's files by it."""
    return platform.machine() or "unknown"


class ArtefactPaths(NamedTuple):
    """Where an artefact's two files go: the registry decides (``Registry.compiled_paths``), this module writes them."""

    library: Path
    description: Path


def _file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _expected(model_sha256: str, exact_sum: bool) -> dict[str, str | int]:
    """What an artefact usable here was made from (all but the library's checksum, its feature count and timings).

    Read without importing LLVM: the process that loads the artefact never needs it.
    """
    try:
        lleaves_version = importlib.metadata.version("lleaves")
    except importlib.metadata.PackageNotFoundError:  # the entry point's contract is lleaves'
        lleaves_version = "(not installed)"
    return {
        "format": FORMAT,
        "model_sha256": model_sha256,
        "system": platform.system(),
        "machine": platform.machine(),
        "target_cpu": TARGET_CPU,
        "lleaves": lleaves_version,
        "tree_block": tree_block(exact_sum),
    }


@dataclass(frozen=True)
class Reference:
    """LightGBM's forecasts (``sales``) of ``rows``: recorded with compiled trees, what loading them checks."""

    rows: Rows
    sales: np.ndarray

    def to_json(self) -> dict[str, list[int] | list[float]]:
        columns = {"days": self.rows.days, "stores": self.rows.stores, "items": self.rows.items}
        return {**{name: column.tolist() for name, column in columns.items()}, "sales": self.sales.tolist()}

    @classmethod
    def from_json(cls, data: Any) -> Reference:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` unless ``data`` is what :meth:`to_json` makes."""
        days, stores, items = (np.asarray(data[name], dtype=np.int64) for name in ("days", "stores", "items"))
        sales = np.asarray(data["sales"], dtype=np.float64)
        if not 0 < len(days) == len(stores) == len(items) == len(sales) or days.ndim != 1:
            raise ValueError("the reference's columns are empty or of different lengths")
        return cls(Rows(days.astype("datetime64[D]"), stores, items), sales)


@dataclass(frozen=True)
class CompileReport:
    """What :func:`compile_trees` made: where, how long it took, how big it is."""

    library_path: Path
    seconds: float
    library_bytes: int


def compile_trees(
    model_path: Path, artefact: ArtefactPaths, model_sha256: str, reference: Reference, exact_sum: bool
) -> CompileReport:
    """Compile the model text at ``model_path`` into ``artefact``, with ``reference``; replaces a stale one.

    ``exact_sum``: add the trees in LightGBM's order (:func:`tree_block`).

    lleaves writes the object code, ``ld`` links it into a shared library; both files are
    written under temporary names and renamed into place, the description last: a reader
    sees a whole artefact or none.  Raises ``OSError`` when the folder is not writable,
    :class:`RegistryError` when there is no linker or it fails, and whatever lleaves raises
    on a model it cannot compile.
    """
    import lleaves  # deferred: LLVM is loaded only where trees are compiled

    linker = shutil.which("ld")
    if linker is None:
        raise RegistryError("no linker to make compiled trees a shared library (install binutils)")
    library_path, info_path = artefact
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".compiling-", dir=library_path.parent) as scratch:
        objects, library = Path(scratch) / "trees.o", Path(scratch) / "trees.so"
        model = lleaves.Model(model_file=str(model_path))
        model.compile(cache=str(objects), target_cpu=TARGET_CPU, target_cpu_features="",
                      fblocksize=tree_block(exact_sum), finline=not exact_sum)  # fmt: skip
        _link(linker, objects, library)
        seconds = time.perf_counter() - started
        info = {**_expected(model_sha256, exact_sum), "feature_count": model.num_feature(),
                "library_sha256": _file_sha256(library), "compile_s": round(seconds, 3),
                "reference": reference.to_json()}  # fmt: skip
        os.chmod(library, 0o444)
        os.replace(library, library_path)
        _write_atomically(info_path, json.dumps(info, indent=2) + "\n")
    library_path.with_suffix(".o").unlink(missing_ok=True)  # format 1's object file, now stale
    return CompileReport(library_path, seconds, library_path.stat().st_size)


def _link(linker: str, objects: Path, library: Path) -> None:
    """``ld -shared``: lleaves' object code is position-independent; its stack is not executable."""
    done = subprocess.run([linker, "-shared", "-z", "noexecstack", "-o", str(library), str(objects)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:]
        raise RegistryError(f"the linker failed on the compiled trees (exit {done.returncode}: {''.join(last)})")


def _write_atomically(path: Path, text: str) -> None:
    fd, scratch = tempfile.mkstemp(prefix=".", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(scratch, 0o444)
    os.replace(scratch, path)


class CompiledTrees:
    """A loaded artefact, a :class:`forecast.scoring.Scorer`: ``predict`` scores a feature matrix on this thread;
    no other per-row ``output`` (lleaves compiles the sums only).

    Not thread-safe in the sense that matters here (one per process, as in a mule); the
    native call releases the GIL.  The library stays loaded for the life of the process
    (ctypes never unloads one), and a process loading the same path again gets the code it
    loaded first (the dynamic loader's rule): harmless, as a path only ever holds code
    compiled from its version's immutable model text.
    """

    engine = "compiled"

    def __init__(self, library: ctypes.CDLL, feature_count: int, reference: Reference) -> None:
        self._library = library
        self.reference = reference
        # The entry point typed to take addresses as integers: ctypes' pointer conversions cost more than
        # scoring one row.
        address = ctypes.cast(getattr(library, ENTRY_SYMBOL), ctypes.c_void_p).value
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

    def output(self, name: str, features: np.ndarray) -> np.ndarray | None:
        """None: compiled trees compute the sums only, no other output (the caller asks LightGBM)."""
        return None


_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


def load_compiled(artefact: ArtefactPaths, model_sha256: str, exact_sum: bool) -> tuple[CompiledTrees | None, str]:
    """The compiled trees at ``artefact`` if they were made from this model text for this machine kind,
    summing the trees as ``exact_sum`` asks (:func:`tree_block`).

    Returns (trees, "") or (None, why not): missing, stale, another machine, a bad
    checksum, a library that does not load.  Never raises for any of those: the caller
    scores with LightGBM.  Whether the trees forecast their reference is the caller's
    check (:meth:`forecast.registry.Registry.verify`).
    """
    library_path, info_path = artefact
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        return None, "not compiled"
    except (OSError, ValueError) as exc:
        return None, f"unreadable {info_path.name} ({exc.__class__.__name__})"
    expected = _expected(model_sha256, exact_sum)
    made = {"tree_block": TREE_BLOCK, **info}  # artefacts of this format made before it was recorded: lleaves' default
    stale = sorted(key for key, value in expected.items() if made.get(key) != value)
    if stale:
        return None, f"compiled for another {', '.join(stale)}"
    try:
        if _file_sha256(library_path) != info.get("library_sha256"):
            return None, f"{library_path.name} does not match its checksum"
    except OSError as exc:
        return None, f"unreadable {library_path.name} ({exc.__class__.__name__})"
    try:
        reference = Reference.from_json(info["reference"])
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"no usable reference in {info_path.name} ({exc.__class__.__name__})"
    try:
        return CompiledTrees(ctypes.CDLL(str(library_path)), int(info["feature_count"]), reference), ""
    except (OSError, AttributeError, ValueError, KeyError, TypeError) as exc:  # dlopen, the symbol, the count
        return None, f"{library_path.name} does not load ({exc.__class__.__name__}: {exc})"
