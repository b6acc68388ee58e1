"""Versions verified in child processes, many to a child: what a pod does before it routes to them.

A version becomes a pod's alias target only after it passed the verifier
(:meth:`forecast.registry_checks.Verifier.verify`) in a child process: LightGBM never runs in
the caller (a web worker), and a model that crashes LightGBM takes down the child, never the
caller.  One child verifies every version asked for, one after another, compiling trees that are
missing, and reports each on a line of its own as it finishes (``python -m forecast registry
verify-many``): a child spends about two seconds on imports before its first version, and a pod
following 100 models paid that once per model, minutes before its first routes.

A child that crashes or hangs names the version it was on (the first it had not reported): that
version is refused with what happened, and the ones after it go to a new child.  The caller never
imports LightGBM here.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from forecast.errors import CorruptVersion, IncompatibleVersion, RegistryError, VersionNotFound

Wanted = tuple[str, str]  # (model, version)
Outcome = RegistryError | None  # None: verified
REFUSALS: dict[str, type[RegistryError]] = {
    cls.code: cls for cls in (RegistryError, VersionNotFound, CorruptVersion, IncompatibleVersion)
}


def check_versions(root: Path, python: str, wanted: Sequence[Wanted], timeout_s: float) -> dict[Wanted, Outcome]:
    """Each (model, version) of ``wanted`` verified under ``root``: None, or why it was refused.

    ``timeout_s``: the longest one version may take (its compile included); ``python``: the
    interpreter of this environment (:func:`forecast.registry_checks.python_executable`).
    """
    outcomes: dict[Wanted, Outcome] = {}
    left = list(dict.fromkeys(wanted))
    while left:
        outcomes.update(_one_child(root, python, left, timeout_s))  # at least the first of ``left``
        left = [one for one in left if one not in outcomes]
    return outcomes


def _one_child(root: Path, python: str, wanted: list[Wanted], timeout_s: float) -> dict[Wanted, Outcome]:
    """What one child reported; when it died or hung, also the version it was on, refused."""
    command = [python, "-m", "forecast", "--registry", str(root), "registry", "verify-many",
               *(f"{model}/{version}" for model, version in wanted)]  # fmt: skip
    outcomes: dict[Wanted, Outcome] = {}
    with tempfile.TemporaryFile("w+") as stderr:  # a file: a chatty child never blocks on a full pipe
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=False,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        assert child.stdout is not None
        lines = _Lines(child.stdout.fileno(), timeout_s)
        for line in lines:
            outcomes.update(_reported(line))
        if len(outcomes) < len(wanted):
            on = next(one for one in wanted if one not in outcomes)
            outcomes[on] = _failure(on[1], child, lines.timed_out, timeout_s, stderr)
        child.kill()
        child.wait()
        child.stdout.close()
    return outcomes


class _Lines:
    """The complete lines a file descriptor yields, each within ``timeout_s`` of the one before."""

    def __init__(self, fd: int, timeout_s: float) -> None:
        self.fd, self.timeout_s, self.buffer, self.timed_out = fd, timeout_s, b"", False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                self.timed_out = True
                raise StopIteration
            chunk = os.read(self.fd, 65_536)
            if not chunk:
                raise StopIteration
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def _reported(line: bytes) -> dict[Wanted, Outcome]:
    """One version's outcome from the child's line (empty for a line that is not one)."""
    try:
        report = json.loads(line)
        wanted = (str(report["model"]), str(report["version"]))
        return {wanted: None if report.get("ok") else REFUSALS[report["code"]](report["message"])}
    except (ValueError, KeyError, TypeError):
        return {}


def _failure(
    version: str, child: subprocess.Popen[bytes], timed_out: bool, timeout_s: float, stderr: IO[str]
) -> CorruptVersion:
    """Why the version a child was on when it ended or hung is refused."""
    if timed_out:
        return CorruptVersion(f"version {version}: verification did not finish within {timeout_s:g} s")
    code = child.wait()
    reason = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
    stderr.seek(0)
    last = stderr.read().strip().splitlines()[-1:]  # e.g. LightGBM's "terminate called ..."
    return CorruptVersion(f"version {version}: verifying it crashed ({reason}{': ' + last[0] if last else ''})")
