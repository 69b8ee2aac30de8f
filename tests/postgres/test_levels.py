"""Staleness bounds (``use_replica(max_lag=...)``) and the no-replica policy
(``MULTIDB_NO_REPLICA``, ``MULTIDB_MIN_SERVING_REPLICAS``) on real servers.

Lag is real: a replica applies WAL late (``recovery_min_apply_delay``, the
``faults.delay`` fixture) or stops replaying (``faults.pause``) while the
primary keeps committing, and the background prober measures it.  Each read
reports the port of the server that answered it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient, Client, override_settings

import multidb
from multidb import health, rotation, routers
from tests.app.models import Item

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("route_via"),
]

REPLICAS = ("replica1", "replica2")
#: The prober runs, often enough for a test to wait on what it measures.
PROBING = {"MULTIDB_HEALTH_CHECK_INTERVAL": 0.2}


@pytest.fixture
def probing() -> Iterator[None]:
    with override_settings(**PROBING):
        rotation.rotation()  # starts the prober
        yield


def port_of(alias: str) -> int:
    return int(settings.PG_NODE_PORTS[alias])


def read_port() -> int:
    (row,) = Item.objects.raw("SELECT inet_server_port() AS id")
    return int(row.id)


def lag_of(alias: str) -> float | None:
    status = {s.alias: s for s in health.registry.statuses()}[alias]
    return status.lag_seconds


def lagging(wait_until, behind: dict[str, float]) -> None:
    """Keep the primary committing until the prober has measured each replica
    in ``behind`` at least that many seconds behind (and any other caught
    up); it stays about that far behind while the test writes on."""

    def measured() -> bool:
        Item.objects.create(name="keeps the primary writing")
        lags = {alias: lag_of(alias) for alias in REPLICAS}
        return all(
            lags[alias] is not None and lags[alias] >= behind.get(alias, 0)
            if alias in behind
            else lags[alias] is not None and lags[alias] < 1
            for alias in REPLICAS
        )

    wait_until(measured, timeout=30, what=f"lag of {behind}")


def ports_in_blocks(times: int = 20, **bound: float) -> set[int]:
    """The ports that answer one read in each of ``times`` bounded blocks."""
    seen = set()
    for _ in range(times):
        with multidb.use_replica(**bound):
            seen.add(read_port())
    return seen


# --- use_replica(max_lag=...) -------------------------------------------------


def test_a_bounded_block_reads_only_replicas_the_prober_measured_within_the_bound(
    faults, probing, wait_until
):
    faults.delay("replica1", 8)
    lagging(wait_until, {"replica1": 2.5})

    strict = ports_in_blocks(max_lag=1)
    loose = ports_in_blocks(max_lag=60)
    plain = {read_port() for _ in range(20)}

    assert strict == {port_of("replica2")}
    assert loose == {port_of("replica1"), port_of("replica2")}
    # The rotation itself (MULTIDB_REPLICA_MAX_LAG = 30) still has both.
    assert plain == {port_of("replica1"), port_of("replica2")}


def test_a_bound_in_bytes_reads_only_replicas_that_many_bytes_behind_at_most(
    pg_cluster, faults, probing, wait_until
):
    faults.pause("replica1")
    Item.objects.bulk_create(Item(name=f"row {i}") for i in range(500))
    pg_cluster.wait_caught_up(skip_paused=True)

    def measured() -> bool:
        lags = health.registry.lags()
        return lags.get("replica1", (0, 0))[1] > 4096 and lags.get("replica2") == (
            0.0,
            0,
        )

    wait_until(measured, what="replica1 behind in bytes, replica2 caught up")

    assert ports_in_blocks(max_lag_bytes=4096) == {port_of("replica2")}


def test_when_no_replica_is_within_the_bound_a_bounded_read_goes_to_the_primary(
    pg_cluster, faults, probing, wait_until
):
    for alias in REPLICAS:
        faults.delay(alias, 8)
    lagging(wait_until, {"replica1": 2.5, "replica2": 2.5})

    assert ports_in_blocks(max_lag=1) == {pg_cluster.primary.port}
    assert {read_port() for _ in range(10)} <= {port_of(a) for a in REPLICAS}


def getter(client: Client | AsyncClient) -> Any:
    """``client.get``, called from sync code: an ``AsyncClient``'s through
    ``async_to_sync`` (Django 4.2's ``AsyncClient.get`` is not marked as a
    coroutine function, which asgiref warns about)."""
    if not isinstance(client, AsyncClient):
        return client.get

    async def get(*args: Any, **kwargs: Any) -> Any:
        return await client.get(*args, **kwargs)

    return async_to_sync(get)


@pytest.mark.parametrize("url", ["/find-within-2s/", "/async-find-within-2s/"])
def test_a_bounded_view_reads_a_replica_within_the_bound_and_past_the_users_token(
    faults, probing, wait_until, url
):
    # replica1 is well within 60 s... of a bound of 2 s it is not; replica2
    # is, and it alone has replayed the write the cookie's token points at.
    faults.delay("replica1", 8)
    lagging(wait_until, {"replica1": 2.5})
    client = AsyncClient() if url.startswith("/async") else Client()
    get = getter(client)
    wrote = get("/create/", {"name": "mine"})
    assert wrote.status_code == 200

    answers = [get(url, {"name": "mine"}).json() for _ in range(10)]

    assert {(a["found"], a["port"]) for a in answers} == {(True, port_of("replica2"))}


@pytest.mark.parametrize("url", ["/find-within-2s/", "/async-find-within-2s/"])
def test_a_bounded_view_answers_503_when_no_replica_is_within_and_the_policy_is_error(
    faults, probing, wait_until, url
):
    for alias in REPLICAS:
        faults.delay(alias, 8)
    lagging(wait_until, {"replica1": 2.5, "replica2": 2.5})
    client = AsyncClient() if url.startswith("/async") else Client()
    get = getter(client)

    with override_settings(MULTIDB_NO_REPLICA="error"):
        refused = get(url, {"name": "anything"})
    with override_settings(MULTIDB_NO_REPLICA="least-lagged"):
        relaxed = get(url, {"name": "anything"})

    assert refused.status_code == 503
    assert (
        "No replica is within the staleness bound (max_lag=2)"
        in (refused.json()["error"])
    )
    # A bound is never relaxed: "least-lagged" reads the primary here.
    assert relaxed.json()["db"] == "default"


def test_with_health_checks_off_a_bounded_read_goes_to_the_primary_and_says_so_once(
    pg_cluster, caplog, monkeypatch
):
    monkeypatch.setattr(routers, "_unmeasured_logged", False)
    caplog.set_level(logging.WARNING, logger="multidb")
    assert settings.MULTIDB_HEALTH_CHECK_INTERVAL is None

    seen = ports_in_blocks(times=5, max_lag=60)

    assert seen == {pg_cluster.primary.port}
    messages = [r.getMessage() for r in caplog.records if r.name == "multidb"]
    assert messages == [
        "use_replica(max_lag=...) reads go to 'default': health checks are off "
        "(MULTIDB_HEALTH_CHECK_INTERVAL = None), so no replica's lag is measured"
    ]


# --- MULTIDB_NO_REPLICA and MULTIDB_MIN_SERVING_REPLICAS ---------------------


@pytest.mark.parametrize("url", ["/find-or-503/", "/async-find-or-503/"])
def test_with_every_replica_stopped_and_the_error_policy_a_view_answers_503(
    faults, probing, wait_until, caplog, url
):
    caplog.set_level(logging.WARNING, logger="multidb")
    client = AsyncClient() if url.startswith("/async") else Client()
    get = getter(client)
    with override_settings(MULTIDB_NO_REPLICA="error"):
        for alias in REPLICAS:
            faults.stop(alias)
        wait_until(lambda: not rotation.rotation().usable, what="no replica usable")
        answers = [get(url, {"name": "anything"}) for _ in range(3)]
        for alias in REPLICAS:
            faults.start(alias)
        wait_until(lambda: rotation.rotation().usable == set(REPLICAS))
        back = get(url, {"name": "anything"})

    assert [a.status_code for a in answers] == [503, 503, 503]
    assert "No replica is usable" in answers[0].json()["error"]
    assert back.status_code == 200 and back.json()["db"] in REPLICAS
    messages = [r.getMessage() for r in caplog.records if r.name == "multidb"]
    assert (
        messages.count(
            "no replica is usable; reads raise NoReplicaAvailable "
            "(MULTIDB_NO_REPLICA = 'error')"
        )
        == 1
    )


@pytest.mark.parametrize(
    "setting",
    [{"MULTIDB_NO_REPLICA": "least-lagged"}, {"MULTIDB_MIN_SERVING_REPLICAS": 1}],
    ids=["least-lagged", "min-serving-1"],
)
def test_when_every_replica_lags_past_the_limit_the_least_lagged_keeps_serving(
    faults, wait_until, caplog, setting
):
    caplog.set_level(logging.INFO, logger="multidb")
    with override_settings(**PROBING, MULTIDB_REPLICA_MAX_LAG=1, **setting):
        rotation.rotation()
        faults.delay("replica1", 12)
        faults.delay("replica2", 4)

        def replica2_kept() -> bool:
            Item.objects.create(name="keeps the primary writing")
            lags = {alias: lag_of(alias) for alias in REPLICAS}
            return (
                lags["replica1"] is not None
                and lags["replica2"] is not None
                and lags["replica1"] > lags["replica2"] + 2 > 3
                and rotation.rotation().usable == {"replica2"}
            )

        wait_until(replica2_kept, timeout=30, what="replica2 kept serving")
        seen = {read_port() for _ in range(20)}

    assert seen == {port_of("replica2")}
    kept = [
        r.getMessage()
        for r in caplog.records
        if r.name == "multidb" and "keeps serving" in r.getMessage()
    ]
    assert len(kept) >= 1
    assert kept[-1].startswith(
        "replica replica2 keeps serving reads though it is lagging: "
    )


@override_settings(**PROBING, MULTIDB_REPLICA_MAX_LAG=1, MULTIDB_MIN_SERVING_REPLICAS=2)
def test_the_serving_floor_never_keeps_an_unreachable_replica(faults, wait_until):
    rotation.rotation()
    faults.stop("replica2")
    faults.delay("replica1", 8)
    lagging_seen = wait_until(
        lambda: (
            Item.objects.create(name="keeps the primary writing")
            and (lag_of("replica1") or 0) > 1.5
            and rotation.rotation().usable == {"replica1"}
        ),
        timeout=30,
        what="replica1 lagging, kept; replica2 down",
    )

    assert lagging_seen
    assert {read_port() for _ in range(10)} == {port_of("replica1")}
