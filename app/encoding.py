"""The bytes of JSON answers (orjson: several times faster than the stdlib encoder on the hot path).

No Flask here: the ``/predict`` use case encodes its own answers; Flask's JSON provider
(:mod:`app.json`) uses the same function for every other answer.
"""

from __future__ import annotations

from typing import Any

import orjson


def json_line(obj: Any) -> bytes:
    """``obj`` as compact JSON and a newline: the body of every JSON answer of this service."""
    return orjson.dumps(obj) + b"\n"


def json_exact(obj: Any) -> bytes:
    """``obj`` as compact JSON with no newline: the bytes the Ray Serve service (FastAPI) answered."""
    return orjson.dumps(obj)
