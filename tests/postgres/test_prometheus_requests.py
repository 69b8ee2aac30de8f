"""``multidb.contrib.prometheus``'s request counters, fed by real requests
through ``PinningRouterMiddleware`` (its ``request_routed`` signal) against a
real primary and two streaming replicas: reads without a pin cookie, a POST
that writes, a token read while the replicas' replay is paused and after it
resumes, a legacy cookie, and no replica usable; sync and async views,
directly and through PgBouncer.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

from multidb import health
from multidb.middleware import pinning_cookie
from tests.postgres.test_configurations import atomic_requests  # noqa: F401
from tests.scraping import registry, scrape, series, value

__all__ = ["registry"]  # the fixture

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("route_via"),
]

REPLICAS = ("replica1", "replica2")


def requests(registry) -> dict[str, float]:
    """The requests counted so far, by outcome (those counted at all)."""
    counted = series(scrape(registry), "multidb_requests_total", "outcome", "group")
    return {outcome: n for (outcome, group), n in counted.items() if n}


def token_checks(registry) -> dict[str, float]:
    counted = series(scrape(registry), "multidb_token_checks_total", "result")
    return {result: n for (result,), n in counted.items() if n}


def position_queries(registry) -> float | None:
    return value(scrape(registry), "multidb_position_queries_total", group="default")


def find(client: Client, name: str) -> Any:
    response = client.get("/find/", {"name": name})
    assert response.status_code == 200, response.content
    return response.json()


def pause_both(faults) -> None:
    for alias in REPLICAS:
        faults.pause(alias)


def resume_both(faults, cluster) -> None:
    for alias in REPLICAS:
        faults.resume(alias)
    cluster.wait_caught_up()


def test_reads_without_a_pin_cookie_count_as_replica_and_ask_no_position(registry):
    client = Client()
    answers = [find(client, "nobody") for _ in range(2)]

    assert {answer["db"] for answer in answers} <= set(REPLICAS)
    assert requests(registry) == {"replica": 2}
    assert token_checks(registry) == {}
    assert position_queries(registry) == 0


def test_a_reading_view_under_atomic_requests_counts_as_replica(
    registry,
    atomic_requests,  # noqa: F811
):
    answer = find(Client(), "replicated")

    assert (answer["found"], answer["db"] in REPLICAS) == (True, True)
    # The view's own block is over at the request's end, and was not the
    # application's atomic() while it ran.
    assert requests(registry) == {"replica": 1}


def test_a_post_that_writes_counts_as_pinned_by_time_and_one_position_query(
    registry,
):
    response = Client().post("/create/", {"name": "written"})

    assert pinning_cookie() in response.cookies
    assert requests(registry) == {"primary_pinned_time": 1}
    assert position_queries(registry) == 1


def test_a_token_read_waits_on_the_primary_while_replay_is_paused_then_reads_a_replica(
    registry, faults, pg_cluster
):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "mine"})
    behind = find(client, "mine")
    assert requests(registry) == {"primary_pinned_time": 1, "primary_token_waiting": 1}
    assert token_checks(registry) == {"behind": 1}

    resume_both(faults, pg_cluster)
    caught_up = find(client, "mine")

    assert (behind["db"], caught_up["db"] in REPLICAS) == ("default", True)
    assert requests(registry) == {
        "primary_pinned_time": 1,
        "primary_token_waiting": 1,
        "replica": 1,
    }
    checks = token_checks(registry)
    assert checks.pop("behind") == 1
    assert checks in ({"cached": 1}, {"queried": 1})


@pytest.mark.asyncio
async def test_async_views_count_their_outcomes_as_sync_ones_do(
    registry, faults, pg_cluster
):
    pause_both(faults)
    client = AsyncClient()
    await client.post("/create/", {"name": "async-mine"})
    behind = (await client.get("/async-find/", {"name": "async-mine"})).json()
    unpinned = (await AsyncClient().get("/async-find/", {"name": "async-mine"})).json()
    await sync_to_async(connections.close_all)()

    assert behind["db"] == "default"
    assert unpinned["db"] in REPLICAS
    assert requests(registry) == {
        "primary_pinned_time": 1,
        "primary_token_waiting": 1,
        "replica": 1,
    }
    assert token_checks(registry) == {"behind": 1}
    assert position_queries(registry) == 1


def test_a_legacy_pin_cookie_counts_as_pinned_by_time(registry):
    client = Client()
    client.cookies[pinning_cookie()] = "y"

    assert find(client, "legacy")["db"] == "default"
    assert requests(registry) == {"primary_pinned_time": 1}


def test_with_every_replica_stopped_reads_count_as_no_replica(registry, faults):
    for alias in REPLICAS:
        faults.stop(alias)
    health.registry.probe()

    assert find(Client(), "anyone")["db"] == "default"
    assert requests(registry) == {"primary_no_replica": 1}
