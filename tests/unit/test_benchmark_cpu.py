"""The benchmark's CPU accounting over a process tree whose members come and go."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.systems import cpu_by_pid, cpu_used_since

# Waits for a line, burns 0.3 s of CPU, says so, then waits until killed.
BURNER = (
    "import sys, time\nsys.stdin.readline()\nend = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\nprint('burnt', flush=True)\ntime.sleep(60)\n"
)


@contextmanager
def burner() -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield child
    finally:
        child.kill()
        child.communicate()


def burn(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "burnt\n"


def test_the_cpu_a_live_process_used_since_is_counted() -> None:
    with burner() as child:
        before = cpu_by_pid([child.pid])
        burn(child)
        assert 0.25 <= cpu_used_since(before) < 5


def test_a_process_that_ends_between_the_readings_counts_nothing_not_minus_its_past() -> None:
    with burner() as child:
        burn(child)
        before = cpu_by_pid([child.pid])
        child.kill()
        child.wait()
        assert before[child.pid] >= 0.25
        assert cpu_used_since(before) == 0.0
