"""``multidb.explain()`` and ``request_routed`` against a real primary and
two replicas: each reason a read goes where it goes, shown by a view that
reports the explanation with the port of the server that answered its read.

Replay is paused (``pg_wal_replay_pause()``) to hold a token's replicas
behind; ``faults`` resumes (and restarts) every replica when a test ends.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from multidb import health
from multidb.positions import format_lsn
from multidb.testing.cluster import Cluster
from multidb.tokens import pin_for
from tests.app.models import Item
from tests.postgres.conftest import Faults
from tests.postgres.test_configurations import atomic_requests  # noqa: F401
from tests.postgres.test_tokens import (
    PRIMARY,
    REPLICA_PORTS,
    REPLICAS,
    cookie_token,
    pause_both,
    resume_both,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Each test runs twice: directly, and through PgBouncer (transaction mode).
    pytest.mark.usefixtures("route_via"),
]


def explained(
    client: Client, name: str, path: str = "/explain/find/", **query: str
) -> Any:
    response = client.get(path, {"name": name, **query})
    assert response.status_code == 200, response.content
    return response.json()


def wrote(client: Client, name: str) -> int:
    """``client`` creates ``name``; the position its new cookie holds."""
    response = client.post("/create/", {"name": name})
    assert response.status_code == 200, response.content
    position = pin_for(cookie_token(response))
    assert type(position) is int
    return position


def test_a_token_the_paused_replicas_lack_is_explained_as_waiting(
    faults: Faults, routed
):
    pause_both(faults)
    client = Client()
    position = wrote(client, "while-paused")

    before = explained(client, "while-paused", explain="before")
    after = explained(client, "while-paused")

    for found in (before, after):
        assert (found["outcome"], found["port"]) == ("primary_token_waiting", PRIMARY)
        assert (found["token"], found["token_lsn"]) == (position, format_lsn(position))
        assert (found["token_waiting"], found["replicas_past_token"]) == (True, [])
        # Documented: a token is no time pin, so the 0.11 question says no.
        assert found["pinned"] is found["thread_pinned"] is False
    assert (before["token_check"], after["token_check"]) == (None, "behind")
    assert [s["outcome"] for s in routed] == [
        "primary_pinned_time",
        "primary_token_waiting",
        "primary_token_waiting",
    ]
    assert routed[-1] == {
        "outcome": "primary_token_waiting",
        "read_alias": "default",
        "token_check": "behind",
        "position_queries": 0,
        "group": "default",
    }
    assert routed[0]["position_queries"] == 1


def test_once_the_replicas_catch_up_the_token_reads_a_replica(
    pg_cluster: Cluster, faults: Faults, routed
):
    pause_both(faults)
    client = Client()
    wrote(client, "caught-up-later")
    resume_both(faults, pg_cluster)

    asked = explained(client, "caught-up-later")
    health.probe_now()  # now the prober has seen both past the token
    cached = explained(client, "caught-up-later", explain="before")
    settled = explained(client, "caught-up-later")

    assert (asked["outcome"], asked["token_check"]) == ("replica", "queried")
    assert asked["port"] in REPLICA_PORTS and asked["db"] == asked["read_alias"]
    assert (cached["outcome"], cached["token_waiting"]) == ("replica", False)
    assert sorted(cached["replicas_past_token"]) == sorted(REPLICAS)
    assert cached["read_alias"] in REPLICAS
    assert (settled["token_check"], settled["port"] in REPLICA_PORTS) == (
        "cached",
        True,
    )
    assert [(s["outcome"], s["token_check"]) for s in routed[1:]] == [
        ("replica", "queried"),
        ("replica", "cached"),
        ("replica", "cached"),
    ]
    assert routed[-1]["read_alias"] == settled["db"]


def test_a_post_that_writes_is_pinned_by_time_for_the_rest_of_it(routed):
    response = Client().post("/explain/write/", {"name": "posted"})
    found = response.json()

    assert (found["outcome"], found["pinned_by"], found["port"]) == (
        "primary_pinned_time",
        "write",
        PRIMARY,
    )
    assert found["pinned"] is found["thread_pinned"] is True
    assert [(s["outcome"], s["position_queries"]) for s in routed] == [
        ("primary_pinned_time", 1)
    ]


def test_under_atomic_requests_the_views_own_transaction_is_explained_as_atomic(
    atomic_requests,  # noqa: F811
    routed,
):
    own = explained(Client(), "replicated", path="/explain/in-own-transaction/")
    plain = explained(Client(), "replicated")

    assert (own["outcome"], own["in_atomic"], own["port"]) == (
        "primary_atomic",
        True,
        PRIMARY,
    )
    assert own["atomic_requests"] is True
    # The block Django opens around the view alone reads a replica.
    assert (plain["outcome"], plain["in_atomic"], plain["atomic_requests"]) == (
        "replica",
        False,
        True,
    )
    assert plain["port"] in REPLICA_PORTS
    # The transaction has ended with the view: the request read by its state.
    assert [s["outcome"] for s in routed] == ["replica", "replica"]


def test_with_every_replica_stopped_reads_are_explained_as_no_replica(
    faults: Faults, routed
):
    health.probe_now()
    for alias in REPLICAS:
        faults.stop(alias)
    health.registry.probe()

    found = explained(Client(), "anything")

    assert (found["outcome"], found["no_replica"], found["port"]) == (
        "primary_no_replica",
        True,
        PRIMARY,
    )
    assert found["no_replica_policy"] == "primary"
    assert [(s["outcome"], s["read_alias"]) for s in routed] == [
        ("primary_no_replica", "default")
    ]


def test_an_async_view_awaits_aexplain(pg_cluster: Cluster, faults: Faults, routed):
    Item.objects.create(name="async-replicated")
    pg_cluster.wait_caught_up()

    async def get(client: AsyncClient, name: str) -> Any:
        return (await client.get("/explain/async-find/", {"name": name})).json()

    async def create(client: AsyncClient, name: str) -> Any:
        # Not async_to_sync(client.post): before Django 5.0 it is not a
        # coroutine function, and asgiref warns.
        return await client.post("/create/", {"name": name})

    plain = async_to_sync(get)(AsyncClient(), "async-replicated")
    pause_both(faults)
    client = AsyncClient()
    response = async_to_sync(create)(client, "async-paused")
    client.cookies.update(response.cookies)
    waiting = async_to_sync(get)(client, "async-paused")

    assert (plain["outcome"], plain["port"] in REPLICA_PORTS) == ("replica", True)
    assert plain["read_alias"] == plain["db"]
    assert (waiting["outcome"], waiting["port"], waiting["token_check"]) == (
        "primary_token_waiting",
        PRIMARY,
        "behind",
    )
    assert waiting["pinned"] is False
    assert [s["outcome"] for s in routed] == [
        "replica",
        "primary_pinned_time",
        "primary_token_waiting",
    ]
