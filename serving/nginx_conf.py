"""Render ``nginx.conf`` for one environment: its ``{{...}}`` placeholders and nothing else."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
READ_TIMEOUT = re.compile(r"^\s*uwsgi_read_timeout\s+(\d+)(ms|s|m|h)?\s*;", re.M)
NGINX_DEFAULT_READ_TIMEOUT_S = 60.0  # where nginx.conf sets none
_SECONDS = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def upstream_read_timeout_s(template: str) -> float:
    """How long nginx waits for uWSGI's answer: the shortest ``uwsgi_read_timeout`` in ``template`` (seconds)."""
    found = [int(value) * _SECONDS[unit or ""] for value, unit in READ_TIMEOUT.findall(template)]
    return min(found, default=NGINX_DEFAULT_READ_TIMEOUT_S)


def render(template: str, values: dict[str, str]) -> str:
    """Fill every ``{{name}}``; raises ``KeyError`` naming a placeholder without a value."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"nginx.conf placeholder {{{{{name}}}}} has no value")
        return values[name]

    return PLACEHOLDER.sub(fill, template)


def main(argv: list[str]) -> int:
    """``python -m serving.nginx_conf TEMPLATE OUTPUT name=value ...`` (used by the image's prestart.sh)."""
    template, output, *pairs = argv
    values = dict(pair.split("=", 1) for pair in pairs)
    Path(output).write_text(render(Path(template).read_text(), values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
