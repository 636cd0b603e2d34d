"""Prometheus text exposition → samples, parsed by ``prometheus_client``'s own parser.

Queries work on samples (name, labels, value), not on families, so they read the same figures
whether an exporter groups each family's ``# TYPE`` with its samples (the standard) or lists
all ``# TYPE`` lines first (an older spark-stack proxy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

INF = math.inf


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One read of a ``/metrics`` page."""

    samples: tuple[Sample, ...]

    def select(self, name: str, **match: str) -> Iterator[Sample]:
        """Samples named ``name`` whose labels include ``match``."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                yield sample

    def has(self, name: str) -> bool:
        return any(True for _ in self.select(name))

    def total(self, name: str, **match: str) -> float | None:
        """The sum of the matching samples (over engines, routes…); None when there is none."""
        values = [s.value for s in self.select(name, **match)]
        return math.fsum(values) if values else None

    def buckets(self, name: str, **match: str) -> dict[float, float]:
        """Histogram ``name``'s cumulative bucket counts by upper bound (``le``), summed over
        the other labels."""
        out: dict[float, float] = {}
        for sample in self.select(f"{name}_bucket", **match):
            bound = float(sample.labels["le"])
            out[bound] = out.get(bound, 0.0) + sample.value
        return out


def parse(text: str) -> Scrape:
    """Every sample of ``text``; raises ValueError when it is not Prometheus text."""
    samples = tuple(
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    return Scrape(samples)
