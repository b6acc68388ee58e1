"""The floor: a raw WSGI callable answering a constant, no Flask, no mules, no model."""

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"31.7\n"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
