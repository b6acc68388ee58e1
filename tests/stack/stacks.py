"""Starting a real stack for a test: nginx + uWSGI + mules on a free port, serving a given registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import free_port

# The modules whose tests put a stack under load and count on its deadlines (504 after
# FORECAST_DEADLINE_MS, loads and verifications within their limits): `make test` runs them after the
# parallel run, in one process with the machine to themselves, as before the tests ran in parallel.
UNDER_LOAD = pytest.mark.under_load


def start_stack(run_dir: Path, registry: Registry, **env: str) -> Stack:
    """A started stack serving ``registry`` (``env``: FORECAST_* overrides); stop it when done."""
    # The accuracy gauges are set once at start and not refreshed: their background scoring of stored actuals would
    # count in the tests' mule metrics. The gauges' own tests set an interval.
    settings = {"FORECAST_REGISTRY_DIR": str(registry.root), "FORECAST_ACCURACY_REFRESH_S": "86400", **env}
    stack = Stack(run_dir, free_port(), settings)
    stack.start()
    try:
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack
