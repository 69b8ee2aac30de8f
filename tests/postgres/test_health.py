"""Replica health against a real primary and two streaming replicas.

Every claim about reachability, lag, promotion and positions is checked on
real servers: a replica is stopped (``pg_ctl stop -m immediate``), frozen
(SIGSTOP), paused (``pg_wal_replay_pause()``) or promoted (``pg_promote()``),
and each read reports the port of the server that answered it
(``inet_server_port()``).  The ``faults`` fixture puts every server back.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime

import django
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client, override_settings

import multidb
from multidb import health, rotation
from multidb.positions import PostgreSQL, ReplicaState, parse_lsn
from tests.app.models import Item
from tests.conftest import prober_threads
from tests.postgres.conftest import PGBOUNCER_UNREACHABLE

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Each test runs twice: directly, and through PgBouncer (transaction mode).
    pytest.mark.usefixtures("route_via"),
]

REPLICAS = ("replica1", "replica2")
LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


def probe() -> dict[str, health.DatabaseStatus]:
    """One probe round, applied to the rotation, by alias."""
    return {status.alias: status for status in health.registry.probe()}


def read_port() -> int:
    """One ORM read, sent wherever the router sends reads; the port of the
    server that answered it."""
    (row,) = Item.objects.raw("SELECT inet_server_port() AS id")
    return int(row.id)


def ports(*aliases: str) -> set[int]:
    """The ports the servers behind ``aliases`` listen on (not PgBouncer's)."""
    return {settings.PG_NODE_PORTS[alias] for alias in aliases}


def fail_a_request_on(alias: str) -> list[int]:
    """GET a view that reads, until one request reads from ``alias`` (stopped)
    and fails; the status codes.  The rotation alternates between the two
    replicas, so two requests are enough."""
    client = Client(raise_request_exception=False)
    codes: list[int] = []
    for _ in range(2):
        codes.append(client.get("/find/", {"name": "anything"}).status_code)
        if codes[-1] == 500:
            break
    return codes


def test_a_probe_finds_the_primary_ok_with_its_position_and_idle_replicas_zero_behind(
    pg_cluster, wait_until
):
    before = parse_lsn(pg_cluster.current_lsn())

    # Background WAL (a standby snapshot every 15 s) can land between the two
    # queries of one round; an idle cluster settles at zero.
    def caught_up():
        statuses = probe()
        return statuses if all(statuses[a].lag_bytes == 0 for a in REPLICAS) else None

    statuses = wait_until(caught_up)

    primary = statuses["default"]
    assert (primary.role, primary.state, primary.reachable, primary.is_replica) == (
        "primary", "ok", True, False,
    )  # fmt: skip
    assert (primary.lag_bytes, primary.lag_seconds, primary.reason) == (None, None, "")
    assert (
        before
        <= parse_lsn(primary.replay_position)
        <= parse_lsn(pg_cluster.current_lsn())
    )
    for alias in REPLICAS:
        replica = statuses[alias]
        assert (
            replica.role, replica.state, replica.reachable, replica.is_replica,
            replica.lag_bytes, replica.lag_seconds, replica.reason,
        ) == ("replica", "ok", True, True, 0, 0.0, "")  # fmt: skip
        assert parse_lsn(replica.replay_position) >= parse_lsn(primary.replay_position)


def test_replica_status_returns_a_typed_record_per_replica_with_every_field():
    probe()

    records = multidb.replica_status()

    assert [r.alias for r in records] == list(REPLICAS)
    for record in records:
        assert isinstance(record, multidb.DatabaseStatus)
        assert (record.role, record.state, record.usable) == ("replica", "ok", True)
        assert record.reachable is True and record.is_replica is True
        assert isinstance(record.lag_bytes, int) and record.lag_bytes >= 0
        assert isinstance(record.lag_seconds, float) and record.lag_seconds >= 0
        assert LSN.match(record.replay_position)
        assert isinstance(record.last_checked, datetime)
        assert record.last_checked.utcoffset() is not None
        assert record.reason == ""
        fields = {f.name for f in dataclasses.fields(record)}
        assert set(record.as_dict()) == fields | {"usable"}


def test_after_a_probe_reads_are_spread_over_both_replicas():
    probe()

    seen = [read_port() for _ in range(20)]

    assert rotation.rotation().usable == set(REPLICAS)
    assert set(seen) == ports(*REPLICAS)


def test_a_stopped_replica_takes_no_read_after_a_probe_and_returns_after_restart(
    pg_cluster, faults, replica_signals
):
    probe()
    stopped = faults.stop("replica1")

    down = probe()["replica1"]
    seen = [read_port() for _ in range(500)]
    events_while_down = list(replica_signals)
    faults.start("replica1")
    back = probe()["replica1"]
    seen_after = {read_port() for _ in range(20)}

    assert (down.state, down.reachable, down.usable) == ("down", False, False)
    assert down.reason.startswith("OperationalError")
    assert len(seen) == 500
    assert stopped.port not in seen
    assert set(seen) == ports("replica2")
    assert [(e.signal, e.alias, e.reason) for e in events_while_down] == [
        ("replica_down", "replica1", down.reason)
    ]
    assert (back.state, back.reachable) == ("ok", True)
    assert seen_after == ports(*REPLICAS)
    assert [(e.signal, e.alias, e.reason) for e in replica_signals] == [
        ("replica_down", "replica1", down.reason),
        ("replica_up", "replica1", "was down"),
    ]


def test_a_replica_restarted_between_two_probes_is_not_reported_down(
    faults, replica_signals
):
    probe()  # the prober keeps a connection to replica1 ...
    faults.stop("replica1")
    faults.start("replica1")  # ... which the restart has killed

    status = probe()["replica1"]

    assert (status.state, status.reachable) == ("ok", True)
    assert replica_signals == []


def test_with_every_replica_stopped_reads_use_the_primary_and_one_warning_is_logged(
    pg_cluster, faults, caplog
):
    caplog.set_level(logging.INFO, logger="multidb")
    probe()
    for alias in REPLICAS:
        faults.stop(alias)

    probe()
    seen = {read_port() for _ in range(50)}
    probe()
    seen |= {read_port() for _ in range(50)}
    logged_while_down = [r.getMessage() for r in caplog.records if r.name == "multidb"]
    for alias in REPLICAS:
        faults.start(alias)
    probe()

    assert seen == {pg_cluster.primary.port}
    assert logged_while_down.count("no replica is usable; reads go to 'default'") == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "multidb"]
    assert messages.count("replicas are usable again") == 1
    assert {read_port() for _ in range(20)} == ports(*REPLICAS)


@override_settings(MULTIDB_REPLICA_MAX_LAG=0.5, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
def test_a_replica_paused_longer_than_max_lag_leaves_the_rotation_until_it_replays(
    pg_cluster, faults, replica_signals, wait_until
):
    probe()
    faults.pause("replica1")

    def lagging():
        Item.objects.create(name="keeps the primary writing")
        pg_cluster.wait_caught_up(skip_paused=True)  # replica2 keeps up
        status = probe()["replica1"]
        time.sleep(0.05)
        return status if status.state == "lagging" else None

    lagged = wait_until(lagging)
    seen = {read_port() for _ in range(20)}
    faults.resume("replica1")
    back = wait_until(lambda: probe()["replica1"].state == "ok")

    assert lagged.lag_seconds > 0.5 and lagged.lag_bytes > 0
    assert lagged.reason == f"{lagged.lag_seconds:g}s behind the primary (limit 0.5s)"
    assert not lagged.usable
    assert seen == ports("replica2")
    assert back
    assert rotation.rotation().usable == set(REPLICAS)
    assert [(e.signal, e.alias) for e in replica_signals] == [
        ("replica_lagging", "replica1"),
        ("replica_up", "replica1"),
    ]
    assert replica_signals[0].reason == lagged.reason
    assert replica_signals[1].reason == "was lagging"


@override_settings(MULTIDB_REPLICA_MAX_LAG=0.5)
def test_a_replica_a_moment_behind_a_busy_primary_stays_in_rotation_between_probes(
    faults,
):
    """The primary writes on between two probes a second apart, and the
    replica applies each commit 0.2 s late: at the second probe it has not
    replayed the newest sampled position.  It is 0.2 s behind, under the
    0.5 s limit, not the second between the probes."""
    faults.delay("replica1", 0.2)
    stop = threading.Event()

    def write() -> None:
        try:
            while not stop.is_set():
                Item.objects.create(name="keeps the primary busy")
                time.sleep(0.01)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        probe()
        time.sleep(1.0)
        status = probe()["replica1"]
    finally:
        stop.set()
        writer.join()

    assert status.lag_bytes > 0
    assert 0.2 <= status.lag_seconds < 0.5
    assert status.state == "ok"
    assert "replica1" in rotation.rotation().usable


@override_settings(MULTIDB_REPLICA_MAX_LAG=None, MULTIDB_REPLICA_MAX_LAG_BYTES=4096)
def test_a_replica_more_bytes_behind_than_max_lag_bytes_leaves_the_rotation(
    pg_cluster, faults, replica_signals, wait_until
):
    probe()
    faults.pause("replica1")
    Item.objects.bulk_create(Item(name=f"row {i}") for i in range(500))
    pg_cluster.wait_caught_up(skip_paused=True)  # replica2 has it all

    lagged = probe()["replica1"]
    seen = {read_port() for _ in range(20)}
    faults.resume("replica1")
    wait_until(lambda: probe()["replica1"].state == "ok")

    assert lagged.state == "lagging" and lagged.lag_bytes > 4096
    assert lagged.reason == f"{lagged.lag_bytes} bytes behind the primary (limit 4096)"
    assert seen == ports("replica2")
    assert rotation.rotation().usable == set(REPLICAS)
    assert [(e.signal, e.alias) for e in replica_signals] == [
        ("replica_lagging", "replica1"),
        ("replica_up", "replica1"),
    ]


def test_a_promoted_replica_leaves_the_rotation_and_receives_no_write(
    pg_cluster, faults, replica_signals
):
    probe()
    promoted = faults.promote("replica1")

    status = probe()["replica1"]
    seen = {read_port() for _ in range(50)}
    item = Item.objects.create(name="written after the promotion")
    table, dbname = Item._meta.db_table, connections["default"].settings_dict["NAME"]
    sql = f"SELECT count(*) FROM {table} WHERE id = %s"
    on_primary = pg_cluster.primary.scalar(sql, [item.pk], dbname=dbname)
    on_promoted = promoted.scalar(sql, [item.pk], dbname=dbname)
    faults.rebuild("replica1")
    back = probe()["replica1"]

    assert (status.state, status.reachable, status.is_replica, status.usable) == (
        "promoted", True, False, False,
    )  # fmt: skip
    assert status.reason == "it is no longer in recovery: it was promoted"
    assert seen == ports("replica2")
    assert (on_primary, on_promoted) == (1, 0)
    assert (back.state, back.is_replica) == ("ok", True)
    assert [(e.signal, e.alias, e.reason) for e in replica_signals] == [
        ("replica_down", "replica1", status.reason),
        ("replica_up", "replica1", "was promoted"),
    ]


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60)
def test_a_connection_failure_in_a_request_takes_the_replica_out_before_any_probe(
    faults, replica_signals, wait_until, route_via
):
    # The first routing starts the prober, which probes once and then sleeps
    # for a minute: what changes after that comes from the failing request.
    rotation.rotation()
    wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))
    faults.stop("replica1")

    codes = fail_a_request_on("replica1")
    status = {s.alias: s for s in health.registry.statuses()}["replica1"]
    usable = rotation.rotation().usable

    assert codes[-1] == 500
    assert (status.state, status.reachable) == ("down", False)
    assert status.reason.startswith(("OperationalError", "InterfaceError"))
    assert usable == {"replica2"}
    # The request's own thread reported it; the prober, woken by the report,
    # only confirms it (and may already have rewritten the reason).
    (first, *_) = replica_signals
    assert (first.signal, first.alias, first.thread) == (
        "replica_down", "replica1", threading.current_thread().name,
    )  # fmt: skip
    if route_via.pgbouncer:
        # PgBouncer accepts the connection and fails the query (SQLSTATE 08P01).
        assert any(text in first.reason for text in PGBOUNCER_UNREACHABLE)
    else:
        assert "Connection refused" in first.reason
    assert [e.signal for e in replica_signals] == ["replica_down"]


def test_the_prober_starts_on_first_routing_and_takes_a_stopped_replica_out(
    faults, replica_signals, wait_until
):
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.2):
        before_routing = prober_threads()
        read_port()
        after_routing = prober_threads()
        wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))
        faults.stop("replica1")
        wait_until(lambda: "replica1" not in rotation.rotation().usable)
        faults.start("replica1")
        wait_until(lambda: "replica1" in rotation.rotation().usable)

    assert before_routing == []
    assert len(after_routing) == 1
    assert [(e.signal, e.alias, e.thread) for e in replica_signals] == [
        ("replica_down", "replica1", "multidb-health"),
        ("replica_up", "replica1", "multidb-health"),
    ]


def test_with_health_checks_off_no_prober_starts_and_a_failing_request_changes_nothing(
    faults, replica_signals
):
    assert settings.MULTIDB_HEALTH_CHECK_INTERVAL is None
    faults.stop("replica1")

    rotation.rotation()  # built on first routing, which would start a prober
    health.ensure_started()
    codes = fail_a_request_on("replica1")
    usable = rotation.rotation().usable

    assert codes[-1] == 500
    assert prober_threads() == []
    assert usable == set(REPLICAS)
    assert replica_signals == []
    assert {s.state for s in health.registry.statuses()} == {"unknown"}


@override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=0.5)
def test_a_frozen_replica_is_marked_down_within_the_timeout_and_back_after_thaw(
    pg_cluster, faults, replica_signals, wait_until
):
    probe()  # the prober's connection to replica1 is open: a query on it hangs
    faults.freeze("replica1")

    started = time.monotonic()
    frozen = probe()["replica1"]
    elapsed = time.monotonic() - started
    still_frozen = probe()["replica1"]
    seen = {read_port() for _ in range(20)}
    faults.thaw("replica1")
    wait_until(lambda: probe()["replica1"].state == "ok")

    # A probe that waited for the frozen server would not return before thaw.
    assert elapsed < 0.5 + 2.0
    assert (frozen.state, frozen.reason) == (
        "down", "TimeoutError: no answer within 0.5s",
    )  # fmt: skip
    assert (still_frozen.state, still_frozen.reason) == (
        "down", "TimeoutError: the previous probe is still waiting",
    )  # fmt: skip
    assert seen == ports("replica2")
    assert [(e.signal, e.alias) for e in replica_signals] == [
        ("replica_down", "replica1"),
        ("replica_up", "replica1"),
    ]


@pytest.mark.skipif(django.VERSION < (5, 1), reason="Django < 5.1 has no pool")
def test_the_prober_bypasses_djangos_pool_and_probes_a_pooled_replica():
    alias = settings.POOLED_REPLICA
    pool = connections[alias].pool
    with connections[alias].cursor() as cursor:  # opens the pool
        cursor.execute("SELECT 1")
    connections[alias].close()
    requests_before = pool.get_stats().get("requests_num", 0)

    statuses = [probe()[alias] for _ in range(3)]
    probe_connection = health.registry._connections[alias].wrapper

    assert [s.state for s in statuses] == ["ok"] * 3
    assert pool.get_stats().get("requests_num", 0) == requests_before
    assert probe_connection.pool is None
    assert "pool" not in probe_connection.settings_dict["OPTIONS"]
    assert getattr(probe_connection.connection, "_pool", None) is None
    assert connections.settings[alias]["OPTIONS"]["pool"] == {
        "min_size": 1, "max_size": 4,
    }  # fmt: skip


@override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=2.5)
def test_probe_connections_connect_timeout_is_the_probe_timeout_rounded_up():
    probe()

    options = [
        health.registry._connections[alias].wrapper.settings_dict["OPTIONS"]
        for alias in ("default", *REPLICAS)
    ]

    assert [o["connect_timeout"] for o in options] == [3, 3, 3]
    assert connections.settings["replica1"]["OPTIONS"]["connect_timeout"] == 2


def test_the_postgresql_adapter_reads_real_positions_and_recovery_state(pg_cluster):
    adapter = PostgreSQL()
    before = parse_lsn(pg_cluster.current_lsn())

    with connections["default"].cursor() as cursor:
        position = adapter.primary_position(cursor)
        primary_state = adapter.replica_state(cursor)
    pg_cluster.wait_caught_up()
    with connections["replica1"].cursor() as cursor:
        replica_state = adapter.replica_state(cursor)

    assert before <= position <= parse_lsn(pg_cluster.current_lsn())
    assert primary_state == ReplicaState(is_replica=False, replay_position=None)
    assert replica_state.is_replica is True
    assert replica_state.replay_position >= position


def test_forget_closes_the_probe_connections():
    probe()
    kept = [c.wrapper for c in health.registry._connections.values()]

    health.registry.forget()

    assert len(kept) == 3
    assert [wrapper.connection for wrapper in kept] == [None, None, None]
    assert health.registry._connections == {}


@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60)
def test_a_statement_timeout_on_the_primary_does_not_take_the_replica_out(
    replica_signals, wait_until
):
    rotation.rotation()
    wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))
    client = Client(raise_request_exception=False)

    response = client.get("/read-then-time-out/")

    assert response.status_code == 500
    assert rotation.rotation().usable == {"replica1", "replica2"}
    assert replica_signals == []


def test_a_forked_worker_probes_with_a_thread_and_connections_of_its_own(
    pg_cluster, wait_until
):
    """gunicorn --preload forks after the parent has routed (and so started a
    prober): the child must start its own prober on its first read, and never
    use the parent's probe connections."""
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.1):
        rotation.rotation()
        wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))
        parent_registry = health.registry

        def child_probes_on_its_own() -> bool:
            fresh = health.registry is not parent_registry and not prober_threads()
            # The parent's sockets are the parent's: forget, never close.
            for connection in connections.all(initialized_only=True):
                connection.connection = None
            read_port()  # first routing in the child starts its prober
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                s.last_checked for s in health.registry.statuses()
            ):
                time.sleep(0.05)
            probed = all(s.state == "ok" for s in health.registry.statuses())
            return fresh and bool(prober_threads()) and probed

        assert in_forked_child(child_probes_on_its_own)


def in_forked_child(check: Callable[[], bool]) -> bool:
    """Whether ``check()``, run in a child forked now, returned True (the
    child reports through a pipe, and exits without running anything else)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read(1)
    _, status = os.waitpid(pid, 0)
    return reported == b"\x00" and os.waitstatus_to_exitcode(status) == 0


def select_1(cursor) -> tuple[int]:
    cursor.execute("SELECT 1")
    return cursor.fetchone()


def test_a_forked_child_closes_its_copies_of_the_probe_sockets_and_the_parent_probes_on(
    pg_cluster,
):
    """gunicorn --preload: each worker closes the probe sockets it inherited
    (no leaked descriptors) without a word to the servers, whose sessions
    the master goes on probing over."""
    probe()
    probes = dict(health.registry._connections)
    drivers = {alias: kept.wrapper.connection for alias, kept in probes.items()}
    fds = [driver.fileno() for driver in drivers.values()]

    def inherited_sockets_closed() -> bool:
        gc.collect()  # nothing inherited may end the parent's sessions

        def closed(fd: int) -> bool:
            try:
                os.fstat(fd)
            except OSError as error:
                return error.errno == errno.EBADF
            return False

        return all(closed(fd) for fd in fds)

    child_saw_them_closed = in_forked_child(inherited_sockets_closed)
    # Over the very connections the child had: a session the child had ended
    # would fail here (the server reads its messages in order).
    answers = {alias: kept.run(select_1) for alias, kept in probes.items()}
    statuses = probe()

    assert sorted(probes) == ["default", *REPLICAS]
    assert child_saw_them_closed
    assert answers == dict.fromkeys(probes, (1,))
    assert {alias: kept.wrapper.connection for alias, kept in probes.items()} == drivers
    assert health.registry._connections == probes
    assert {s.state for s in statuses.values()} == {"ok"}
