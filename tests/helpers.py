"""Plain helpers shared by both tiers (fixtures live in the conftest files)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from forecast.registry import Registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kaggle_test_rows() -> list[tuple[str, int, int]]:
    """Every store x item for 2018-01-01..2018-03-31: the 45,000 rows of Kaggle's test set."""
    days = np.arange("2018-01-01", "2018-04-01", dtype="datetime64[D]")
    return [(str(d), s, i) for s in range(1, 11) for i in range(1, 51) for d in days]


def clone_version(registry: Registry, source: str, target: str) -> None:
    """Copy a version under a new name (writable), to damage it in a test through ``registry.model_path(target)``
    or ``registry.metadata_path(target)``."""
    registry.copy_version(source, target)


def wait_for(condition: Callable[[], object], timeout_s: float = 30, explain: Callable[[], str] = lambda: "") -> None:
    """Return once ``condition()`` is true; fail after ``timeout_s`` with ``explain()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # polling interval of a wait-for-condition loop
    raise AssertionError(f"condition not met within {timeout_s} s\n{explain()}")


def crashing_model_text(model_text: str) -> str:
    """``model_text`` with its first tree claiming 100,000 leaves, ``tree_sizes`` made to match.

    Whole by every structural check (forecast/modeltext.py), and LightGBM aborts the process
    that parses it (``terminate called without an active exception``): what a damaged model
    that passed its checksum does to a mule.
    """
    head, _, rest = model_text.partition("\nTree=0\n")
    trees, end, tail = ("Tree=0\n" + rest).partition("end of trees")
    blocks = [block for block in re.split(r"(?=^Tree=\d+\n)", trees, flags=re.M) if block]
    blocks[0] = re.sub(r"^num_leaves=\d+$", "num_leaves=100000", blocks[0], count=1, flags=re.M)
    sizes = " ".join(str(len(block.encode())) for block in blocks)
    head = re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", head, count=1, flags=re.M)
    return head + "\n" + "".join(blocks) + end + tail


@contextlib.contextmanager
def serving_directory(directory: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``directory`` (a registry file's home); yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def forge_version(registry: Registry, source: str, target: str, model_text: str) -> None:
    """``target``: ``model_text`` under a copy of ``source``'s metadata, its checksum recomputed
    (so it passes the checksum: the damage only the model itself can show)."""
    registry.copy_version(source, target, model_text)
