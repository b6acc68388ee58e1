"""A real Prometheus (Debian's ``prometheus``) scraping a stack every second, with the project's alert rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from launcher.stack import Stack
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed (Debian: apt-get install prometheus; `make test` installs it)"
    return path


@contextmanager
def prometheus_of(stack: Stack, work: Path, without_for: bool = False) -> Iterator[str]:
    """Prometheus scraping ``stack`` and evaluating the rules every second; its URL.  ``without_for``: each alert
    fires as soon as its condition holds (its ``for:`` set to 0s), so a test need not wait the minutes a
    real deployment waits."""
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    if without_for:
        rules = re.sub(r"^(\s+)for: \S+$", r"\1for: 0s", rules, flags=re.M)
    (work / "alerts.yml").write_text(rules)
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{stack.port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary("prometheus"), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, lambda: (work / "prometheus.log").read_text())
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def query(prometheus: str, expr: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    return body


def results(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector ``expr`` evaluates to now (its samples' ``metric`` and ``value``)."""
    found: list[dict[str, Any]] = query(prometheus, expr)["data"]["result"]
    return found
