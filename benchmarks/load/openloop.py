"""Open-loop load at a fixed arrival rate: request i is due at start + i / rate, whatever came back.

    python openloop.py '{"url": "http://127.0.0.1:8000", "rate": 400, "duration": 10}'

wrk and autocannon are closed loops (a client sends when its last answer arrives), which hides
queueing delay; autocannon's rate cap fires its clients' timers together, in bursts. wrk2, the
usual open-loop tool, is not packaged here, so this does what it does, in ~100 lines of stdlib:
requests leave on schedule over a pool of keep-alive connections (a new connection opens when
none is free, up to ``max_connections``; past that a request waits for one), and latency is
measured from the *scheduled* time, so
time spent waiting for a free connection counts (no coordinated omission). Bodies cycle over the
same 10,000 rows as cannon.js. Prints a JSON summary like cannon.js.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from urllib.parse import urlsplit

GRACE_S = 10.0
# More connections than the server can hold waiting (uWSGI's backlog of 512 + 64 worker threads):
# with fewer, an overloaded server queues every connection and the excess waits in this generator,
# hidden from the server, instead of meeting nginx's 503. Below nginx's 4,096 worker connections,
# which count both sides of a proxied request.
MAX_CONNECTIONS = 2048


def bodies() -> list[bytes]:
    rng = random.Random(42)
    rows = []
    for _ in range(10_000):
        date = f"{rng.randint(2017, 2018)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append(json.dumps({"date": date, "store": rng.randint(1, 10), "item": rng.randint(1, 50)}).encode())
    return rows


async def run(url: str, rate: float, duration: float, max_connections: int, timeout: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payloads = bodies()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    latencies: list[float] = []
    ok_latencies: list[float] = []
    ok_from_send: list[float] = []
    late: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0

    async def one(index: int, due: float) -> None:
        nonlocal opened, errors
        if not idle.empty() or opened >= max_connections:
            reader, writer = await idle.get()  # waits without polling for a connection to come back
        else:
            opened += 1
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                errors += 1
                opened -= 1
                return
        body = payloads[index % len(payloads)]
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sent = time.perf_counter()
        late.append((sent - due) * 1000)
        try:
            writer.write(head.encode() + body)
            status_line = await asyncio.wait_for(reader.readline(), timeout)
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            status = status_line.split()[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((time.perf_counter() - due) * 1000)
            if status.startswith("2"):
                ok_latencies.append(latencies[-1])
                ok_from_send.append((time.perf_counter() - sent) * 1000)
            idle.put_nowait((reader, writer))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError):
            errors += 1
            opened -= 1
            writer.close()

    start = time.perf_counter()
    tasks = []
    total = int(rate * duration)
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    # A system far below the offered rate would keep us waiting for its backlog for many minutes:
    # what is not answered 10 s after the schedule ends is cancelled and counted as unanswered.
    _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, start + duration + GRACE_S - time.perf_counter()))
    for task in unfinished:
        task.cancel()
    elapsed = time.perf_counter() - start
    latencies.sort()
    ok_latencies.sort()
    ok_from_send.sort()
    late.sort()

    def pct(p: float, values: list[float] = latencies) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 2) if values else 0.0

    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {
        "requests": total,
        "seconds": round(elapsed, 2),
        "rps": round(ok / elapsed, 1),
        "offered_rps": rate,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
        "ok_latency_ms": {"p50": pct(0.5, ok_latencies), "p99": pct(0.99, ok_latencies)},
        # the same, counted from when the request actually left (excludes waiting for a connection
        # or for this generator's own CPU), and how late requests left: large values mean the
        # generator, not the server, was the bottleneck
        "ok_latency_from_send_ms": {"p50": pct(0.5, ok_from_send), "p99": pct(0.99, ok_from_send)},
        "send_lag_ms": {"p50": pct(0.5, late), "p99": pct(0.99, late)},
        "statuses": statuses,
        # errors: requests that failed (connection refused or reset, timeout, truncated answer);
        # in_flight_at_close: sent, answer not back when the window closed; not_sent: still waiting in
        # this generator for a connection or for its CPU then (the generator's limit, not an answer)
        "errors": errors,
        "in_flight_at_close": len(unfinished) - (total - len(late)),
        "not_sent": total - len(late),
        "unanswered": len(unfinished),
        "connections": opened,
    }


def main() -> int:
    opts = json.loads(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:  # room for MAX_CONNECTIONS sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
