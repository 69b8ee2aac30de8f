"""The plugin's helpers, each seen on the servers themselves."""

import time

import pytest
from django.db import OperationalError, connections
from notes.models import Note

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def on(alias):
    return set(Note.objects.using(alias).values_list("text", flat=True))


def eventually(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def port_of(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return cursor.fetchone()[0]


def test_each_alias_reaches_its_own_server(multidb_cluster):
    ports = {alias: port_of(alias) for alias in ("default", "replica1", "replica2")}

    assert ports == {
        alias: multidb_cluster.port(alias)
        for alias in ("default", "replica1", "replica2")
    }
    assert len(set(ports.values())) == 3


def test_a_paused_replica_is_stale_until_resumed(multidb_cluster):
    multidb_cluster.pause("replica1")
    Note.objects.create(text="new")
    multidb_cluster.wait_caught_up()  # replica2 only: replica1 is paused

    assert on("replica1") == set()
    assert on("replica2") == {"new"}
    multidb_cluster.resume("replica1")
    multidb_cluster.wait_caught_up()
    assert on("replica1") == {"new"}


def test_a_delayed_replica_applies_late(multidb_cluster):
    multidb_cluster.delay("replica2", 2)
    Note.objects.create(text="late")

    assert on("replica2") == set()
    eventually(lambda: on("replica2") == {"late"})


def test_a_stopped_replica_refuses_connections_until_started(multidb_cluster):
    multidb_cluster.stop("replica2")
    connections["replica2"].close()

    with pytest.raises(OperationalError):
        port_of("replica2")
    multidb_cluster.start("replica2")
    assert port_of("replica2") == multidb_cluster.port("replica2")


def test_a_promoted_replica_accepts_writes(multidb_cluster):
    multidb_cluster.promote("replica1")

    Note.objects.using("replica1").create(text="on the promoted one")
    assert on("replica1") == {"on the promoted one"}
    assert on("default") == set()


def test_faults_of_the_previous_tests_are_undone(multidb_cluster):
    Note.objects.create(text="everywhere")
    multidb_cluster.wait_caught_up()

    assert on("replica1") == on("replica2") == {"everywhere"}
    assert port_of("replica1") == multidb_cluster.port("replica1")
    with connections["replica1"].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone()[0] is True


def test_record_sees_the_queries_an_async_view_runs_in_worker_threads(
    async_client, multidb_cluster
):
    import asyncio

    Note.objects.create(text="counted")
    multidb_cluster.wait_caught_up()

    with multidb_cluster.record() as served:
        response = asyncio.run(async_client.get("/notes/count/"))

    assert response.json() == {"count": 1}
    assert len(served) == 1 and served.on_replicas and not served.on_primary
