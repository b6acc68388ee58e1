"""A fake of the ``uwsgi`` module for in-process tests of the workers' and the mules' logic.

One :class:`FakeUwsgi` is the state uWSGI shares between processes (the queue, the caches,
the shared area, each mule's message socket); worker code takes it as its ``uwsgi``, and
:meth:`FakeUwsgi.mule` gives the module as mule N sees it.  Threads stand in for processes.
The queue keeps uWSGI's own semantics (``notes/uwsgi.md``): a push onto an unread slot
overwrites it and still answers True; the fake counts such overwrites, so a test can
assert that the admission bound kept the queue from wrapping.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class MuleIdle(Exception):
    """Raised by a mule's ``mule_get_msg`` with nothing to read, when the test asked not to block."""


class FakeUwsgi:
    """The shared uWSGI state: queue, caches, shared area, mule inboxes; thread-safe."""

    def __init__(self, queue_slots: int = 16, mules: int = 2) -> None:
        self.queue_size = queue_slots
        self._slots: list[bytes | None] = [None] * queue_slots
        self._push_at = 0
        self._pull_at = 0
        self.overwrites = 0  # pushes that landed on an unread slot: jobs uWSGI would have lost
        self._lock = threading.Lock()
        self.caches: dict[str, dict[str, bytes]] = {"results": {}, "state": {}}
        self.area = bytearray(4096)
        self.inboxes: dict[int, queue.Queue[bytes]] = {m: queue.Queue() for m in range(1, mules + 1)}
        self.after_pull: Callable[[bytes | None], None] | None = None  # a test's hook, run after each pull

    # -- queue ---------------------------------------------------------------

    def queue_push(self, message: bytes) -> bool:
        with self._lock:
            if self._slots[self._push_at] is not None:
                self.overwrites += 1
            self._slots[self._push_at] = bytes(message)
            self._push_at = (self._push_at + 1) % self.queue_size
        return True

    def queue_pull(self) -> bytes | None:
        with self._lock:
            item = self._slots[self._pull_at]
            if item is not None:
                self._slots[self._pull_at] = None
                self._pull_at = (self._pull_at + 1) % self.queue_size
        if self.after_pull is not None:
            self.after_pull(item)
        return item

    def queue_slot(self) -> int:
        return self._push_at

    def queue_pull_slot(self) -> int:
        return self._pull_at

    def queued(self) -> int:
        with self._lock:
            return sum(item is not None for item in self._slots)

    # -- caches, shared area, messages ----------------------------------------

    def cache_get(self, key: str, cache: str) -> bytes | None:
        return self.caches[cache].get(key)

    def cache_update(self, key: str, value: bytes, expires: int = 0, cache: str = "") -> bool:
        self.caches[cache][key] = bytes(value)
        return True

    def cache_del(self, key: str, cache: str) -> None:
        self.caches[cache].pop(key, None)

    def cache_exists(self, key: str, cache: str) -> bool:
        return key in self.caches[cache]

    def sharedarea_memoryview(self, area: int) -> memoryview:
        assert area == 0
        return memoryview(self.area)

    def mule_msg(self, message: bytes, mule_id: int) -> bool:
        self.inboxes[mule_id].put(bytes(message))
        return True

    def mule(self, mule_id: int, block: bool = False) -> FakeMuleUwsgi:
        """The module as mule ``mule_id`` sees it; ``block`` False: an empty inbox raises :class:`MuleIdle`."""
        return FakeMuleUwsgi(self, mule_id, block)


class FakeMuleUwsgi:
    """``uwsgi`` inside one mule: its id, its own inbox, and its user harakiri; the rest is shared."""

    def __init__(self, shared: FakeUwsgi, mule_id: int, block: bool) -> None:
        self.shared = shared
        self._id = mule_id
        self.block = block
        self.harakiri = 0  # the user harakiri armed now (0: none)
        self.harakiri_calls: list[int] = []

    def mule_id(self) -> int:
        return self._id

    def mule_get_msg(self, timeout: int = -1) -> bytes:
        inbox = self.shared.inboxes[self._id]
        try:
            if timeout == 0:
                return inbox.get_nowait()
            if not self.block:
                return inbox.get_nowait()
            return inbox.get(timeout=None if timeout < 0 else timeout)
        except queue.Empty:
            if timeout != 0 and not self.block:
                raise MuleIdle from None
            return b""  # uWSGI's answer on timeout

    def set_user_harakiri(self, seconds: int) -> None:
        self.harakiri = seconds
        self.harakiri_calls.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shared, name)
