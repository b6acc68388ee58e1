"""Versions verified in child processes, many to a child (forecast/child_check.py), on a real trained model."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

from forecast.child_check import check_versions
from forecast.errors import CorruptVersion, IncompatibleVersion
from forecast.registry import DEFAULT_MODEL, Registry
from tests.helpers import clone_version, crashing_model_text, forge_version


def counting_python(tmp_path: Path) -> tuple[str, Path]:
    """An interpreter that notes each start in a file, then is this Python: how many children ran."""
    starts = tmp_path / "starts"
    script = tmp_path / "python"
    script.write_text(f'#!/bin/sh\necho started >> "{starts}"\nexec "{sys.executable}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), starts


def test_one_child_verifies_every_version_asked_for(registry: Registry, tmp_path: Path) -> None:
    clone_version(registry, "v1", "v2")
    python, starts = counting_python(tmp_path)
    wanted = [(DEFAULT_MODEL, "v1"), (DEFAULT_MODEL, "v2")]
    assert check_versions(registry.root, python, wanted, 120) == dict.fromkeys(wanted)
    assert starts.read_text().count("started") == 1


def test_a_crash_refuses_the_version_it_hit_and_the_rest_go_to_a_new_child(registry: Registry, tmp_path: Path) -> None:
    forge_version(registry, "v1", "v2", crashing_model_text(registry.model_path("v1").read_text()))
    clone_version(registry, "v1", "v3")
    python, starts = counting_python(tmp_path)
    wanted = [(DEFAULT_MODEL, v) for v in ("v1", "v2", "v3")]
    outcomes = check_versions(registry.root, python, wanted, 120)
    assert (outcomes[wanted[0]], outcomes[wanted[2]]) == (None, None)
    crash = outcomes[wanted[1]]
    assert isinstance(crash, CorruptVersion)
    assert "version v2: verifying it crashed (killed by signal 6" in crash.message
    assert starts.read_text().count("started") == 2


def test_a_refusal_is_reported_as_what_the_verifier_raised_and_the_child_goes_on(registry: Registry) -> None:
    clone_version(registry, "v1", "v2")
    metadata = registry.metadata_path("v2")
    metadata.write_text(metadata.read_text().replace('"feature_version": "', '"feature_version": "x'))
    clone_version(registry, "v1", "v3")
    wanted = [(DEFAULT_MODEL, v) for v in ("v2", "v3")]
    outcomes = check_versions(registry.root, sys.executable, wanted, 120)
    assert isinstance(outcomes[wanted[0]], IncompatibleVersion)
    assert outcomes[wanted[1]] is None


def test_a_child_that_hangs_refuses_the_version_it_was_on_within_the_timeout(tmp_path: Path) -> None:
    """Logic only: a stand-in child that never reports (a real hang would need a model that hangs LightGBM)."""
    hanging = tmp_path / "python"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(hanging.stat().st_mode | stat.S_IXUSR)
    started = time.monotonic()
    outcomes = check_versions(tmp_path, str(hanging), [(DEFAULT_MODEL, "v1"), (DEFAULT_MODEL, "v2")], 0.5)
    assert [o.message if o else None for o in outcomes.values()] == [
        "version v1: verification did not finish within 0.5 s",
        "version v2: verification did not finish within 0.5 s",
    ]
    assert time.monotonic() - started < 30  # the sleeping children were killed, not waited for
    assert not [pid for pid in _children() if _command(pid).startswith("sleep")]


def _children() -> list[int]:
    listed = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return [int(pid) for pid in listed]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
