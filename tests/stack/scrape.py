"""Read ``GET /metrics`` with prometheus_client's own parser, for assertions on samples."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.telemetry import FLUSH_INTERVAL_S


@dataclass(frozen=True)
class Scrape:
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(s.value for s in self.matching(name, **labels))

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]


def scrape(url: str) -> Scrape:
    response = requests.get(f"{url}/metrics", timeout=5)
    response.raise_for_status()
    families = text_string_to_metric_families(response.text)
    return Scrape([sample for family in families for sample in family.samples])


def scrape_until(url: str, condition: Callable[[Scrape], bool], timeout_s: float = 10) -> Scrape:
    """Scrape until ``condition`` holds and return that scrape; after ``timeout_s``, the last one.

    The web workers write their request metrics in batches (app/telemetry.py: at most
    ``FLUSH_INTERVAL_S`` behind), so a count of other workers' requests is awaited, not read once.
    The caller asserts on the returned scrape, so a timeout fails with the values it saw.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        current = scrape(url)
        if condition(current) or time.monotonic() >= deadline:
            return current
        time.sleep(FLUSH_INTERVAL_S / 5)  # polling interval of a wait-for-condition loop


def settled_scrape(url: str, name: str, timeout_s: float = 10) -> Scrape:
    """A scrape in which the samples named ``name`` have stopped moving: earlier tests' requests written.

    Other workers write their requests up to ``FLUSH_INTERVAL_S`` late (later on a loaded machine), so
    a count taken just after another test's requests may still grow by them.  Two scrapes a few flush
    intervals apart that agree on every ``name`` sample are taken as settled; after ``timeout_s``, the
    last one.
    """
    deadline = time.monotonic() + timeout_s
    previous = scrape(url)
    while True:
        time.sleep(4 * FLUSH_INTERVAL_S)  # polling interval: long enough for every worker's flusher to run
        current = scrape(url)
        if current.matching(name) == previous.matching(name) or time.monotonic() >= deadline:
            return current
        previous = current
