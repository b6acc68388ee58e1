"""The bound on a web worker's jobs in flight, which keeps the uWSGI queue from wrapping."""

from __future__ import annotations

import threading


class Admission:
    """This worker process's share of the queue: a bound on its jobs in flight.

    The uWSGI queue silently overwrites its oldest slot when full, so the jobs
    in flight across the machine must stay below its slot count.  Each worker
    process gets a fixed share, ``(slots - 1) // processes``
    (:attr:`serving.settings.Settings.jobs_in_flight_per_worker`), and counts its
    own jobs under a thread lock: the shares add up to less than the queue, so
    it can never wrap, and no lock or counter is shared between processes (a
    worker that dies takes its count with it).  Jobs a mule has pulled still
    count until their worker has the result: the bound is conservative.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def acquire(self, jobs: int) -> bool:
        """Add ``jobs`` if this process stays within its share; False (nothing added) if not."""
        with self._lock:
            if self.in_flight + jobs > self.limit:
                return False
            self.in_flight += jobs
            return True

    def release(self, jobs: int) -> None:
        """Give back ``jobs`` acquired earlier (answered, failed or given up)."""
        with self._lock:
            self.in_flight -= jobs
