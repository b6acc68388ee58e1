"""Flask JSON through orjson: several times faster than the stdlib encoder on the hot path."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider

from app.encoding import json_line


class OrjsonProvider(JSONProvider):
    """``app.json``: compact output, keys in insertion order (dates arrive as ISO strings)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return Response(json_line(obj), mimetype="application/json")
