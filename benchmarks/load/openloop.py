"""Open-loop load at a fixed arrival rate: request i is due at start + i / rate, whatever came back.

    python openloop.py '{"url": "http://127.0.0.1:8000", "rate": 400, "duration": 10}'

Run as its own process by the harness (``benchmarks/scenarios.py``), one per measured run.

wrk and autocannon are closed loops (a client sends when its last answer arrives), which hides
queueing delay; autocannon's rate cap fires its clients' timers together, in bursts. wrk2, the
usual open-loop tool, is not packaged here, so this does what it does, in stdlib only:
requests leave on schedule over a pool of keep-alive connections (a new connection opens when
none is free, up to ``max_connections``; past that a request waits for one), and latency is
measured from the *scheduled* time, so
time spent waiting for a free connection counts (no coordinated omission). Bodies cycle over
10,000 rows drawn from the same ranges as cannon.js's but with Python's generator (seed 42): the
same rows for every system, not the same rows as cannon.js. Prints a JSON summary like cannon.js.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GRACE_S = 10.0
# More connections than the server can hold waiting (uWSGI's backlog of 512 + 64 worker threads):
# with fewer, an overloaded server queues every connection and the excess waits in this generator,
# hidden from the server, instead of meeting nginx's 503. Below nginx's 4,096 worker connections,
# which count both sides of a proxied request.
MAX_CONNECTIONS = 2048

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# What one exchange can fail with: refused or reset, timeout, truncated answer, no status line.
EXCHANGE_ERRORS = (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError)


def bodies() -> list[bytes]:
    """The 10,000 request bodies, the same every run (fixed seed)."""
    rng = random.Random(42)
    rows = []
    for _ in range(10_000):
        date = f"{rng.randint(2017, 2018)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append(json.dumps({"date": date, "store": rng.randint(1, 10), "item": rng.randint(1, 50)}).encode())
    return rows


def percentile(values: list[float], p: float) -> float:
    """The ``p`` quantile (0-1) of sorted ``values``, rounded to 0.01; 0.0 when there are none."""
    return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else 0.0


@dataclass
class Tally:
    """What the requests of one run came to, noted as each ends (all on one event loop: no lock).

    Times are ``time.perf_counter()`` seconds; the lists hold milliseconds.
    """

    latencies: list[float] = field(default_factory=list)  # every answer, from its scheduled time
    ok_latencies: list[float] = field(default_factory=list)  # 2xx answers, from their scheduled time
    ok_from_send: list[float] = field(default_factory=list)  # 2xx answers, from when they left
    send_lag: list[float] = field(default_factory=list)  # how late each request left: one per request sent
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # requests that failed: no connection, or the exchange failed
    in_flight: int = 0  # requests sent whose exchange has not ended yet

    def sent(self, due: float, at: float) -> None:
        self.send_lag.append((at - due) * 1000)
        self.in_flight += 1

    def failed(self) -> None:
        """A sent request's exchange failed."""
        self.errors += 1
        self.in_flight -= 1

    def answered(self, status: str, due: float, sent: float) -> None:
        self.in_flight -= 1
        finished = time.perf_counter()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append((finished - due) * 1000)
        if status.startswith("2"):
            self.ok_latencies.append((finished - due) * 1000)
            self.ok_from_send.append((finished - sent) * 1000)

    def ok_count(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))


class ConnectionPool:
    """Keep-alive connections to one server, at most ``limit`` open at a time.

    ``acquire`` takes an idle connection, or opens one while fewer than ``limit`` are open, or
    else waits (without polling) until one is released. ``opened`` counts the connections open
    now: a failed or discarded connection no longer counts.
    """

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.opened = 0
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()

    async def acquire(self) -> Connection | None:
        """A connection for one exchange; None if a new one could not be opened."""
        if not self._idle.empty() or self.opened >= self.limit:
            return await self._idle.get()
        self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.opened -= 1
            return None

    def release(self, connection: Connection) -> None:
        """Give back a connection whose exchange ended cleanly, for the next request."""
        self._idle.put_nowait(connection)

    def discard(self, connection: Connection) -> None:
        """Close a connection whose exchange failed (or was cancelled)."""
        self.opened -= 1
        connection[1].close()

    def close(self) -> None:
        """Close the idle connections (at the end of a run)."""
        while not self._idle.empty():
            self.discard(self._idle.get_nowait())


def request_bytes(host: str, body: bytes) -> bytes:
    """A keep-alive ``POST /predict`` with a JSON ``body``."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(connection: Connection, request: bytes, timeout: float) -> str:
    """Send ``request``, read the whole answer; return its status code ("200").

    Raises one of :data:`EXCHANGE_ERRORS` when the status line takes over ``timeout`` s or the
    connection fails, closes or cuts the answer short.
    """
    reader, writer = connection
    writer.write(request)
    status_line = await asyncio.wait_for(reader.readline(), timeout)
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status_line.split()[1].decode()


@dataclass
class OpenLoop:
    """One run: requests due on a fixed schedule, each sent over the pool and noted in the tally."""

    host: str
    pool: ConnectionPool
    timeout: float
    payloads: list[bytes] = field(default_factory=bodies)
    tally: Tally = field(default_factory=Tally)

    async def one(self, index: int, due: float) -> None:
        """Request ``index``, due at ``due``: wait for a connection, send, note how it ended."""
        connection = await self.pool.acquire()
        if connection is None:
            self.tally.errors += 1
            return
        request = request_bytes(self.host, self.payloads[index % len(self.payloads)])
        sent = time.perf_counter()
        self.tally.sent(due, sent)
        try:
            status = await exchange(connection, request, self.timeout)
        except EXCHANGE_ERRORS:
            self.tally.failed()
            self.pool.discard(connection)
            return
        except asyncio.CancelledError:  # the window closed with this request in flight
            self.pool.discard(connection)
            raise
        self.tally.answered(status, due, sent)
        self.pool.release(connection)

    async def send_on_schedule(self, start: float, rate: float, total: int) -> list[asyncio.Task[None]]:
        """Start request i at ``start + i / rate`` (or as soon after as this loop gets to it)."""
        tasks = []
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(index, due)))
        return tasks


def summary(
    tally: Tally, total: int, elapsed: float, rate: float, unanswered: int, connections: int, in_flight: int
) -> dict[str, object]:
    """The JSON summary of a run (keys as cannon.js's where they mean the same).

    ``unanswered``: requests whose task had not ended when the window closed; ``in_flight``: those of them
    sent (``tally.in_flight`` then); the rest were never sent. A request that never got a connection
    ended as an error, sent or not, and is in neither: counting it as "not sent" (every request
    but those sent) once made ``in_flight_at_close`` negative when connections were refused.
    """
    latencies, ok_latencies = sorted(tally.latencies), sorted(tally.ok_latencies)
    ok_from_send, send_lag = sorted(tally.ok_from_send), sorted(tally.send_lag)
    not_sent = unanswered - in_flight
    return {
        "requests": total,
        "seconds": round(elapsed, 2),
        "rps": round(tally.ok_count() / elapsed, 1),
        "offered_rps": rate,
        "latency_ms": {
            p: percentile(latencies, q) for p, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "ok_latency_ms": {"p50": percentile(ok_latencies, 0.5), "p99": percentile(ok_latencies, 0.99)},
        # the same, counted from when the request actually left (excludes waiting for a connection
        # or for this generator's own CPU), and how late requests left: large values mean the
        # generator, not the server, was the bottleneck
        "ok_latency_from_send_ms": {"p50": percentile(ok_from_send, 0.5), "p99": percentile(ok_from_send, 0.99)},
        "send_lag_ms": {"p50": percentile(send_lag, 0.5), "p99": percentile(send_lag, 0.99)},
        "statuses": tally.statuses,
        # errors: requests that failed (connection refused or reset, timeout, truncated answer);
        # in_flight_at_close: sent, answer not back when the window closed; not_sent: still waiting in
        # this generator for a connection or for its CPU then (the generator's limit, not an answer)
        "errors": tally.errors,
        "in_flight_at_close": in_flight,
        "not_sent": not_sent,
        "unanswered": unanswered,
        "connections": connections,
    }


async def run(url: str, rate: float, duration: float, max_connections: int, timeout: float) -> dict[str, object]:
    """Offer ``rate`` requests/s to ``url`` for ``duration`` s; the summary of what came back."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = OpenLoop(host, ConnectionPool(host, port, max_connections), timeout)
    start = time.perf_counter()
    total = int(rate * duration)
    tasks = await loop.send_on_schedule(start, rate, total)
    # A system far below the offered rate would keep us waiting for its backlog for many minutes:
    # what is not answered 10 s after the schedule ends is cancelled and counted as unanswered.
    _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, start + duration + GRACE_S - time.perf_counter()))
    in_flight, connections = loop.tally.in_flight, loop.pool.opened  # before any cancelled task runs again
    for task in unfinished:
        task.cancel()
    elapsed = time.perf_counter() - start
    await asyncio.gather(*unfinished, return_exceptions=True)  # each closes its connection
    loop.pool.close()
    return summary(loop.tally, total, elapsed, rate, len(unfinished), connections, in_flight)


def raise_open_files_limit() -> None:
    """Room for MAX_CONNECTIONS sockets: the soft limit on open files up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    opts = json.loads(sys.argv[1])
    raise_open_files_limit()
    result = asyncio.run(
        run(
            opts["url"],
            float(opts["rate"]),
            float(opts["duration"]),
            int(opts.get("max_connections", MAX_CONNECTIONS)),
            float(opts.get("timeout", 30)),
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
