"""The open-loop generator's accounting of requests not answered when its window closes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from benchmarks.load import openloop


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connections_are_errors_not_requests_in_flight_or_unsent() -> None:
    # Before the fix: "not sent" was every request but those sent, so 10 refused connections read as
    # 10 not sent and -10 in flight.
    result = asyncio.run(openloop.run(f"http://127.0.0.1:{closed_port()}", 100, 0.1, 8, 1.0))
    assert result["errors"] == 10
    assert (result["in_flight_at_close"], result["not_sent"], result["unanswered"]) == (0, 0, 0)


def test_a_server_that_never_answers_leaves_the_sent_in_flight_and_the_rest_unsent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openloop, "GRACE_S", 0.3)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads every request, answers none, until the client goes away
        writer.close()

    async def measure() -> dict[str, object]:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await openloop.run(f"http://127.0.0.1:{port}", 100, 0.1, 3, 30.0)

    result = asyncio.run(measure())
    # 3 connections, one request each, never answered; the other 7 wait for a connection
    assert (result["in_flight_at_close"], result["not_sent"], result["unanswered"]) == (3, 7, 10)
    assert result["errors"] == 0


def test_the_summary_splits_unanswered_requests_into_in_flight_and_not_sent() -> None:
    tally = openloop.Tally()
    for due in (0.0, 0.1, 0.2):
        tally.sent(due, due)
    tally.answered("200", 0.0, 0.0)
    tally.failed()
    tally.errors += 2  # two that got no connection: never sent, not counted in flight
    summary = openloop.summary(tally, 6, 1.0, 6, unanswered=1, connections=1, in_flight=tally.in_flight)
    assert (summary["in_flight_at_close"], summary["not_sent"], summary["errors"]) == (1, 0, 3)
