"""Memory a large request used goes back to the system, whichever thread of a worker served it; a forked child's
garbage collection leaves the pages it shares with its parent shared."""

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


# The parent holds ~10 MB of small objects, as the uWSGI master holds the app; the child runs a full collection, as a
# web worker does minutes into a load, and reports how much memory it had to copy (its private dirty pages grew).
FORK_PROGRAM = textwrap.dedent("""
    import gc, os, sys
    from serving.processes import keep_inherited_objects_shared

    def private_dirty_kb():
        with open("/proc/self/smaps_rollup") as rollup:
            return int(rollup.read().split("Private_Dirty:")[1].split()[0])

    objects = [[n] for n in range(150_000)]  # lists stay tracked by the collector (tuples of atoms do not)
    if "freeze" in sys.argv:
        keep_inherited_objects_shared()
    read, write = os.pipe()
    if os.fork() == 0:
        before = private_dirty_kb()
        gc.collect()
        os.write(write, str(private_dirty_kb() - before).encode())
        os._exit(0)
    os.wait()
    print(os.read(read, 64).decode())
""")


def copied_by_a_childs_collection_mb(*modes: str) -> float:
    command = [sys.executable, "-c", FORK_PROGRAM, *modes]
    return int(subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc")
def test_objects_made_before_fork_stay_shared_through_a_childs_garbage_collection() -> None:
    assert copied_by_a_childs_collection_mb() > 5  # what it is for: the collection copies every page it walks
    assert copied_by_a_childs_collection_mb("freeze") < 1
