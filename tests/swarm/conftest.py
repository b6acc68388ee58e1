"""Fixtures of the Swarm tier (``make swarm-test``): the image tier's engine and image, a swarm, the stack.

Measurements (counts of requests under load, times to converge) are printed at the end of the
run, never asserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker.conftest import image, measured, pytest_terminal_summary  # noqa: F401 (the image tier's fixtures)
from tests.docker.engine import docker
from tests.swarm.swarm import Stack, edge, single_node_swarm


@dataclass(frozen=True)
class Deployed:
    """The stack deployed from ``image`` and the URL of its front (through the edge container)."""

    stack: Stack
    image: str
    url: str


@pytest.fixture(scope="module")
def deployed(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:  # noqa: F811
    """The stack on a single-node swarm, 2 replicas ready; removed after (stack, network, volume, swarm)."""
    with single_node_swarm():
        stack = Stack(f"forecast-test-{uuid.uuid4().hex[:8]}")
        try:
            stack.deploy(image)
            stack.wait_replicas(2, image)
            with edge(stack, image, Path(tmp_path_factory.mktemp("edge"))) as url:
                yield Deployed(stack, image, url)
        finally:
            try:
                stack.remove()
            finally:
                derived = docker("image", "ls", "-q", "--filter", "label=forecast.test.swarm").stdout.split()
                if derived:  # the releases the tests built on the image
                    docker("image", "rm", "-f", *sorted(set(derived)))
