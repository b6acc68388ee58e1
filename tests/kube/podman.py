"""Podman on this machine, as ``make kube-play-test`` runs it: a ``containers.conf`` of its own, images from Docker.

Podman's defaults do not start a container here: runc and crun refuse the ``nofile`` and ``nproc``
limits podman asks for (``error setting rlimit type 6/7: operation not permitted``; this machine's
root lacks ``CAP_SYS_RESOURCE``), and crun refuses the machine's hybrid cgroups. What works, found by
trying: runc, ``nofile`` at this process's own limits, and ``nproc`` at most 32,768 (65,536 is refused).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

NPROC_MAX = 32_768  # the highest nproc limit runc set here (65,536 was refused)


def containers_conf() -> str:
    """The ``containers.conf`` podman runs with: runc, and limits this machine lets it set."""
    nofile_soft, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], NPROC_MAX)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile_soft}:{nofile_hard}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )


@dataclass(frozen=True)
class Podman:
    """The ``podman`` client with ``conf`` as its ``containers.conf`` (``CONTAINERS_CONF``)."""

    conf: Path

    @classmethod
    def configured(cls, folder: Path) -> Podman:
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed: `make kube-play-test` installs it (Debian: podman, runc)")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "containers.conf").write_text(containers_conf())
        return cls(folder / "containers.conf")

    def __call__(self, *args: str, check: bool = True, stdin: bytes | IO[bytes] | None = None,
                 timeout_s: float = 600) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """Run ``podman`` (``stdin``: its input, or a stream it reads); raises ``CalledProcessError`` (with its
        output) when ``check`` and it fails."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        command = ["podman", *args]
        if isinstance(stdin, bytes):
            result = subprocess.run(command, capture_output=True, env=env, timeout=timeout_s, check=False, input=stdin)
        else:
            result = subprocess.run(command, capture_output=True, env=env, timeout=timeout_s, check=False, stdin=stdin)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def text(self, *args: str, check: bool = True) -> str:
        return self(*args, check=check).stdout.decode()

    def load_from_docker(self, image: str, tag: str) -> None:
        """``docker save image | podman load`` (a pipe: the image, about 1 GB, never in this process's memory),
        tagged ``tag`` (what the manifests name)."""
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as saving:
            loaded = self("load", stdin=saving.stdout).stdout.decode()
        if saving.returncode != 0:
            raise RuntimeError(f"docker save {image} failed (exit {saving.returncode})")
        name = loaded.strip().splitlines()[-1].removeprefix("Loaded image: ").strip()
        self("tag", name, tag)
