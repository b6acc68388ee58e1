"""The uWSGI floors, served in the foreground as ``python -m launcher`` serves the product:

    PORT=8000 .venv/bin/python -m benchmarks.floors floor|mule-floor [--run-dir DIR]

- ``floor``: nginx + uWSGI with the product's worker pool answering a constant (``floor/``): no Flask,
  no mules, no model;
- ``mule-floor``: the same plus the product's worker-to-mule hand-off (``mule_floor/``): each request a
  single-row job pushed on the uWSGI queue, a mule woken by ``mule_msg``, the result back through the
  result cache and the notices, answered a constant: what this design allows a request at best.

Both use the product's nginx.conf and launcher (:func:`launcher.__main__.serve`), so a floor and the
product's stack start the same way (``benchmarks/wrk_single_row.py --floor NAME``); the suite's
``floor`` and ``mule-floor`` systems (:mod:`benchmarks.systems`) are these stacks too.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launcher.__main__ import serve
from launcher.stack import ROOT, Stack

HERE = Path(__file__).resolve().parent


class ConstantStack(Stack):
    """The plain floor's stack: uWSGI answering a constant, with no mules to match FORECAST_MULES against."""

    def check_config(self) -> None:
        return


@dataclass(frozen=True)
class Floor:
    """How to start one floor: its uWSGI ini, its stack class, settings it overrides."""

    ini: Path
    stack_class: type[Stack]
    description: str
    env: dict[str, str] = field(default_factory=dict)

    def stack(self, run_dir: Path, port: int, env: dict[str, str] | None = None, log_to_files: bool = True) -> Stack:
        return self.stack_class(run_dir, port, {**self.env, **(env or {})}, log_to_files=log_to_files, ini=self.ini)


FLOORS = {
    "floor": Floor(HERE / "floor" / "uwsgi.ini", ConstantStack, "answering a constant (no Flask, no mules, no model)"),
    "mule-floor": Floor(
        HERE / "mule_floor" / "uwsgi.ini",
        Stack,
        "each request handed to a mule through the product's queue, wake-up and result cache, answered a constant "
        "(no Flask, no validation, no model)",
        {"FORECAST_METRICS_ENABLED": "false"},
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floors", description=__doc__.splitlines()[0])
    parser.add_argument("floor", choices=sorted(FLOORS))
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run", help="pid files, sockets, logs (default: run/)")
    args = parser.parse_args(argv)
    return serve(FLOORS[args.floor].stack(args.run_dir, int(os.environ.get("PORT", "8000")), log_to_files=False))


if __name__ == "__main__":
    sys.exit(main())
