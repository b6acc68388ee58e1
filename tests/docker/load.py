"""Closed-loop load for the image tests: threads posting one-row predictions, every outcome recorded.

Each request opens its own connection, so an outcome is unambiguous: ``refused`` means the
connection was never accepted (the request was never in flight: refused, or reset by the kernel
while still queued, before the connect returned); anything else after the connect is an answer
(its status) or a lost request (the exception's name).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from tests.helpers import wait_for

BODY = b'{"date": "2018-01-21", "store": 10, "item": 23}'
REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic() when the request was sent
    result: str  # "200", "503", ..., REFUSED, or the name of the exception that lost the request


class Load:
    """``with Load(url, threads=8) as load:`` posts until the block ends."""

    def __init__(self, url: str, threads: int = 8, timeout_s: float = 30) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = self._one()
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.result == REFUSED:
                self._stop.wait(0.05)  # nothing listens: pace the retries instead of spinning

    def _one(self) -> Outcome:
        started = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.connect()
        except (ConnectionRefusedError, ConnectionResetError):  # no request was sent on it
            return Outcome(started, REFUSED)
        try:
            connection.request("POST", "/predict", BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            return Outcome(started, str(response.status))
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(started, type(exc).__name__)
        finally:
            connection.close()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def count(self, result: int | str) -> int:
        return sum(1 for outcome in self.snapshot() if outcome.result == str(result))

    def wait_for_answers(self, answers: int, timeout_s: float = 60) -> None:
        """Return once ``answers`` requests more than now were answered 200."""
        target = self.count(200) + answers
        wait_for(lambda: self.count(200) >= target, timeout_s, self.summary)

    def failures(self, since: float = 0.0) -> list[Outcome]:
        """Requests sent at or after ``since`` that were neither answered 200 nor refused."""
        return [o for o in self.snapshot() if o.started >= since and o.result not in ("200", REFUSED)]

    def summary(self) -> str:
        counts = Counter(outcome.result for outcome in self.snapshot())
        return ", ".join(f"{result}: {n}" for result, n in sorted(counts.items()))
