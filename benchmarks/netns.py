"""Run the suite in a network namespace whose only interface is loopback (``unshare --net``).

Ray Serve's HAProxy ingress binds its stats and metrics ports to every interface, and nothing
configures that away. Inside a fresh network namespace "every interface" is ``lo``: nothing a
system binds can be reached from beyond the machine, whatever it binds. Needs root (or
CAP_SYS_ADMIN); without, the suite runs on the host's network and leaves out the systems that
bind every interface (:data:`NEEDS_NAMESPACE`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import NoReturn

INSIDE = "FORECAST_BENCH_NETNS"  # set in the re-executed suite: it runs in the namespace
NEEDS_NAMESPACE = ("ray-plain", "ray-plain-1", "ray-plain-nobatch", "ray-floor")  # HAProxy binds *:8404 and *:9101


def can_isolate() -> bool:
    """Whether this process may create a network namespace (root, ``unshare`` and ``ip`` present)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


def inside() -> bool:
    return os.environ.get(INSIDE) == "1"


def reexec_isolated(module: str, argv: list[str]) -> NoReturn:
    """Run ``python -m module argv...`` again in a new network namespace, in place of this process."""
    command = ["unshare", "--net", "--", sys.executable, "-m", module, *argv]
    os.execvpe("unshare", command, {**os.environ, INSIDE: "1"})


def bring_loopback_up() -> None:
    """A new namespace's ``lo`` starts down; raises :class:`RuntimeError` if any other interface exists."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    names = interfaces()
    if names != ["lo"]:
        raise RuntimeError(f"the benchmark's namespace has interfaces beyond loopback: {names}")


def interfaces() -> list[str]:
    """The network interfaces of this process's namespace (``ip -o link``)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line)
