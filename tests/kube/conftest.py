"""Fixtures of the podman tier (``make kube-play-test``): the image tier's engine and image, podman configured.

Measurements are printed at the end of the run, never asserted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docker.conftest import image, measured, pytest_terminal_summary  # noqa: F401 (the image tier's fixtures)
from tests.kube.podman import Podman

MANIFEST_IMAGE = "localhost/forecast:latest"  # what k8s/deployment.yaml's `forecast:latest` resolves to


@pytest.fixture(scope="module")
def podman(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:  # noqa: F811
    """Podman with this machine's containers.conf and the project's image under the manifest's name; the
    image removed after."""
    client = Podman.configured(tmp_path_factory.mktemp("podman"))
    client.load_from_docker(image, MANIFEST_IMAGE)
    try:
        yield client
    finally:
        client("rmi", "-f", MANIFEST_IMAGE, image, check=False)
