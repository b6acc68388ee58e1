"""Read ``GET /metrics`` with prometheus_client's own parser, for assertions on samples."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


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
