"""Fixtures of the image tier (``make docker-test``): a Docker engine, the stand-in base, the image built.

Measurements (build times, image size, time to ready, counts under load) are printed at the end
of the run, never asserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.docker.containers import Container, Fleet
from tests.docker.engine import docker, docker_engine
from tests.docker.images import build_base, build_image

IMAGE = "forecast:docker-test"
MEASURED: list[str] = []


def measured(line: str) -> None:
    """Note a measurement for the end of the run's summary."""
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("measured (not asserted)")
        for line in MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image, built on the stand-in base (both logs under the session's temp folder)."""
    logs = tmp_path_factory.mktemp("docker")
    with docker_engine(logs):
        measured(f"base {build_base(logs / 'base.log')}")
        build_s = build_image(IMAGE, logs / "image-build.log")
        size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
        measured(f"image {IMAGE}: built in {build_s:.0f} s, {size / 1e6:.0f} MB")
        yield IMAGE


@pytest.fixture
def containers(image: str) -> Iterator[Fleet]:
    """Containers of the image started by the test (``containers.start(env=..., volume=...)``), removed after."""
    fleet = Fleet(image)
    yield fleet
    fleet.remove_all()


@pytest.fixture
def volume(image: str) -> Iterator[str]:
    """A named volume for the registry, removed after the test."""
    name = f"forecast-test-registry-{uuid.uuid4().hex[:12]}"
    docker("volume", "create", name)
    yield name
    # This fixture may be torn down before ``containers`` (fixtures end in reverse order of their start): a
    # volume in use cannot be removed, so the containers using it go first.
    users = docker("ps", "-aq", "--filter", f"volume={name}").stdout.split()
    if users:
        docker("rm", "-f", "-v", *users, check=False)
    docker("volume", "rm", "-f", name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test reports the logs of the containers it started (CI keeps no files)."""
    report: pytest.TestReport = yield
    fleet = getattr(item, "funcargs", {}).get("containers")
    if report.failed and isinstance(fleet, Fleet):
        report.sections.append(("container logs", fleet.logs()))
    return report


def tmp_registry_copy(container: Container, target: Path) -> Path:
    """Copy the container's registry to ``target`` (``docker cp``); the copy's path."""
    docker("cp", f"{container.id}:/var/lib/forecast/registry", str(target))
    return target / "registry"
