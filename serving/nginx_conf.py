"""Render ``nginx.conf`` for one environment: its ``{{...}}`` placeholders and nothing else."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


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
