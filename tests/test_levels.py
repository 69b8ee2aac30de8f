"""Staleness bounds and the no-replica policy: the decisions, on SQLite.

SQLite has no replication: here the registry is given the statuses a probe
round would publish, and the tests check where reads go and what is
logged.  Every claim about real lag is made against real PostgreSQL servers
in tests/postgres/test_levels.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest
from django.db import transaction
from django.test import override_settings

import multidb
from multidb import PinningReplicaRouter, ReplicaRouter, health, rotation, routers
from multidb.health import DatabaseStatus
from multidb.pinning import (
    TIME_PIN,
    Bound,
    BoundedScope,
    _scope,
    begin_request,
    end_request,
    keep_bound,
    unpin_this_thread,
    use_primary_db,
    use_replica,
)
from multidb.tokens import read_after
from tests.app.models import Item

REPLICAS = ("replica1", "replica2")
CHECKS_ON = {"MULTIDB_HEALTH_CHECK_INTERVAL": 60}


@pytest.fixture(autouse=True)
def no_prober(monkeypatch):
    """Health checks on, but no prober thread: the test publishes the
    statuses itself."""
    monkeypatch.setattr(rotation, "on_rebuild", [])
    with override_settings(**CHECKS_ON):
        yield


def publish(**replicas: tuple[str, float | None, int | None, str | None]) -> None:
    """Record a probe round: ``alias=(state, lag_seconds, lag_bytes, position)``."""
    statuses = [DatabaseStatus("default", "primary", "ok", reachable=True)]
    for alias, (state, seconds, size, position) in replicas.items():
        statuses.append(
            DatabaseStatus(
                alias,
                "replica",
                state,
                reachable=state != "down",
                is_replica=state != "down",
                lag_bytes=size,
                lag_seconds=seconds,
                replay_position=position,
                reason="" if state == "ok" else f"{state} for the test",
            )  # fmt: skip
        )
    health.registry._publish(statuses, True, time.monotonic())


def read() -> str:
    return PinningReplicaRouter().db_for_read(Item)


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "multidb"]


# --- the API -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lag": -1},
        {"max_lag": math.nan},
        {"max_lag": math.inf},
        {"max_lag": True},
        {"max_lag": "5"},
        {"max_lag_bytes": 1.5},
        {"max_lag_bytes": -1},
        {"max_lag_bytes": False},
    ],
)
def test_a_bound_that_cannot_be_compared_with_a_lag_is_refused_at_once(kwargs):
    with pytest.raises(ValueError, match="use_replica"):
        use_replica(**kwargs)


def test_nested_bounds_keep_the_stricter_of_each():
    assert use_replica(max_lag=5).bound.stricter(None).max_lag == 5
    inner = Bound(10, 100).stricter(Bound(5, None))
    assert (inner.max_lag, inner.max_lag_bytes) == (5, 100)
    mixed = Bound(None, 100).stricter(Bound(5, None))
    assert (mixed.max_lag, mixed.max_lag_bytes) == (5, 100)
    with use_replica(max_lag=5), use_replica(max_lag=10, max_lag_bytes=7):
        bound = _scope.get().bound
    assert (bound.max_lag, bound.max_lag_bytes) == (5, 7)
    assert repr(bound) == "Bound(max_lag=5, max_lag_bytes=7)"


def test_a_bound_allows_only_a_lag_measured_within_it():
    assert Bound(5, None).allows(5, None)
    assert not Bound(5, None).allows(5.1, 0)
    assert not Bound(5, None).allows(None, 0)
    assert Bound(None, 10).allows(None, 10)
    assert not Bound(None, 10).allows(0, None)
    assert not Bound(5, 10).allows(1, 11)


# --- where bounded reads go ----------------------------------------------------


def test_a_bounded_block_reads_a_replica_within_the_bound_only():
    publish(replica1=("ok", 8.0, 100, None), replica2=("ok", 0.0, 0, None))
    with use_replica(max_lag=5):
        inside = {read() for _ in range(5)}
    with use_replica(max_lag=60):
        loose = {read() for _ in range(5)}
    assert inside == {"replica2"}
    assert len(loose) == 1 and loose <= set(REPLICAS)


def test_in_a_request_a_bounded_block_prefers_the_requests_replica_else_the_freshest():
    publish(replica1=("ok", 3.0, 100, None), replica2=("ok", 2.0, 50, None))
    token = begin_request(None)
    try:
        own = read()
        with use_replica(max_lag=60):
            same = read()
        with use_replica(max_lag=2.5):
            within = read()
    finally:
        end_request(token)
    assert same == own
    assert within == "replica2"


def test_a_bound_and_a_named_replica_read_that_replica_only_within_the_bound():
    publish(replica1=("ok", 8.0, 100, None), replica2=("ok", 0.0, 0, None))
    with use_replica("replica2", max_lag=1):
        fresh = read()
    with use_replica("replica1", max_lag=1):
        stale = read()
    assert (fresh, stale) == ("replica2", "default")


def test_with_no_replica_within_the_bound_the_policy_decides():
    publish(replica1=("ok", 8.0, 100, None), replica2=("lagging", 40.0, 9, None))
    with use_replica(max_lag=1):
        primary = read()
        with override_settings(MULTIDB_NO_REPLICA="least-lagged"):
            still_primary = read()
        with (
            override_settings(MULTIDB_NO_REPLICA="error"),
            pytest.raises(multidb.NoReplicaAvailable, match=r"\(max_lag=1\)"),
        ):
            read()
    with (
        use_replica(max_lag=1, max_lag_bytes=5),
        override_settings(MULTIDB_NO_REPLICA="error"),
        pytest.raises(multidb.NoReplicaAvailable, match=r"max_lag=1, max_lag_bytes=5"),
    ):
        read()
    with (
        use_replica(max_lag_bytes=5),
        override_settings(MULTIDB_NO_REPLICA="error"),
        pytest.raises(multidb.NoReplicaAvailable, match=r"\(max_lag_bytes=5\)"),
    ):
        read()
    assert (primary, still_primary) == ("default", "default")


def test_before_the_first_probe_a_bounded_read_goes_to_the_primary():
    with override_settings(MULTIDB_NO_REPLICA="error"), use_replica(max_lag=60):
        assert read() == "default"


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=None)
def test_with_health_checks_off_a_bounded_read_goes_to_the_primary_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="multidb")
    with use_replica(max_lag=60):
        reads = {read() for _ in range(3)}
    assert reads == {"default"}
    assert len(messages(caplog)) == 1


def test_a_bounded_block_keeps_the_requests_time_pin_unless_unpinned():
    publish(replica1=("ok", 0.0, 0, None), replica2=("ok", 0.0, 0, None))
    token = begin_request(TIME_PIN)
    try:
        with use_replica(max_lag=5):
            pinned = read()
            assert multidb.this_thread_is_pinned()
            unpin_this_thread()
            unpinned = read()
            assert isinstance(_scope.get(), BoundedScope)
    finally:
        end_request(token)
    assert pinned == "default"
    assert unpinned in REPLICAS


@pytest.mark.django_db(transaction=True)
def test_a_bounded_read_in_an_atomic_block_goes_to_the_primary():
    publish(replica1=("ok", 0.0, 0, None), replica2=("ok", 0.0, 0, None))
    with transaction.atomic(), use_replica(max_lag=5):
        assert read() == "default"
        assert ReplicaRouter().db_for_read(Item) == "default"


def test_replica_router_and_get_replica_keep_the_bound_but_ignore_pins():
    publish(replica1=("ok", 9.0, 0, None), replica2=("ok", 0.0, 0, None))
    token = begin_request(TIME_PIN)
    try:
        with use_replica(max_lag=5):
            assert ReplicaRouter().db_for_read(Item) == "replica2"
            assert multidb.get_replica() == "replica2"
    finally:
        end_request(token)


def test_inner_blocks_keep_the_bound_unless_they_force_a_database():
    publish(replica1=("ok", 9.0, 0, None), replica2=("ok", 0.0, 0, None))
    with use_replica(max_lag=5):
        with read_after(None):
            kept = read()
        with use_primary_db:
            primary = read()
        with use_replica("replica1"):
            forced = read()
    assert (kept, primary, forced) == ("replica2", "default", "replica1")
    scope = _scope.get()
    assert keep_bound(scope, scope) is scope


def test_read_after_in_a_bounded_block_of_a_request_keeps_the_bound_on_its_own_state():
    token = begin_request(None)
    try:
        with use_replica(max_lag=5), read_after("not a token"):
            scope = _scope.get()
            outer = scope.request.outer
    finally:
        end_request(token)
    assert isinstance(scope, BoundedScope) and scope.bound.max_lag == 5
    assert scope.holder is scope.request and outer is not None


# --- bounds and tokens: the stricter wins ----------------------------------------


def in_request(position: int, *blocks: use_replica, times: int = 1) -> list[str]:
    """Reads in a request waiting for ``position``, inside ``blocks``."""
    token = begin_request(position)
    try:
        reads = []
        for block in blocks:
            with block:
                reads += [read() for _ in range(times)]
        return reads
    finally:
        end_request(token)


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_bounded_read_with_a_token_reads_a_replica_within_that_has_replayed_it():
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 1.0, 0, "0/200"))
    reads = in_request(0x150, use_replica(max_lag=5), times=2)
    # replica1 is within the bound but behind the token; replica2 has the
    # token but is outside the bound.
    neither = in_request(0x150, use_replica(max_lag=0.5))
    assert (reads, neither) == (["replica2", "replica2"], ["default"])


def test_a_bounded_read_asks_one_replica_within_the_bound_once_per_request(
    monkeypatch,
):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    asked: list[str] = []

    def replay_position(alias: str) -> int:
        asked.append(alias)
        return 0x300

    monkeypatch.setattr(routers, "replay_position", replay_position)
    token = begin_request(0x200)
    try:
        with use_replica(max_lag=5):
            first = read()
            second = read()
        request = _scope.get().request
        settled = (request.pinned, request.settled)
    finally:
        end_request(token)
    fixed = in_request(0x200, use_replica("replica1", max_lag=5), times=2)
    assert first == second == asked[0]
    assert settled == (None, 0x200)
    assert fixed == ["replica1", "default"]
    assert len(asked) == 2


def test_a_bounded_read_behind_the_token_goes_to_the_primary_and_asks_once(
    monkeypatch,
):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    asked: list[str] = []
    monkeypatch.setattr(routers, "replay_position", lambda a: asked.append(a))
    reads = in_request(0x200, use_replica(max_lag=5), times=2)
    assert reads == ["default", "default"]
    assert len(asked) == 1


def test_a_bounded_read_on_the_event_loop_with_a_token_asks_no_replica():
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))

    async def on_the_loop() -> list[str]:
        return in_request(0x200, use_replica(max_lag=5))

    assert asyncio.run(on_the_loop()) == ["default"]


# --- MULTIDB_NO_REPLICA and MULTIDB_MIN_SERVING_REPLICAS ---------------------


def test_with_the_error_policy_a_read_with_no_usable_replica_raises(caplog):
    caplog.set_level(logging.WARNING, logger="multidb")
    with override_settings(MULTIDB_NO_REPLICA="error"):
        publish(
            replica1=("down", None, None, None), replica2=("down", None, None, None)
        )
        with pytest.raises(multidb.NoReplicaAvailable, match="No replica is usable"):
            read()
        with pytest.raises(multidb.NoReplicaAvailable):
            ReplicaRouter().db_for_read(Item)
    assert read() == "default"
    assert messages(caplog)[-1] == (
        "no replica is usable; reads raise NoReplicaAvailable "
        "(MULTIDB_NO_REPLICA = 'error')"
    )


@override_settings(REPLICA_DATABASES=[], MULTIDB_NO_REPLICA="error")
def test_with_no_replica_configured_the_error_policy_reads_the_primary():
    with pytest.warns(UserWarning, match="No replica databases"):
        assert read() == "default"


LAGGING = {
    "replica1": ("lagging", 40.0, 900, None),
    "replica2": ("lagging", 35.0, 800, None),
}


def test_the_least_lagged_policy_keeps_the_freshest_reachable_replica_serving(caplog):
    caplog.set_level(logging.INFO, logger="multidb")
    with override_settings(MULTIDB_NO_REPLICA="least-lagged"):
        publish(**LAGGING)
        kept = rotation.rotation().usable
        publish(replica1=LAGGING["replica1"], replica2=("down", None, None, None))
        after_down = rotation.rotation().usable
        publish(
            replica1=("lagging", 50.0, 900, None), replica2=("lagging", 60.0, 9, None)
        )
        swapped = rotation.rotation().usable
    assert (kept, after_down, swapped) == ({"replica2"}, {"replica1"}, {"replica1"})
    assert messages(caplog) == [
        "replica replica1 is lagging: lagging for the test",
        "replica replica2 is lagging: lagging for the test",
        "replica replica2 keeps serving reads though it is lagging: lagging for "
        "the test (MULTIDB_NO_REPLICA = 'least-lagged')",
        "replica replica2 is down: down for the test",
        "replica replica1 keeps serving reads though it is lagging: lagging for "
        "the test (MULTIDB_NO_REPLICA = 'least-lagged')",
        "replica replica2 is lagging: lagging for the test",
    ]


@override_settings(MULTIDB_MIN_SERVING_REPLICAS=2)
def test_the_serving_floor_keeps_lagging_replicas_and_logs_when_one_leaves(caplog):
    caplog.set_level(logging.INFO, logger="multidb")
    publish(replica1=("ok", 0.0, 0, None), replica2=("lagging", None, 800, None))
    one_kept = rotation.rotation().usable
    publish(replica1=("ok", 0.0, 0, None), replica2=("ok", 0.0, 0, None))
    with override_settings(MULTIDB_MIN_SERVING_REPLICAS=1):
        publish(replica1=("ok", 0.0, 0, None), replica2=("lagging", 5.0, None, None))
        publish(**LAGGING)
        publish(replica1=("ok", 0.0, 0, None), replica2=("lagging", 5.0, None, None))
    assert one_kept == set(REPLICAS)
    assert messages(caplog) == [
        "replica replica2 is lagging: lagging for the test",
        "replica replica2 keeps serving reads though it is lagging: lagging for "
        "the test (MULTIDB_MIN_SERVING_REPLICAS = 2)",
        "replica replica2 is back in rotation",
        "replica replica2 is lagging: lagging for the test",
        "replica replica1 is lagging: lagging for the test",
        "replica replica2 keeps serving reads though it is lagging: lagging for "
        "the test (MULTIDB_MIN_SERVING_REPLICAS = 1)",
        "replica replica1 is back in rotation",
        "replica replica2 no longer serves reads: lagging for the test",
    ]
