"""The mutation gate cannot go stale: every mutant's snippet is in its file exactly once.

``python -m tests.mutants`` breaks each promise and runs the tests that should catch it; a
snippet the code no longer has would make that mutant test nothing.  This runs in ``make test``,
so the code and the gate move together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutants import MUTANTS, ROOT, Mutant, run


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.claim)
def test_each_snippet_occurs_once_in_its_file(mutant: Mutant) -> None:
    assert mutant.occurrences() == 1, f"{mutant.path}: update the mutant for {mutant.claim!r}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.claim)
def test_each_break_changes_the_file_and_names_existing_tests(mutant: Mutant) -> None:
    assert mutant.new != mutant.old
    for where in mutant.catch:
        assert (ROOT / where).exists(), where


def test_claims_are_unique() -> None:
    claims = [m.claim for m in MUTANTS]
    assert len(claims) == len(set(claims))


def test_a_stranded_snippet_is_reported_stale_not_run(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text("x = 1\n")
    stranded = Mutant("a promise", "module.py", "x = 2", "x = 3")
    present = Mutant("a promise", "module.py", "x = 1", "x = 3")
    assert (stranded.occurrences(tmp_path), present.occurrences(tmp_path)) == (0, 1)


def test_tier_follows_the_catching_tests() -> None:
    assert Mutant("c", "p", "a", "b").tier == "unit"
    assert Mutant("c", "p", "a", "b", ("tests/stack/test_api.py",)).tier == "stack"


def test_a_mutant_breaks_the_snapshot_not_the_live_checkout(tmp_path: Path) -> None:
    """``run`` judges a copy of the snapshot it is given: a test that fails there (and not in this checkout)
    is what it reports, and a mutant's break reaches only its copy."""
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "promise.py").write_text("VALUE = 1\n")
    (tmp_path / "tests" / "unit" / "test_promise.py").write_text(
        "import sys, pathlib\nsys.path.insert(0, str(pathlib.Path(__file__).parents[2]))\n"
        "from promise import VALUE\n\ndef test_value():\n    assert VALUE == 1\n"
    )
    catch = ("tests/unit/test_promise.py",)
    assert run(tmp_path, None, catch) == []
    broken = Mutant("the value is one", "promise.py", "VALUE = 1", "VALUE = 2", catch)
    assert run(tmp_path, broken) == ["tests/unit/test_promise.py::test_value"]
    assert (tmp_path / "promise.py").read_text() == "VALUE = 1\n"  # the snapshot itself unbroken
