"""The routers against a real primary and two streaming replicas.

Each server reports its own port with ``inet_server_port()``, so these tests
see where a query really ran, not only which alias the router named.
"""

from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from multidb import use_primary_db
from multidb.middleware import pinning_cookie
from multidb.testing.cluster import Cluster
from tests.app.models import Item
from tests.postgres.views import server_port

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Each test runs twice: directly, and through PgBouncer (transaction mode).
    pytest.mark.usefixtures("route_via"),
]

REPLICAS = ("replica1", "replica2")


@pytest.fixture
def replay_paused(pg_cluster: Cluster) -> Iterator[None]:
    """Both replicas stop applying WAL: new rows stay invisible on them."""
    try:
        for node in pg_cluster.replicas:
            pg_cluster.pause_replay(node)
        yield
    finally:
        for node in pg_cluster.replicas:
            pg_cluster.resume_replay(node)


def test_reads_outside_a_request_are_spread_over_both_replicas(pg_cluster):
    ports = [server_port(Item.objects.all().db) for _ in range(20)]

    assert pg_cluster.primary.port not in ports
    assert set(ports) == {node.port for node in pg_cluster.replicas}


def test_a_write_lands_on_the_primary(pg_cluster):
    item = Item.objects.create(name="written")

    rows = pg_cluster.primary.query(
        f"SELECT name FROM {Item._meta.db_table} WHERE id = %s",
        [item.pk],
        dbname=connections["default"].settings_dict["NAME"],
    )
    assert rows == [("written",)]


def test_a_row_written_on_the_primary_reaches_both_replicas(pg_cluster):
    Item.objects.create(name="replicated")

    pg_cluster.wait_caught_up()

    seen = [Item.objects.using(a).filter(name="replicated").exists() for a in REPLICAS]
    assert seen == [True, True]


def test_with_replay_paused_unpinned_reads_miss_a_new_row_but_use_primary_db_sees_it(
    pg_cluster, replay_paused, decisions
):
    Item.objects.create(name="fresh")
    decisions.clear()

    unpinned = [Item.objects.filter(name="fresh").exists() for _ in range(4)]
    unpinned_dbs = sorted({alias for kind, alias, _ in decisions if kind == "read"})
    with use_primary_db:
        pinned = Item.objects.filter(name="fresh").exists()

    assert (unpinned, unpinned_dbs, pinned) == ([False] * 4, list(REPLICAS), True)


@pytest.mark.parametrize("mode", ["auto", "time"])
@pytest.mark.parametrize("method", ["post", "get"])
def test_after_a_write_request_the_pin_cookie_sends_reads_to_the_primary(
    pg_cluster, replay_paused, method, mode, settings
):
    """With replay paused no replica has the write: a position token (auto)
    and a time pin (time, as in 0.11) both send the next read to the primary."""
    settings.MULTIDB_PINNING_MODE = mode
    client = Client()
    primary = pg_cluster.primary.port
    replica_ports = {node.port for node in pg_cluster.replicas}

    wrote = getattr(client, method)("/create/", {"name": "posted"}).json()
    pinned = client.get("/find/", {"name": "posted"}).json()
    unpinned = Client().get("/find/", {"name": "posted"}).json()

    assert pinning_cookie() in client.cookies
    assert (wrote["db"], wrote["port"]) == ("default", primary)
    assert pinned == {
        "found": True,
        "db": "default",
        "port": primary,
        # Only a time pin pins the thread; a token waits for a position.
        "pinned": mode == "time",
    }
    assert unpinned["db"] in REPLICAS
    assert unpinned["port"] in replica_ports
    assert (unpinned["found"], unpinned["pinned"]) == (False, False)


@pytest.mark.skipif(django.VERSION < (5, 1), reason="Django < 5.1 has no pool")
def test_a_replica_behind_djangos_connection_pool_serves_reads(pg_cluster):
    pooled = connections[settings.POOLED_REPLICA]
    node = pg_cluster.replicas[REPLICAS.index(settings.POOLED_REPLICA)]

    port = server_port(settings.POOLED_REPLICA)
    found = Item.objects.using(settings.POOLED_REPLICA).exists()
    stats = pooled.pool.get_stats()

    assert connections["replica1"].pool is None
    assert (port, found) == (node.port, False)
    assert stats["requests_num"] >= 1
    assert pooled.connection._pool is pooled.pool
