"""``multidb.contrib.opentelemetry``'s request attributes, set on the
current span by real requests through ``PinningRouterMiddleware`` (its
``request_routed`` signal) against a real primary and two streaming
replicas; sync and async views, with the SDK's in-memory exporter.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

from tests.test_contrib_opentelemetry import exporter, provider

__all__ = ["exporter", "provider"]  # the fixtures

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

REPLICAS = ("replica1", "replica2")


def test_a_read_request_tells_its_span_which_replica_it_read(provider, exporter):
    with provider.get_tracer("test").start_as_current_span("GET /find/"):
        answer = Client().get("/find/", {"name": "nobody"}).json()

    (span,) = exporter.get_finished_spans()
    assert span.attributes["multidb.outcome"] == "replica"
    assert span.attributes["multidb.read_alias"] == answer["db"]
    assert answer["db"] in REPLICAS
    assert "multidb.token_check" not in span.attributes


def test_a_token_read_with_replay_paused_tells_its_span_it_waited_on_the_primary(
    provider, exporter, faults
):
    for alias in REPLICAS:
        faults.pause(alias)
    client = Client()
    client.post("/create/", {"name": "mine"})
    with provider.get_tracer("test").start_as_current_span("GET /find/"):
        client.get("/find/", {"name": "mine"})

    (span,) = (s for s in exporter.get_finished_spans() if s.name == "GET /find/")
    assert dict(span.attributes) == {
        "multidb.outcome": "primary_token_waiting",
        "multidb.read_alias": "default",
        "multidb.token_check": "behind",
    }


@pytest.mark.asyncio
async def test_an_async_view_tells_its_span_where_it_read(provider, exporter):
    with provider.get_tracer("test").start_as_current_span("GET /async-find/"):
        answer = (await AsyncClient().get("/async-find/", {"name": "x"})).json()
    await sync_to_async(connections.close_all)()

    (span,) = exporter.get_finished_spans()
    assert span.attributes["multidb.outcome"] == "replica"
    assert span.attributes["multidb.read_alias"] == answer["db"]
