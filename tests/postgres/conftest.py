"""The PostgreSQL cluster behind ``tests.postgres.settings``, and PgBouncer.

Every test here is marked ``postgres``.  A missing PostgreSQL (or PgBouncer,
for the tests that run through it) makes them error, never skip: deselect
them with ``-m "not postgres"`` instead.

A module whose tests should also run through PgBouncer in transaction
pooling mode says ``pytestmark = pytest.mark.usefixtures("route_via")``: each
of its tests then runs twice, ``[direct]`` and ``[pgbouncer]``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import psycopg_pool.base
import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

from multidb.testing.cluster import Cluster, Node, PgBouncer
from multidb.testing.control import SiteCluster

SETTINGS_MODULE = "tests.postgres.settings"
#: A user's site with its own suite, run by test_pytest_plugin.py in a copy.
collect_ignore = ["sample_site"]
#: What a client of PgBouncer sees when the server behind it is stopped (see
#: ``PgBouncer``): a query that waited in vain, or a fast failure after that.
PGBOUNCER_UNREACHABLE = ("query_wait_timeout", "server login has been failing")

# A pool's worker threads draw jitter from the global ``random`` whenever they
# connect, in the background.  Hypothesis takes any change of the global
# random state during a draw for the strategy using ``random`` (a deprecation
# warning, so an error here, and then FlakyStrategyDefinition): a pool
# connecting while a fuzz test drew failed that test at random.  The pool gets
# a generator of its own.
psycopg_pool.base.random = random.Random().random


def pytest_configure(config: pytest.Config) -> None:
    """These tests run on the pytest plugin's cluster (``--multidb-cluster``,
    implied here), on the ports the settings name."""
    from tests.postgres.settings import PG_PORTS

    config.option.multidb_cluster = True
    config.option.multidb_ports = ",".join(map(str, PG_PORTS))


@pytest.fixture(scope="session")
def pg_cluster(multidb_cluster_session: SiteCluster) -> Cluster:
    """The plugin's primary and two streaming replicas, started before the
    session's first test."""
    if settings.SETTINGS_MODULE != SETTINGS_MODULE:
        pytest.fail(
            f"tests/postgres needs its own session: run ./run.sh test, or "
            f"python -m pytest --ds={SETTINGS_MODULE} tests/postgres "
            f"(the settings are {settings.SETTINGS_MODULE})",
            pytrace=False,
        )
    return multidb_cluster_session.cluster


@pytest.fixture(scope="session")
def django_db_setup(
    pg_cluster: Cluster, django_db_setup: None, django_db_blocker: object
) -> Iterator[None]:
    """pytest-django's ``django_db_setup``, with the cluster running first.

    pytest sets the arguments up in order: ``pg_cluster``, then the original
    ``django_db_setup``, which creates ``test_postgres`` on the primary and
    makes the replica aliases mirrors (their NAME becomes ``test_postgres``
    too).  The replicas receive that database by streaming replication.
    """
    pg_cluster.wait_caught_up()
    yield
    # Before the original fixture drops the test database and pg_cluster
    # stops the servers: close connections and pools, so that no pool keeps
    # reconnecting to a database or server that is gone.
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        for conn in connections.all(initialized_only=True):
            conn.close()
            close_pool = getattr(conn, "close_pool", None)  # Django 5.1+
            if close_pool is not None:
                close_pool()


@pytest.fixture(autouse=True)
def _replicas_caught_up(pg_cluster: Cluster) -> None:
    """Each test starts with the replicas replaying everything (the previous
    test's flush included)."""
    for node in pg_cluster.replicas:
        if node.paused:
            pg_cluster.resume_replay(node)
    pg_cluster.wait_caught_up()


# --- direct, or through PgBouncer -----------------------------------------------


@pytest.fixture(scope="session")
def pg_bouncer(
    pg_cluster: Cluster, django_db_setup: None, django_db_blocker: Any
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of every server, started
    by the first test that runs through it.

    It needs ``django_db_setup`` so that it ends first: its server connections
    to ``test_postgres`` are released and it is stopped before that database
    is dropped (which fails while another session uses it).
    """
    bouncer = PgBouncer(pg_cluster).start()  # raises when pgbouncer is missing
    try:
        yield bouncer
    finally:
        with django_db_blocker.unblock():
            close_connections()
        try:
            bouncer.release()
        finally:
            bouncer.stop()


class Route:
    """How the ``DATABASES`` aliases reach their servers in a test."""

    def __init__(self, name: str, bouncer: PgBouncer | None = None) -> None:
        #: ``"direct"`` or ``"pgbouncer"``.
        self.name = name
        self.bouncer = bouncer

    @property
    def pgbouncer(self) -> bool:
        return self.bouncer is not None

    def __repr__(self) -> str:
        return f"<Route {self.name}>"


#: The route of the running test: ``Faults`` waits for a restarted server to be
#: reachable through PgBouncer too.
_route = Route("direct")


@pytest.fixture(params=["direct", "pgbouncer"])
def route_via(request: pytest.FixtureRequest, pg_cluster: Cluster) -> Iterator[Route]:
    """Run the test twice: with every alias connecting to its server
    directly, then through PgBouncer (transaction pooling).

    ``DATABASES`` is fixed per process, so for ``pgbouncer`` each alias's
    HOST and PORT are pointed at PgBouncer's listener for its server (in
    ``connections.settings``, the very dicts every connection, pool and probe
    connection is made from), with ``DISABLE_SERVER_SIDE_CURSORS``, and put
    back afterwards.  Connections and pools are closed before and after, in
    this thread and in asgiref's worker thread, so none outlives its route.
    ``settings.PG_NODE_PORTS`` keeps the servers' own ports.
    """
    global _route
    if request.param == "direct":
        yield Route("direct")
        return
    bouncer: PgBouncer = request.getfixturevalue("pg_bouncer")
    saved: dict[str, dict[str, Any]] = {}
    for alias, entry in connections.settings.items():
        routed = bouncer.django_settings(node_of(pg_cluster, alias))
        saved[alias] = {key: entry.get(key, _MISSING) for key in _ROUTED_KEYS}
        entry.update({key: routed[key] for key in _ROUTED_KEYS})
    try:
        close_connections()
        for node in pg_cluster.nodes:  # past any failed login of an earlier test
            bouncer.wait_reachable(node)
        _route = Route("pgbouncer", bouncer)
        yield _route
    finally:
        _route = Route("direct")
        close_connections()
        for alias, values in saved.items():
            entry = connections.settings[alias]
            for key, value in values.items():
                if value is _MISSING:
                    entry.pop(key, None)
                else:
                    entry[key] = value


_ROUTED_KEYS = ("HOST", "PORT", "DISABLE_SERVER_SIDE_CURSORS")
_MISSING = object()


def close_connections() -> None:
    """Close every alias's connection in this thread and in asgiref's
    thread-sensitive worker thread (where ``sync_to_async`` runs the ORM in
    async tests), and Django's pools (5.1+)."""
    for alias in connections:
        reset_connections(alias)
    # A private attribute of asgiref's SyncToAsync, present since 3.3.
    executor = getattr(SyncToAsync, "single_thread_executor", None)
    if executor is not None:
        executor.submit(connections.close_all).result(timeout=30)


# --- faults, for the health tests ---------------------------------------------


def node_of(cluster: Cluster, alias: str) -> Node:
    """The server behind a ``DATABASES`` alias (directly or through PgBouncer)."""
    port = settings.PG_NODE_PORTS[alias]
    return next(node for node in cluster.nodes if node.port == port)


def wait_reachable(node: Node) -> None:
    """Through PgBouncer, wait until a restarted server is reachable again."""
    if _route.bouncer is not None:
        _route.bouncer.wait_reachable(node)


class Faults(SiteCluster):
    """The plugin's ``SiteCluster`` over the session's servers, which also
    waits, after a server comes back, until it is reachable through PgBouncer
    when the test runs through it."""

    def __init__(self, cluster: Cluster) -> None:
        aliases = settings.PG_NODE_PORTS
        super().__init__(cluster, {alias: node_of(cluster, alias) for alias in aliases})

    def start(self, alias: str, keep_connections: bool = False) -> Node:
        node = super().start(alias, keep_connections=True)
        wait_reachable(node)
        if not keep_connections:
            self.forget_connections(alias)
        return node

    def rebuild(self, alias: str) -> Node:
        node = super().rebuild(alias)
        wait_reachable(node)
        return node


def reset_connections(alias: str) -> None:
    """Close this thread's connection to ``alias`` and its pool (Django 5.1+),
    which may hold connections to a server that has since restarted."""
    connection = connections[alias]
    connection.close()
    close_pool = getattr(connection, "close_pool", None)
    if close_pool is not None:
        close_pool()


@pytest.fixture
def faults(pg_cluster: Cluster) -> Iterator[Faults]:
    """Server faults, all undone when the test ends."""
    faults = Faults(pg_cluster)
    try:
        yield faults
    finally:
        faults.restore()
