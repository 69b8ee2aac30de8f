"""The pytest plugin's harness for a site with replica groups, judged on the
servers themselves: one independent cluster per primary, each alias on the
server the harness says, each replica replaying its own primary, and every
helper acting on the cluster of the alias it is given.

The aliases' connections are used directly: where the router sends a query
is not what these tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connections

from multidb.testing.control import SiteCluster

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

GROUPS: dict[str, list[str]] = settings.MULTIDB_REPLICA_GROUPS
#: Every alias, each primary followed by its replicas.
ALIASES: list[str] = settings.PG_ALIASES
REPLICAS = [alias for replicas in GROUPS.values() for alias in replicas]


def ask(alias: str, sql: str, params: Any = None) -> Any:
    """The first column of the first row of ``sql`` on ``alias``'s connection."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def execute(alias: str, sql: str, params: Any = None) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)


def identifier(alias: str) -> int:
    return int(ask(alias, "SELECT system_identifier FROM pg_control_system()"))


# A table of the tests' own, made on both primaries by hand: which primary
# Django migrates the billing app to is the router's business.
MARKS = "harness_mark"


@pytest.fixture
def marks(groups_cluster: SiteCluster) -> Iterator[None]:
    """An empty ``harness_mark`` table on both primaries, replayed by every
    replica before the test starts."""
    for primary in GROUPS:
        execute(primary, f"CREATE TABLE {MARKS} (said text)")
    groups_cluster.wait_caught_up()
    yield
    for primary in GROUPS:
        execute(primary, f"DROP TABLE IF EXISTS {MARKS}")


def marks_on(alias: str) -> set[str]:
    """What ``harness_mark`` holds on ``alias``'s server."""
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT said FROM {MARKS}")
        return {row[0] for row in cursor.fetchall()}


def test_each_alias_answers_from_the_port_the_harness_gives_it(
    groups_cluster: SiteCluster,
) -> None:
    answered = {alias: ask(alias, "SELECT inet_server_port()") for alias in ALIASES}

    assert answered == {alias: groups_cluster.port(alias) for alias in ALIASES}
    # --multidb-ports, as tests/groups/conftest.py passes it: in alias order.
    assert answered == settings.PG_NODE_PORTS
    assert len(set(answered.values())) == len(ALIASES)


def test_the_harness_knows_the_group_of_each_alias(
    groups_cluster: SiteCluster,
) -> None:
    assert groups_cluster.primaries == ["default", "billing"]
    assert groups_cluster.primary == "default"
    assert groups_cluster.replicas == REPLICAS
    assert {p: groups_cluster.replicas_of(p) for p in GROUPS} == GROUPS
    assert {a: groups_cluster.primary_of(a) for a in ALIASES} == {
        "default": "default",
        "replica1": "default",
        "replica2": "default",
        "billing": "billing",
        "billing_r1": "billing",
    }
    assert groups_cluster.cluster_of("billing_r1") is groups_cluster.clusters[1]
    assert groups_cluster.cluster is groups_cluster.clusters[0]


def test_the_two_primaries_are_independent_servers(
    groups_cluster: SiteCluster,
) -> None:
    assert ask("default", "SELECT pg_is_in_recovery()") is False
    assert ask("billing", "SELECT pg_is_in_recovery()") is False
    assert identifier("default") != identifier("billing")


def test_each_replica_streams_from_its_own_primary(
    groups_cluster: SiteCluster,
) -> None:
    for primary, replicas in GROUPS.items():
        streaming = ask(
            primary,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        assert streaming == len(replicas)
        for replica in replicas:
            assert ask(replica, "SELECT pg_is_in_recovery()") is True
            assert identifier(replica) == identifier(primary)
            sender = ask(replica, "SELECT sender_port FROM pg_stat_wal_receiver")
            assert sender == groups_cluster.port(primary)


def test_each_primary_holds_a_test_database_that_its_replicas_mirror(
    groups_cluster: SiteCluster,
) -> None:
    names = {alias: ask(alias, "SELECT current_database()") for alias in ALIASES}

    for primary, replicas in GROUPS.items():
        assert names[primary].startswith("test_")
        assert connections[primary].settings_dict["NAME"] == names[primary]
        for replica in replicas:
            assert connections[replica].settings_dict["TEST"]["MIRROR"] == primary
            assert names[replica] == names[primary]


def test_each_replica_replays_its_own_primary_and_no_other(
    groups_cluster: SiteCluster, marks: None
) -> None:
    execute("default", f"INSERT INTO {MARKS} VALUES ('on default')")
    execute("billing", f"INSERT INTO {MARKS} VALUES ('on billing')")

    # No polling: waiting for the replicas covers both groups.
    groups_cluster.wait_caught_up()

    assert marks_on("billing_r1") == {"on billing"}
    assert marks_on("replica1") == marks_on("replica2") == {"on default"}
    assert marks_on("default") == {"on default"}


def test_pausing_billing_r1_stops_its_replay_only(
    groups_cluster: SiteCluster, marks: None
) -> None:
    groups_cluster.pause("billing_r1")
    execute("default", f"INSERT INTO {MARKS} VALUES ('while paused')")
    execute("billing", f"INSERT INTO {MARKS} VALUES ('while paused')")
    groups_cluster.wait_caught_up()  # all but the paused billing_r1

    assert marks_on("billing_r1") == set()
    assert marks_on("replica1") == marks_on("replica2") == {"while paused"}
    states = {r: ask(r, "SELECT pg_get_wal_replay_pause_state()") for r in REPLICAS}
    assert states == {
        "replica1": "not paused",
        "replica2": "not paused",
        "billing_r1": "paused",
    }

    groups_cluster.resume("billing_r1")
    groups_cluster.wait_caught_up()
    assert marks_on("billing_r1") == {"while paused"}


def test_delaying_billing_r1_delays_its_replay_only(
    groups_cluster: SiteCluster,
) -> None:
    groups_cluster.delay("billing_r1", 30)

    delays = {r: ask(r, "SHOW recovery_min_apply_delay") for r in REPLICAS}
    assert delays == {"replica1": "0", "replica2": "0", "billing_r1": "30s"}


def test_stopping_billing_r1_stops_its_server_only(
    groups_cluster: SiteCluster,
) -> None:
    groups_cluster.stop("billing_r1")
    connections["billing_r1"].close()

    with pytest.raises(OperationalError):
        ask("billing_r1", "SELECT 1")
    for alias in ALIASES:
        if alias != "billing_r1":
            assert ask(alias, "SELECT inet_server_port()") == groups_cluster.port(alias)

    groups_cluster.start("billing_r1")
    assert ask("billing_r1", "SELECT inet_server_port()") == groups_cluster.port(
        "billing_r1"
    )


def test_a_promoted_billing_r1_is_rebuilt_from_the_billing_primary(
    groups_cluster: SiteCluster,
) -> None:
    groups_cluster.promote("billing_r1")
    assert ask("billing_r1", "SELECT pg_is_in_recovery()") is False

    groups_cluster.restore()

    assert ask("billing_r1", "SELECT pg_is_in_recovery()") is True
    assert identifier("billing_r1") == identifier("billing")
    sender = ask("billing_r1", "SELECT sender_port FROM pg_stat_wal_receiver")
    assert sender == groups_cluster.port("billing")


def test_record_names_the_server_of_every_group_that_answered(
    groups_cluster: SiteCluster,
) -> None:
    with groups_cluster.record() as served:
        for alias in ALIASES:
            ask(alias, "SELECT 1")

    assert [(q.alias, q.server) for q in served.queries] == [(a, a) for a in ALIASES]
    assert served.on_replicas == set(REPLICAS)

    with groups_cluster.record() as on_billing:
        ask("billing", "SELECT 1")
    assert on_billing.on_primary
    assert on_billing.on_replicas == set()
