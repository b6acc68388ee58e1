"""Build the base image's stand-in and the project's image (``make docker-test``; root, a Docker engine).

The stand-in (``tests/docker/standin/``) is built on a Debian root file system that
``debootstrap`` makes from the archive this machine's apt reads, and tagged with the tag the
project's ``Dockerfile`` pins, so that file builds unchanged. It is rebuilt only when its inputs
change: its files, the build machine's CA bundle, the Debian suite and archive (their hash is a
label on the image). ``REAL_BASE=1`` uses the real base image instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.docker.engine import docker

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).resolve().parent / "standin"
KEY_LABEL = "forecast.test.standin-key"


@dataclass(frozen=True)
class Archive:
    """The Debian archive and suite debootstrap reads: the first ``deb`` source of the machine's apt."""

    uri: str
    suite: str

    @classmethod
    def of_this_machine(cls) -> Archive:
        """Raises ``RuntimeError`` when apt's sources name no Debian archive for this release."""
        suite = os_release()["VERSION_CODENAME"]
        for text in apt_sources():
            for uri, suites in source_entries(text):
                if suite in suites:
                    return cls(uri, suite)
        raise RuntimeError(f"no apt source of this machine serves Debian {suite}")


def os_release() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {name: value.strip('"') for name, value in pairs}


def apt_sources() -> list[str]:
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return [path.read_text() for path in files if path.is_file() and path.suffix in (".list", ".sources", "")]


def source_entries(text: str) -> list[tuple[str, list[str]]]:
    """(archive URI, suites) of each ``deb`` entry, one-line (``.list``) or deb822 (``.sources``) style."""
    entries = [(m[1], [m[2]]) for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.MULTILINE)]
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
        if "deb" in fields.get("Types", "").split() and "URIs" in fields:
            entries.append((fields["URIs"].split()[0], fields.get("Suites", "").split()))
    return entries


def ca_bundle() -> Path:
    """The CA bundle this machine's pip trusts (it may intercept TLS with an authority of its own)."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    return Path("/etc/ssl/certs/ca-certificates.crt")


def pinned_base() -> str:
    """The base image tag the project's Dockerfile pins (its first ``FROM``)."""
    match = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("the Dockerfile has no FROM")
    return match[1]


def standin_key(archive: Archive) -> str:
    digest = hashlib.sha256(f"{archive.uri} {archive.suite}\n".encode())
    for path in sorted(p for p in STANDIN.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(STANDIN)).encode() + b"\0" + path.read_bytes())
    digest.update(ca_bundle().read_bytes())
    return digest.hexdigest()[:16]


def image_label(tag: str, label: str) -> str | None:
    result = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def build_base(log: Path) -> str:
    """Make the pinned base image present; say how (built, kept, or the real one with ``REAL_BASE=1``).

    By default it is the stand-in, built here unless an image of the tag carries the stand-in's
    current key. With ``REAL_BASE=1`` it is the real image, pulled if absent (Docker Hub needed).
    """
    tag = pinned_base()
    if os.environ.get("REAL_BASE") == "1":
        if image_label(tag, KEY_LABEL) is None:  # absent (an image without the label gives "")
            run_logged(["docker", "pull", tag], log)
        if image_label(tag, KEY_LABEL):
            raise RuntimeError(f"REAL_BASE=1, but {tag} is the stand-in: docker rmi it, then retry")
        return f"{tag}: the real base"
    archive = Archive.of_this_machine()
    key = standin_key(archive)
    if image_label(tag, KEY_LABEL) == key:
        return f"{tag}: the stand-in, kept from an earlier run"
    started = time.monotonic()
    rootfs_tag = f"forecast-test-rootfs:{archive.suite}-{key}"
    with tempfile.TemporaryDirectory(prefix="forecast-standin-", dir="/var/tmp") as scratch:
        rootfs, context = Path(scratch) / "rootfs", Path(scratch) / "context"
        run_logged(["debootstrap", "--variant=minbase", archive.suite, str(rootfs), archive.uri], log)
        run_logged(["sh", "-c", f'tar -C "{rootfs}" -c . | docker import - {rootfs_tag}'], log)
        shutil.copytree(STANDIN, context)
        shutil.copyfile(ca_bundle(), context / "ca-certificates.crt")
        run_logged(["docker", "build", "--network", "host", "--build-arg", f"ROOTFS={rootfs_tag}",
                    "--label", f"{KEY_LABEL}={key}", "-t", tag, str(context)], log)  # fmt: skip
    return f"{tag}: the stand-in, built in {time.monotonic() - started:.0f} s"


def build_image(tag: str, log: Path) -> float:
    """``docker build`` the project's Dockerfile as it is (host network: pip reaches PyPI); seconds spent."""
    started = time.monotonic()
    run_logged(["docker", "build", "--network", "host", "-t", tag, str(ROOT)], log)
    return time.monotonic() - started


def run_logged(command: list[str], log: Path) -> None:
    """Run ``command`` with its output appended to ``log``; raises ``RuntimeError`` with the log's tail."""
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{command[0]} {command[1]} failed (exit {result.returncode}):\n{tail}")
