"""Scraping ``multidb.contrib.prometheus``'s metrics the way Prometheus does:
through the text exposition format, parsed by ``prometheus_client``'s own
parser (for tests/test_contrib_prometheus.py and tests/postgres)."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.parser import text_string_to_metric_families

from multidb.contrib.prometheus.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """``{(sample name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def scrape_wsgi(registry: CollectorRegistry) -> Samples:
    """A GET of ``prometheus_client.make_wsgi_app(registry)``."""
    statuses: list[str] = []
    body = make_wsgi_app(registry)(
        {
            "REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "",
            "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
        },
        lambda status, headers, exc_info=None: statuses.append(status),
    )  # fmt: skip
    assert statuses == ["200 OK"]
    return parse(b"".join(body).decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def series(samples: Samples, name: str, *keys: str) -> dict[Any, float]:
    """``name``'s samples by the values of the labels ``keys``."""
    found = {}
    for (sample, labels), number in samples.items():
        if sample == name:
            by_key = dict(labels)
            found[tuple(by_key[key] for key in keys)] = number
    return found


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A registry of its own with the metrics on it and their receivers
    connected, so counts start at zero; all undone after the test."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.connect()
    try:
        yield registry
    finally:
        metrics.unregister()
