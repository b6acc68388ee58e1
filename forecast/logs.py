"""Logging setup shared by web workers, mules and the CLI.

Call :func:`configure_logging` first thing in each process's entry point.  It
is idempotent (a second call only changes the role tag), writes to stderr (which uWSGI
collects), and stamps every line with the process role, e.g. ``mule 2``.
"""

from __future__ import annotations

import logging
import sys

_HANDLER_NAME = "forecast"


def configure_logging(level: str, role: str) -> None:
    """Send ``forecast``, ``app`` and ``mules`` loggers to stderr, tagged with ``role``."""
    for name in ("forecast", "app", "mules"):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        logger.propagate = False
        handler = next((h for h in logger.handlers if h.get_name() == _HANDLER_NAME), None)
        if handler is None:  # a forked process keeps its parent's handler: only the role changes
            handler = logging.StreamHandler(sys.stderr)
            handler.set_name(_HANDLER_NAME)
            logger.addHandler(handler)
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s"))
