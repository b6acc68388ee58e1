"""A web worker thread's end of the mules' notices: the sockets it sleeps on, its address, its job ids.

Both paths of the mule client use it: the data path (:class:`app.mule_client.MuleJobs`) waits
on it for its jobs' results, the control path (:class:`app.mule_control.MuleControl`) for a
mule's answer to a load.  :class:`Channels` hands each thread its own, in each process.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from serving.messages import NOTICE_BYTES, MessageError, Notice, claims_address

logger = logging.getLogger(__name__)


@dataclass
class Channel:
    """One worker thread's end of the notices: its two sockets, its address and its job ids.

    Made on a thread's first request in a process (a forked worker makes new ones) and
    used by that thread alone.  "Done" notices arrive on ``done``, which the thread sleeps
    on; "claimed" notices on ``claims``, which it reads only when it wakes anyway.
    ``abandoned`` is True from the moment a request's jobs are sent until its wait has
    read every "done" notice they cause: a wait that ended early (deadline, failure)
    leaves notices behind, which :meth:`begin` discards before the next request.
    """

    pid: int
    address: bytes
    done: socket.socket
    claims: socket.socket
    poller: select.poll
    id_prefix: bytes
    counter: Iterator[int]
    abandoned: bool = False

    @classmethod
    def open(cls) -> Channel:
        address = b"\0forecast-worker-" + os.urandom(12).hex().encode()
        done = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        done.bind(address)
        claims = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        claims.bind(claims_address(address))
        for sock in (done, claims):
            sock.setblocking(False)  # waits happen in poll(), never in recv()
        poller = select.poll()
        poller.register(done, select.POLLIN)
        return cls(os.getpid(), address, done, claims, poller, os.urandom(8), itertools.count())

    def close(self) -> None:
        for sock in (self.done, self.claims):
            sock.close()

    def begin(self) -> None:
        """Before a request sends its jobs: drop notices earlier requests of this thread left behind.

        The claims socket always holds the last request's claims (they are read only on ticks).
        """
        if self.abandoned:
            _discard(self.done)
        _discard(self.claims)
        self.abandoned = True

    def end(self) -> None:
        """Every "done" notice of the request was read: nothing is left behind."""
        self.abandoned = False

    def new_job_id(self) -> bytes:
        """This thread's 8 random bytes and its count of jobs: unique without a syscall per job.

        (``os.urandom`` is one, and releases the GIL the worker's other threads wait for.)
        """
        return self.id_prefix + next(self.counter).to_bytes(8, "big")

    def notices(self, deadline: float, tick_s: float) -> Iterator[Notice | None]:
        """Yield "done" notices as they arrive, and None every ``tick_s``; stop at ``deadline``.

        Sleeps in ``poll()``: the thread wakes when a mule writes or a tick is due, never spins.
        """
        next_tick = time.time() + tick_s
        while (now := time.time()) < deadline:
            if now >= next_tick:
                next_tick = now + tick_s
                yield None
                continue
            # poll() first: it returns at once when a notice is waiting, and saves the failed
            # recv() (a syscall and an exception) that a notice not yet sent would cost.
            if not self.poller.poll(max(1, math.ceil((min(deadline, next_tick) - now) * 1000))):
                continue
            try:
                data = self.done.recv(NOTICE_BYTES)
            except BlockingIOError:
                continue
            try:
                yield Notice.decode(data)
            except MessageError:
                logger.warning("ignored a malformed notice (%d bytes)", len(data))

    def received_claims(self) -> Iterator[Notice]:
        """The "claimed" notices waiting now (never blocks)."""
        try:
            while True:
                yield Notice.decode(self.claims.recv(NOTICE_BYTES))
        except BlockingIOError:
            return
        except MessageError:
            logger.warning("ignored a malformed claim notice")


def _discard(sock: socket.socket) -> None:
    try:
        while True:
            sock.recv(NOTICE_BYTES)
    except BlockingIOError:
        pass


class Channels:
    """Each thread's :class:`Channel` in this process; thread-safe (each thread reads its own)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def mine(self) -> Channel:
        """This thread's channel in this process (a forked worker makes its own)."""
        channel: Channel | None = getattr(self._local, "channel", None)
        if channel is None or channel.pid != os.getpid():
            channel = self._local.channel = Channel.open()
        return channel
