"""The PgBouncer harness (``multidb.testing.cluster.PgBouncer``) on the session
cluster.

The session's own PgBouncer (the ``pg_bouncer`` fixture) serves the tests
that run through it; these start PgBouncers of their own.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from multidb.testing.cluster import Cluster, PgBouncer


def connect(bouncer: PgBouncer, node, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(bouncer.dsn(node, dbname), autocommit=True)


def test_each_listener_leads_to_its_own_server_under_any_database_name(pg_cluster):
    with PgBouncer(pg_cluster) as bouncer:
        ports = {bouncer.port_for(node) for node in pg_cluster.nodes}
        reached = {}
        for node in pg_cluster.nodes:
            with connect(bouncer, node, "template1") as conn:
                reached[node.port] = conn.execute(
                    "SELECT inet_server_port(), current_database()"
                ).fetchone()

    assert len(ports) == len(pg_cluster.nodes)
    assert ports.isdisjoint(node.port for node in pg_cluster.nodes)
    assert reached == {node.port: (node.port, "template1") for node in pg_cluster.nodes}


def test_it_pools_transactions_without_a_reset_query(pg_cluster):
    with PgBouncer(pg_cluster) as bouncer:
        config = {
            row[0]: row[1] for row in bouncer.admin(pg_cluster.primary, "SHOW CONFIG")
        }

    assert (config["pool_mode"], config["server_reset_query"]) == ("transaction", "")


def test_session_mode_resets_server_connections_with_discard_all(pg_cluster):
    with PgBouncer(pg_cluster, pool_mode="session") as bouncer:
        config = {
            row[0]: row[1] for row in bouncer.admin(pg_cluster.primary, "SHOW CONFIG")
        }
        entry = bouncer.django_settings(pg_cluster.primary)

    assert (config["pool_mode"], config["server_reset_query"]) == (
        "session", "DISCARD ALL",
    )  # fmt: skip
    assert "DISABLE_SERVER_SIDE_CURSORS" not in entry


def test_django_settings_are_the_nodes_with_pgbouncers_port(pg_cluster):
    bouncer = PgBouncer(pg_cluster)  # settings need no running PgBouncer
    replica = pg_cluster.replicas[0]

    entry = bouncer.django_settings(replica, "app", test_mirror="default")

    assert entry == {
        **replica.django_settings(test_mirror="default", name="app"),
        "PORT": str(bouncer.port_for(replica)),
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }


def test_release_closes_the_server_connections_so_a_database_can_be_dropped(
    pg_cluster,
):
    primary = pg_cluster.primary
    primary.query("CREATE DATABASE pgbouncer_release")
    try:
        with PgBouncer(pg_cluster) as bouncer:
            client = connect(bouncer, primary, "pgbouncer_release")
            client.execute("SELECT 1")
            servers_before = bouncer.admin(primary, "SHOW SERVERS")

            bouncer.release()

            servers_after = bouncer.admin(primary, "SHOW SERVERS")
            primary.query("DROP DATABASE pgbouncer_release")  # no one is in it
            client.close()
    finally:
        primary.query("DROP DATABASE IF EXISTS pgbouncer_release")

    assert [row[2] for row in servers_before] == ["pgbouncer_release"]
    assert servers_after == []


def test_stop_is_idempotent_and_removes_the_files(pg_cluster):
    bouncer = PgBouncer(pg_cluster).start()
    directory = bouncer.dir
    port = bouncer.port_for(pg_cluster.primary)

    bouncer.stop()
    bouncer.stop()

    assert not directory.exists()
    assert bouncer.started is False
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=2")


def test_refusals(pg_cluster, monkeypatch):
    other = Cluster(replicas=1)

    with pytest.raises(ValueError, match="pool_mode"):
        PgBouncer(pg_cluster, pool_mode="sessions")
    with pytest.raises(ValueError, match="not a server of this"):
        PgBouncer(pg_cluster).port_for(other.primary)
    with pytest.raises(RuntimeError, match="start the cluster"):
        PgBouncer(other).start()
    monkeypatch.setenv("PGBOUNCER", "/nonexistent/pgbouncer")
    with pytest.raises(RuntimeError, match="PGBOUNCER=/nonexistent/pgbouncer"):
        PgBouncer(pg_cluster).start()


def test_a_stopped_server_fails_the_waiting_query_then_every_client_at_once(
    pg_cluster,
):
    """What ``PgBouncer``'s docstring says, and the routed health tests rely on."""
    node = pg_cluster.replicas[-1]
    with PgBouncer(pg_cluster) as bouncer:
        held = connect(bouncer, node)
        held.execute("SELECT 1")
        pg_cluster.stop_node(node)
        try:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as waited:
                held.execute("SELECT 1")
            elapsed = time.monotonic() - started
            with pytest.raises(psycopg.OperationalError) as refused:
                connect(bouncer, node).execute("SELECT 1")
        finally:
            held.close()
            pg_cluster.start_node(node)
        bouncer.wait_reachable(node)
        with connect(bouncer, node) as conn:
            back = conn.execute("SELECT inet_server_port()").fetchone()

    assert (waited.value.sqlstate, str(waited.value)) == ("08P01", "query_wait_timeout")
    assert PgBouncer.QUERY_WAIT_TIMEOUT <= elapsed < PgBouncer.QUERY_WAIT_TIMEOUT + 2
    assert refused.value.sqlstate == "08P01"
    assert "server login has been failing" in str(refused.value)
    assert back == (node.port,)


def test_the_options_startup_parameter_is_refused_not_silently_dropped(pg_cluster):
    with (
        PgBouncer(pg_cluster) as bouncer,
        pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"),
    ):
        psycopg.connect(
            bouncer.dsn(pg_cluster.primary), options="-c statement_timeout=5s"
        )
