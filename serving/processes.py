"""Process liveness, as the web workers need it (a mule holding a job, a dead worker's metrics file)."""

from __future__ import annotations

import os


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
