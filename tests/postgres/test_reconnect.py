"""A server that restarts is usable again in a thread with no request cycle.

A long-lived worker thread (one thread for the whole test, as in a worker
loop or a management command) reads and writes through the router and never
calls ``close_old_connections``; nothing else closes its connections.  A
server is killed (``pg_ctl stop -m immediate``) and started again while the
worker holds a connection to it; once the prober sees it back, the worker's
next query there must succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings

from multidb import health, reconnect, use_replica
from tests.app.models import Item

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

T = TypeVar("T")

#: replica2 reads through Django's pool (Django 5.1+), replica1 does not.
REPLICAS = ("replica1", "replica2")


class Worker:
    """One long-lived thread that runs what it is given, in order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="worker-loop")

    def run(self, func: Callable[[], T]) -> T:
        return self._executor.submit(func).result(timeout=30)

    def stop(self) -> None:
        # Its connections would keep the test database from being dropped.
        self.run(connections.close_all)
        self._executor.shutdown()


@pytest.fixture
def worker() -> Iterator[Worker]:
    worker = Worker()
    try:
        yield worker
    finally:
        worker.stop()


def port_of(alias: str) -> int:
    return int(settings.DATABASES[alias]["PORT"])


def read_port_from(alias: str) -> Callable[[], int]:
    """A routed read forced to the replica ``alias``: the port that answered."""

    def read() -> int:
        with use_replica(alias):
            (row,) = Item.objects.raw("SELECT inet_server_port() AS id")
            return int(row.id)

    return read


def write_and_read_back(name: str) -> Callable[[], str]:
    def write() -> str:
        item = Item.objects.create(name=name)
        return Item.objects.using("default").get(pk=item.pk).name

    return write


def state_of(alias: str) -> str:
    return {s.alias: s.state for s in health.registry.statuses()}[alias]


def wait_for_state(wait_until: Any, alias: str, state: str) -> None:
    wait_until(lambda: state_of(alias) == state, 20, f"{alias} to be {state}")


@pytest.mark.parametrize("alias", REPLICAS)
def test_a_worker_thread_reads_a_restarted_replica_once_the_prober_sees_it_back(
    faults, wait_until, worker, alias
):
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.2):
        health.ensure_started()
        wait_for_state(wait_until, alias, "ok")
        assert worker.run(read_port_from(alias)) == port_of(alias)

        faults.stop(alias)
        wait_for_state(wait_until, alias, "down")
        faults.start(alias, keep_connections=True)
        wait_for_state(wait_until, alias, "ok")

        assert worker.run(read_port_from(alias)) == port_of(alias)


def test_a_worker_thread_writes_to_a_restarted_primary_once_the_prober_sees_it_back(
    faults, wait_until, worker
):
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.2):
        health.ensure_started()
        wait_for_state(wait_until, "default", "ok")
        assert worker.run(write_and_read_back("before")) == "before"

        faults.stop("default")
        wait_for_state(wait_until, "default", "down")
        faults.start("default", keep_connections=True)
        wait_for_state(wait_until, "default", "ok")

        assert worker.run(write_and_read_back("after")) == "after"


def test_a_recheck_of_a_server_that_is_fine_checks_once_and_keeps_the_connection(
    worker,
):
    def connection_and_hook() -> tuple[object, bool]:
        wrapper = connections["replica1"]
        return wrapper.connection, reconnect.HOOK in vars(wrapper)

    worker.run(read_port_from("replica1"))
    before, _ = worker.run(connection_and_hook)

    reconnect.recheck("replica1")
    armed = worker.run(connection_and_hook)
    assert worker.run(read_port_from("replica1")) == port_of("replica1")
    after = worker.run(connection_and_hook)

    assert armed == (before, True)
    # No check left behind for the queries after it, on the same connection.
    assert after == (before, False)


@pytest.mark.parametrize("when", ["closed", "reconnected"])
def test_a_recheck_never_queries_a_connection_made_after_it(worker, when):
    """Django runs the check inside connect() too, before autocommit is set:
    a query there would leave the new connection in a transaction."""

    def read_in_a_transaction() -> int:
        wrapper = connections["replica1"]
        wrapper.ensure_connection()
        if when == "closed":
            wrapper.close()
            reconnect.recheck("replica1")
        else:
            reconnect.recheck("replica1")
            wrapper.close()
        with transaction.atomic(using="replica1"), wrapper.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            return int(cursor.fetchone()[0])

    assert worker.run(read_in_a_transaction) == port_of("replica1")
