"""A throwaway PostgreSQL server for a test session: Debian's own binaries, a cluster in a temporary directory,
listening on 127.0.0.1 only, removed after.  Run as the ``postgres`` user when the tests run as root
(PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port


def binary(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else Debian's versioned directory (the newest)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), "")
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql (make test-system-deps)")
    return found


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server for the duration; its URL (user ``forecast``, trusted on loopback)."""
    owner = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="forecast-postgres-"))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, port = base / "data", free_port()
    subprocess.run(_as_owner([binary("initdb"), "-D", str(data), "-A", "trust", "-U", "forecast", "--no-sync"],
                             owner), check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_owner([binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w",
                              "start"], owner), check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://forecast@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], owner),
                       check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
