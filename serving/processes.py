"""Process-level facts the uWSGI processes need: liveness (a mule holding a job, a dead worker's metrics file), how
their C library gives memory back, and what stays shared with the processes the master forks."""

from __future__ import annotations

import ctypes
import gc
import os

_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc's; None with another C library
_MALLOPT = getattr(_LIBC, "mallopt", None)
M_ARENA_MAX = -8  # mallopt's parameter (<malloc.h>)


def process_alive(pid: int) -> bool:
    """False when ``pid`` is gone or a zombie (killed, not yet reaped by the uWSGI master).

    A SIGKILLed mule stays a zombie until uWSGI reaps it, up to a second later, so
    ``kill(pid, 0)`` alone would call it alive: the state letter in ``/proc/<pid>/stat``
    tells.  A process of another user (``PermissionError``) is alive.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def one_malloc_arena() -> bool:
    """Have every thread of this process (and of the processes it forks) allocate from glibc's main arena.

    By default each thread that allocates while another holds the arena's lock gets an arena
    of its own (up to 8 per core), and glibc gives memory back from the top of those only by
    its own thresholds, which rise with the blocks it frees: a web worker whose threads took
    500,000-row batches in turn kept 13-44 MB per arena, and grew by ~25 MB per batch to
    over 200 MB (measured).  In one arena :func:`release_freed_memory` gives it all back.
    The threads allocate under the GIL anyway.  Called in the uWSGI master before it forks.
    False where the C library has no ``mallopt`` (not glibc) or refuses.
    """
    return _MALLOPT is not None and bool(_MALLOPT(M_ARENA_MAX, 1))


def release_freed_memory() -> bool:
    """Hand the memory malloc holds free back to the system (glibc's ``malloc_trim(0)``); True if any was.

    glibc keeps freed blocks for reuse: after each large block it unmaps, it serves blocks
    up to that size (at most 32 MB) from its heaps, and trims a heap's top only beyond a
    threshold that rises with it.  Trimming costs 0.5-3 ms (measured after 45,000 and
    500,000 rows); the adapters call it once a large request is answered.  False where the
    C library has no ``malloc_trim`` (not glibc).

    (Fixing glibc's thresholds with ``mallopt`` instead kept memory down too, but every large
    block became a fresh mapping: a 45,000-row request's worker time rose 20-35%.)
    """
    return _MALLOC_TRIM is not None and bool(_MALLOC_TRIM(0))


def keep_inherited_objects_shared() -> None:
    """Put every object this process holds now beyond the garbage collector's reach (``gc.freeze``), just before
    it forks: the children share those objects' pages until they write to them.

    A child's full collection walks every object it tracks and writes to each one's header, which
    copies every page it shares with its parent: minutes into a load, both web workers grew ~10 MB
    and the master and mules a little each, all at once (docs/how-it-works.md).  Frozen objects
    are never collected; what the app builds at import is meant to live as long as the process.
    """
    gc.freeze()
