"""The benchmark systems' ports (benchmarks/systems.py): never where a starting Ray's own servers can land."""

from __future__ import annotations

import socket
from pathlib import Path

from benchmarks.systems import RAY_WORKER_PORTS_END, free_port


def test_a_systems_port_is_free_and_outside_the_ephemeral_range_and_rays_worker_ports() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        assert port >= RAY_WORKER_PORTS_END
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: it binds
