"""Logging setup shared by web workers, mules and the CLI.

Call :func:`configure_logging` first thing in each process's entry point.  It
is idempotent (a second call only changes the role and format), writes to
stderr (which uWSGI collects), and stamps every line with the process role,
e.g. ``mule 2``.  Structured fields passed as ``extra={...}`` are appended as
``key=value`` in the text format and are keys of the object in the JSON format
(one object per line, from ``python-json-logger``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "forecast"
_LOGGERS = ("forecast", "app", "mules")
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "role"}


class TextFormatter(logging.Formatter):
    """``time LEVEL [role] logger: message key=value ...``."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES and v is not None}
        if not fields:
            return line
        head, newline, tail = line.partition("\n")  # a traceback stays below the fields
        return head + "".join(f" {key}={_text(value)}" for key, value in fields.items()) + newline + tail


def _text(value: Any) -> str:
    text = str(value)
    return text if text and " " not in text and '"' not in text else '"' + text.replace('"', '\\"') + '"'


def json_formatter(role: str) -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"role": role},
    )


class ContextFilter(logging.Filter):
    """Adds the fields ``context()`` returns (e.g. the current request's id) to every record."""

    def __init__(self, context: Callable[[], dict[str, Any]]) -> None:
        super().__init__(_HANDLER_NAME)
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.context().items():
            setattr(record, key, value)
        return True


def configure_logging(
    level: str, role: str, fmt: str = "text", context: Callable[[], dict[str, Any]] | None = None
) -> None:
    """Send the ``forecast``, ``app`` and ``mules`` loggers to stderr, tagged with ``role``.

    ``fmt`` is ``text`` or ``json`` (``FORECAST_LOG_FORMAT``); ``context``, if given,
    returns fields added to every line (the web workers' request id).
    """
    formatter = json_formatter(role) if fmt == "json" else TextFormatter(role)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        logger.propagate = False
        handler = next((h for h in logger.handlers if h.get_name() == _HANDLER_NAME), None)
        if handler is None:  # a forked process keeps its parent's handler: only the role changes
            handler = logging.StreamHandler(sys.stderr)
            handler.set_name(_HANDLER_NAME)
            logger.addHandler(handler)
        handler.setFormatter(formatter)
        handler.filters = [ContextFilter(context)] if context is not None else []
