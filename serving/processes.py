"""Process-level facts the uWSGI processes need: liveness (a mule holding a job, a dead worker's metrics file), and
how their C library gives memory back."""

from __future__ import annotations

import ctypes
import os

_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; None with another C library


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


def release_freed_memory() -> bool:
    """Hand the memory malloc holds free back to the system (glibc's ``malloc_trim(0)``); True if any was.

    glibc keeps freed blocks for reuse: after each large block it unmaps, it serves blocks
    up to that size (at most 32 MB) from its heaps, and a heap gives back only free space
    at its top.  After a 500,000-row batch a web worker kept 30-50 MB it no longer used, and
    after a few batches each of the four had grown so (measured).  Trimming costs 0.5-3 ms
    (measured after 45,000 and 500,000 rows); called once a large answer is sent.  False
    where the C library has no ``malloc_trim`` (not glibc).

    (Fixing glibc's threshold with ``mallopt`` instead kept memory down too, but every large
    block became a fresh mapping: a 45,000-row request's worker time rose 20-35%.)
    """
    return _MALLOC_TRIM is not None and bool(_MALLOC_TRIM(0))
