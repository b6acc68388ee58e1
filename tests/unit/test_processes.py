"""Memory a large request used goes back to the system, whichever thread of a worker served it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A large block freed raises glibc's thresholds; a smaller large block then comes from a heap and stays.
PROGRAM = textwrap.dedent("""
    import sys, threading
    from serving.processes import one_malloc_arena, release_freed_memory

    def rss_kb():
        with open("/proc/self/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0])

    def large_request():
        block = bytearray(24 << 20)
        del block
        block = bytearray(16 << 20)
        del block

    if "one-arena" in sys.argv:
        assert one_malloc_arena()
    before = rss_kb()
    if "threads" in sys.argv:  # as a web worker's threads take requests in turn
        for _ in range(3):
            thread = threading.Thread(target=large_request)
            thread.start()
            thread.join()
    else:
        large_request()
    kept = rss_kb() - before
    release_freed_memory()
    print(kept, rss_kb() - before)
""")


def kept_mb(*modes: str) -> tuple[float, float]:
    """MB a process holds after a large request's blocks are freed, and after it hands freed memory back."""
    command = [sys.executable, "-c", PROGRAM, *modes]
    kept, released = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    return int(kept) / 1024, int(released) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")
def test_freed_memory_is_handed_back() -> None:
    kept, released = kept_mb()
    assert kept > 12  # what it is for: glibc keeps the freed 16 MB
    assert released < 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")
def test_in_one_arena_what_other_threads_freed_is_handed_back_too() -> None:
    assert kept_mb("threads")[1] > 24  # each thread's own arena keeps its 16 MB: trimming cannot reach them
    assert kept_mb("threads", "one-arena")[1] < 4
