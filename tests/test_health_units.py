"""The health registry's own logic, on SQLite.

SQLite has no replication, so it gets reachability checks only: here the
probes really run (on connections of the prober's own), but every claim
about lag, promotion, stopped or frozen servers and positions is made
against real PostgreSQL servers in tests/postgres/test_health.py.  What is
tested here is what needs no server: the status record, lag arithmetic on a
history filled by the test, the signals and logs that ``report_failure``
drives, the settings that turn things off, the prober thread, the fork hook,
and the ``got_request_exception`` receiver with real errors in real requests.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import threading
from datetime import datetime, timezone

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connections
from django.test import AsyncClient, Client, override_settings
from django.urls import path

import multidb
from multidb import PinningReplicaRouter, health, rotation, use_primary_db
from multidb.health import HISTORY, DatabaseStatus
from multidb.positions import ReplicaState
from tests.app.models import Item
from tests.conftest import (
    at_once,
    close_for_real,
    forget,
    prober_threads,
    reset_state,
)

db = pytest.mark.django_db(transaction=True, databases="__all__")

REPLICAS = ("replica1", "replica2")
#: Health checks on, but the prober (if it starts) sleeps between rounds for
#: longer than any test here lasts.
CHECKS_ON = {"MULTIDB_HEALTH_CHECK_INTERVAL": 60}
CHECKED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def multidb_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "multidb"]


def by_alias(statuses) -> dict[str, DatabaseStatus]:
    return {status.alias: status for status in statuses}


# --- the status record -------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "usable"),
    [("ok", True), ("unknown", True), ("down", False), ("lagging", False),
     ("promoted", False)],
)  # fmt: skip
def test_only_ok_and_not_yet_probed_databases_are_usable(state, usable):
    assert DatabaseStatus("replica1", "replica", state).usable is usable


def test_as_dict_has_every_field_whether_usable_and_an_iso_timestamp():
    status = DatabaseStatus(
        "replica1", "replica", "lagging", reachable=True, is_replica=True,
        lag_bytes=4096, lag_seconds=1.5, replay_position="0/3000148",
        last_checked=CHECKED, reason="1.5s behind the primary (limit 1s)",
    )  # fmt: skip

    assert status.as_dict() == {
        "alias": "replica1", "role": "replica", "state": "lagging",
        "reachable": True, "is_replica": True, "lag_bytes": 4096,
        "lag_seconds": 1.5, "replay_position": "0/3000148",
        "last_checked": "2024-05-01T12:00:00+00:00",
        "reason": "1.5s behind the primary (limit 1s)", "usable": False,
    }  # fmt: skip


def test_as_dict_of_a_database_never_probed_has_no_timestamp():
    data = DatabaseStatus("default", "primary", "unknown").as_dict()

    assert data["last_checked"] is None
    assert (data["reachable"], data["reason"], data["usable"]) == (None, "", True)


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (OperationalError("connection refused\nIs the server running?"),
         "OperationalError: connection refused"),
        (TimeoutError("no answer within 1s"), "TimeoutError: no answer within 1s"),
        (TimeoutError(), "TimeoutError"),
        (KeyError("ghost"), "KeyError: 'ghost'"),
    ],
)  # fmt: skip
def test_a_failure_is_described_by_its_type_and_first_line(error, described):
    assert health.describe(error) == described


# --- before and after a probe ------------------------------------------------


def test_before_any_probe_every_database_is_unknown_primary_first():
    statuses = health.registry.statuses()

    assert [(s.alias, s.role, s.state) for s in statuses] == [
        ("default", "primary", "unknown"),
        ("replica1", "replica", "unknown"),
        ("replica2", "replica", "unknown"),
    ]
    assert all(s.usable and s.last_checked is None for s in statuses)
    assert multidb.replica_status() == statuses[1:]


@db
def test_a_probe_of_sqlite_finds_every_database_reachable_without_positions():
    statuses = health.probe_now()

    primary, *replica_statuses = statuses
    assert (primary.alias, primary.state, primary.reachable) == ("default", "ok", True)
    assert (primary.is_replica, primary.replay_position) == (False, None)
    for status in replica_statuses:
        assert (status.state, status.reachable, status.is_replica) == ("ok", True, True)
        assert (status.lag_bytes, status.lag_seconds, status.replay_position) == (
            None, None, None,
        )  # fmt: skip
        assert status.last_checked is not None
    assert health.registry.statuses() == statuses
    assert multidb.replica_status() == replica_statuses


@db
def test_the_prober_keeps_one_connection_of_its_own_per_database():
    health.registry.probe()
    first = dict(health.registry._connections)
    health.registry.probe()

    assert set(first) == {"default", *REPLICAS}
    assert health.registry._connections == first
    for alias, probe_connection in first.items():
        assert probe_connection.wrapper is not connections[alias]
        assert probe_connection.wrapper.alias == alias


@db
def test_forget_drops_every_status_and_probe_connection():
    health.registry.probe()

    forget(health.registry)

    assert health.registry._connections == {}
    assert {s.state for s in health.registry.statuses()} == {"unknown"}


@db
@pytest.mark.asyncio
async def test_forget_in_async_code_logs_a_connection_it_may_not_close(caplog):
    caplog.set_level(logging.DEBUG, logger="multidb")
    await sync_to_async(health.registry.probe)()
    kept = [probe.wrapper for probe in health.registry._connections.values()]

    # Django refuses to close a connection from a thread running an event
    # loop (SynchronousOnlyOperation): forget() goes on regardless.
    health.registry.forget()
    await sync_to_async(close_for_real)(kept)

    assert health.registry._connections == {}
    assert sorted(multidb_messages(caplog)) == [
        f"closing the probe connection to {alias} failed"
        for alias in ("default", *REPLICAS)
    ]


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_a_replica_missing_from_databases_is_down_and_the_others_are_not(
    replica_signals,
):
    statuses = by_alias(health.registry.probe())
    usable = rotation.rotation().usable

    assert (statuses["ghost"].state, statuses["ghost"].reason) == (
        "down", "KeyError: 'ghost'",
    )  # fmt: skip
    assert statuses["replica1"].state == "ok"
    assert usable == {"replica1"}
    assert [(e.signal, e.alias) for e in replica_signals] == [("replica_down", "ghost")]


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_a_probe_that_does_not_apply_reports_but_leaves_the_rotation():
    statuses = by_alias(health.registry.probe(apply=False))

    assert statuses["ghost"].state == "down"
    assert rotation.rotation().usable == {"replica1", "ghost"}


@db
def test_a_first_probe_that_finds_every_database_fine_signals_and_logs_nothing(
    replica_signals, caplog
):
    caplog.set_level(logging.DEBUG, logger="multidb")

    health.registry.probe()
    health.registry.probe()

    assert replica_signals == []
    assert multidb_messages(caplog) == []


# --- lag arithmetic on a history the test fills ------------------------------


@pytest.fixture
def history():
    """A registry that saw the primary at 1000, 2000 and 3000 at t = 10, 20, 30."""
    registry = health.Registry()
    registry._history.extend([(10.0, 1000), (20.0, 2000), (30.0, 3000)])
    return registry


@pytest.mark.parametrize("replay", [3000, 3500])
def test_a_replica_at_or_past_the_newest_primary_position_has_no_lag(history, replay):
    assert history._lag(replay, now=45.0) == (0, 0.0)


@pytest.mark.parametrize(
    ("replay", "lag"),
    [(2999, (1, 25.0)), (2000, (1000, 25.0)), (1999, (1001, 35.0)),
     (1000, (2000, 35.0))],
)  # fmt: skip
def test_lag_is_bytes_behind_the_newest_and_seconds_since_the_primary_was_there(
    history, replay, lag
):
    assert history._lag(replay, now=45.0) == lag


def test_a_replica_behind_all_the_history_is_lagging_since_the_oldest_sample(history):
    assert history._lag(999, now=45.0) == (2001, 35.0)


def test_a_replica_behind_all_the_history_lags_by_the_age_of_its_last_replayed_commit(
    history,
):
    """A fresh process (manage.py multidb_status) has one sample, which the
    replica has not replayed: its age is a lower bound of ~0, the age of the
    last transaction the replica replayed an upper bound."""
    assert history._lag(999, now=45.0, replay_age=50.0) == (2001, 50.0)


def test_a_replay_age_under_the_historys_lower_bound_gives_way_to_it(history):
    # Clocks of the primary and the replica apart, or an older measurement.
    assert history._lag(999, now=45.0, replay_age=3.0) == (2001, 35.0)


@pytest.mark.parametrize(("replay", "lag"), [(3000, (0, 0.0)), (2500, (500, 25.0))])
def test_an_old_replay_age_does_not_raise_the_lag_of_a_replica_within_the_history(
    history, replay, lag
):
    """An idle primary makes the age of the last replayed commit grow: a replica
    at the newest position is 0 behind, and a sampled position it has
    replayed gives the figure to a probe interval."""
    assert history._lag(replay, now=45.0, replay_age=500.0) == lag


@pytest.mark.parametrize(("replay_age", "seconds"), [(17.0, 17.0), (3.0, 15.0)])
def test_a_recent_replay_age_bounds_the_lag_of_a_replica_within_the_history(
    history, replay_age, seconds
):
    """Behind the newest sample (taken at 30) but past the one before (at 20):
    the sampled figure is 25 s, a whole interval, even when the replica is
    a moment behind a busy primary.  The age of its last replayed commit is
    a tighter upper bound, and the newest sample's age a lower one."""
    assert history._lag(2500, now=45.0, replay_age=replay_age) == (500, seconds)


def test_lag_is_unknown_without_a_replay_position_or_a_primary_position(history):
    assert history._lag(None, now=45.0) == (None, None)
    assert health.Registry()._lag(1000, now=45.0) == (None, None)


def test_the_history_keeps_only_the_newest_positions():
    registry = health.Registry()
    registry._history.extend((float(t), t) for t in range(HISTORY + 10))

    assert len(registry._history) == HISTORY
    assert registry._history[0] == (10.0, 10)


@override_settings(MULTIDB_REPLICA_MAX_LAG=1, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
def test_a_replica_behind_the_primary_for_longer_than_max_lag_is_lagging(history):
    status = history._replica_status(
        "replica1", ReplicaState(True, 2500), now=21.5, checked=CHECKED
    )

    assert (status.state, status.lag_bytes, status.lag_seconds) == (
        "lagging", 500, 1.5,
    )  # fmt: skip
    assert status.reason == "1.5s behind the primary (limit 1s)"
    assert status.replay_position == "0/9C4"


@override_settings(MULTIDB_REPLICA_MAX_LAG=15, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
@pytest.mark.parametrize("primary", ["down", "up"])
def test_while_the_primary_is_down_a_replica_falls_no_further_behind(
    monkeypatch, primary
):
    """The primary died before shipping its last WAL (found by
    benchmarks/faults.py): the replicas will never replay the position the
    prober last saw.  Time passing with the primary out of sight must not
    make them lag, or after MAX_LAG every replica leaves the rotation and
    every read goes to the primary that is down."""
    registry = health.Registry()
    start = health.time.monotonic()
    # The primary was at 2000 25 s ago and at 3000 15 s ago; the replicas
    # replayed 2999: 10 s behind when the primary was last seen.
    registry._history.extend([(start - 25, 2000), (start - 15, 3000)])

    def run(aliases, role, timeout):
        if role == "primary":
            return {"default": OperationalError("connection refused")}
        return {alias: ReplicaState(True, 2999) for alias in aliases}

    def run_primary_up(aliases, role, timeout):
        return {"default": 3000} if role == "primary" else run(aliases, role, 0)

    monkeypatch.setattr(registry, "_run", run if primary == "down" else run_primary_up)
    statuses = by_alias(registry.probe(apply=False))

    replica = statuses["replica1"]
    if primary == "down":
        assert statuses["default"].state == "down"
        assert (replica.state, replica.lag_bytes, replica.lag_seconds) == (
            "ok", 1, 10.0,
        )  # fmt: skip
    else:  # the primary in sight: 25 s and counting, over the 15 s limit
        assert replica.state == "lagging" and replica.lag_seconds >= 25


@override_settings(MULTIDB_REPLICA_MAX_LAG=15, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
@pytest.mark.parametrize("primary", ["down", "up"])
def test_while_the_primary_is_down_the_age_of_a_replicas_last_commit_stops_counting(
    monkeypatch, primary
):
    """As above, for replicas behind all the history, whose lag is the age of
    the last transaction they replayed: their clock runs on while the
    primary is out of sight, their lag does not."""
    registry = health.Registry()
    start = health.time.monotonic()
    registry._history.extend([(start - 25, 2000), (start - 15, 3000)])

    def run(aliases, role, timeout):
        if role == "primary":
            return {
                "default": 3000
                if primary == "up"
                else OperationalError("connection refused")
            }
        # Their last replayed commit is 28 s old: 13 s when the primary was
        # last seen.
        return {alias: ReplicaState(True, 1999, 28.0) for alias in aliases}

    monkeypatch.setattr(registry, "_run", run)
    replica = by_alias(registry.probe(apply=False))["replica1"]

    assert replica.lag_bytes == 1001
    if primary == "down":
        assert replica.state == "ok" and 10 <= replica.lag_seconds <= 13
    else:
        assert replica.state == "lagging" and replica.lag_seconds >= 25


@override_settings(MULTIDB_REPLICA_MAX_LAG=None, MULTIDB_REPLICA_MAX_LAG_BYTES=499)
def test_a_replica_more_bytes_behind_than_max_lag_bytes_is_lagging(history):
    status = history._replica_status(
        "replica1", ReplicaState(True, 2500), now=1e6, checked=CHECKED
    )

    assert (status.state, status.reason) == (
        "lagging", "500 bytes behind the primary (limit 499)",
    )  # fmt: skip


@override_settings(MULTIDB_REPLICA_MAX_LAG=1, MULTIDB_REPLICA_MAX_LAG_BYTES=500)
def test_a_replica_within_both_limits_is_ok(history):
    status = history._replica_status(
        "replica1", ReplicaState(True, 2500), now=21.0, checked=CHECKED
    )

    assert (status.state, status.lag_seconds, status.reason) == ("ok", 1.0, "")


@override_settings(MULTIDB_REPLICA_MAX_LAG=None, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
def test_with_both_lag_limits_off_no_lag_makes_a_replica_lagging():
    assert health._lag_reason(10**12, 10.0**6) == ""


def test_by_default_only_seconds_count_thirty_of_them():
    assert health._lag_reason(10**12, 30.0) == ""
    assert health._lag_reason(0, 30.5) == "30.5s behind the primary (limit 30s)"


@override_settings(MULTIDB_REPLICA_MAX_LAG=1, MULTIDB_REPLICA_MAX_LAG_BYTES=1)
def test_past_both_limits_the_reason_gives_the_seconds():
    assert health._lag_reason(2, 2.0) == "2s behind the primary (limit 1s)"


# --- report_failure: the rotation, signals and logs --------------------------


def test_a_reported_failure_takes_the_replica_out_at_once_signalled_and_logged_once(
    replica_signals, caplog
):
    caplog.set_level(logging.INFO, logger="multidb")

    with override_settings(**CHECKS_ON):
        health.registry.report_failure("replica1", "OperationalError: gone")
        health.registry.report_failure("replica1", "OperationalError: gone again")
    status = by_alias(multidb.replica_status())["replica1"]

    assert (status.state, status.reachable, status.reason) == (
        "down", False, "OperationalError: gone",
    )  # fmt: skip
    assert status.last_checked is not None
    assert rotation.rotation().usable == {"replica2"}
    assert replica_signals == [
        ("replica_down", "replica1", "OperationalError: gone", "MainThread")
    ]
    assert multidb_messages(caplog) == [
        "replica replica1 is down: OperationalError: gone"
    ]


def test_a_reported_failure_of_an_alias_that_is_no_replica_changes_nothing(
    replica_signals,
):
    with override_settings(**CHECKS_ON):
        health.registry.report_failure("default", "OperationalError: on the primary")
        health.registry.report_failure("elsewhere", "OperationalError: not ours")

    assert {s.state for s in health.registry.statuses()} == {"unknown"}
    assert rotation.rotation().usable == set(REPLICAS)
    assert replica_signals == []


def test_with_health_checks_off_a_reported_failure_changes_nothing(replica_signals):
    assert health.conf.HEALTH_CHECK_INTERVAL is None

    health.registry.report_failure("replica1", "OperationalError: gone")

    assert {s.state for s in health.registry.statuses()} == {"unknown"}
    assert rotation.rotation().usable == set(REPLICAS)
    assert replica_signals == []


@db
def test_a_probe_that_finds_a_reported_replica_fine_puts_it_back_with_replica_up(
    replica_signals, caplog
):
    caplog.set_level(logging.INFO, logger="multidb")
    with override_settings(**CHECKS_ON):
        health.registry.report_failure("replica1", "OperationalError: gone")

    health.registry.probe()

    assert rotation.rotation().usable == set(REPLICAS)
    assert [(e.signal, e.alias, e.reason) for e in replica_signals] == [
        ("replica_down", "replica1", "OperationalError: gone"),
        ("replica_up", "replica1", "was down"),
    ]
    assert multidb_messages(caplog)[-1] == "replica replica1 is back in rotation"


@pytest.fixture
def raising_receiver():
    """A ``replica_down`` receiver that raises; whether it was called."""
    from multidb import signals

    calls: list[str] = []

    def receiver(sender, alias, reason, **kwargs):
        calls.append(alias)
        raise RuntimeError("a receiver's own bug")

    signals.replica_down.connect(receiver, weak=False, dispatch_uid="tests-raising")
    yield calls
    signals.replica_down.disconnect(dispatch_uid="tests-raising")


def test_a_signal_receiver_that_raises_neither_fails_the_report_nor_keeps_the_replica(
    raising_receiver, replica_signals, caplog
):
    with override_settings(**CHECKS_ON):
        health.registry.report_failure("replica1", "OperationalError: gone")

    assert raising_receiver == ["replica1"]
    assert rotation.rotation().usable == {"replica2"}
    # Other receivers still hear of it.
    assert [(e.signal, e.alias) for e in replica_signals] == [
        ("replica_down", "replica1")
    ]
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[1].args for r in failed] == [("a receiver's own bug",)]
    assert [r.name for r in failed] == ["django.dispatch"]


@db
def test_a_signal_receiver_that_raises_does_not_fail_a_probe_round(raising_receiver):
    with override_settings(REPLICA_DATABASES=["replica1", "ghost"], **CHECKS_ON):
        statuses = by_alias(health.registry.probe())

        assert statuses["ghost"].state == "down"
        assert raising_receiver == ["ghost"]
        assert rotation.rotation().usable == {"replica1"}


@db
def test_a_probe_round_never_overwrites_a_failure_reported_while_it_ran(
    monkeypatch, replica_signals
):
    """The round's probe of replica1 answered before the failure was
    reported, so it says nothing about the failure."""
    run = health.registry._run

    def run_then_report(aliases, role, timeout):
        results = run(aliases, role, timeout)
        if role == "replica":  # replica1 has answered; the round is not over
            health.registry.report_failure("replica1", "OperationalError: gone")
        return results

    monkeypatch.setattr(health.registry, "_run", run_then_report)
    with override_settings(**CHECKS_ON):
        statuses = by_alias(health.registry.probe())

    assert statuses["replica1"].state == "down"
    assert by_alias(health.registry.statuses())["replica1"].state == "down"
    assert statuses["replica2"].state == "ok"
    assert rotation.rotation().usable == {"replica2"}
    assert [(e.signal, e.alias) for e in replica_signals] == [
        ("replica_down", "replica1")
    ]


@db
def test_the_next_round_after_a_reported_failure_does_record_what_it_finds():
    with override_settings(**CHECKS_ON):
        health.registry.report_failure("replica1", "OperationalError: gone")
        health.registry.probe()

    assert by_alias(health.registry.statuses())["replica1"].state == "ok"


@db
def test_callers_that_find_the_statuses_stale_at_once_share_one_probe_round():
    found = at_once(lambda: health.registry.recent(60, apply=False), threads=8)

    assert len(found) == 8
    assert len({tuple(s.last_checked for s in statuses) for statuses in found}) == 1


@db
def test_statuses_younger_than_the_age_asked_are_returned_without_a_round():
    probed = health.registry.probe()

    assert health.registry.recent(60) == probed


@db
def test_no_usable_replica_is_logged_once_and_the_recovery_once(caplog):
    caplog.set_level(logging.INFO, logger="multidb")

    with override_settings(**CHECKS_ON):
        for alias in REPLICAS:
            health.registry.report_failure(alias, "OperationalError: gone")
    read_while_down = PinningReplicaRouter().db_for_read(Item)
    health.registry.probe()
    health.registry.probe()

    assert read_while_down == "default"
    assert multidb_messages(caplog) == [
        "replica replica1 is down: OperationalError: gone",
        "replica replica2 is down: OperationalError: gone",
        "no replica is usable; reads go to 'default'",
        "replica replica1 is back in rotation",
        "replica replica2 is back in rotation",
        "replicas are usable again",
    ]


@override_settings(REPLICA_DATABASES={"replica1": 1, "replica2": 0}, **CHECKS_ON)
def test_a_replica_of_weight_zero_does_not_count_as_usable_for_reads(caplog):
    caplog.set_level(logging.WARNING, logger="multidb")

    health.registry.report_failure("replica1", "OperationalError: gone")

    assert multidb_messages(caplog)[-1] == "no replica is usable; reads go to 'default'"


# --- the prober thread -------------------------------------------------------


def test_with_health_checks_off_no_prober_starts():
    assert health.conf.HEALTH_CHECK_INTERVAL is None

    health.ensure_started()
    rotation.rotation()

    assert prober_threads() == []


@db
def test_the_prober_starts_on_the_first_rotation_and_only_once(wait_until):
    with override_settings(**CHECKS_ON):
        before = prober_threads()
        rotation.rotation()
        started = prober_threads()
        rotation._invalidate()
        rotation.rotation()
        health.ensure_started()
        again = prober_threads()
        wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))

    assert (before, len(started), again) == ([], 1, started)


@db
def test_two_threads_routing_at_once_start_one_prober(wait_until):
    code = health._Worker.ensure_started.__code__
    lines, first = inspect.getsourcelines(health._Worker.ensure_started)
    lock_line = first + next(i for i, t in enumerate(lines) if "with self._lock" in t)

    def waiting_for_the_lock(thread):
        frame = sys._current_frames().get(thread.ident)
        return frame is not None and (frame.f_code, frame.f_lineno) == (code, lock_line)

    with override_settings(**CHECKS_ON):
        racers = [threading.Thread(target=health.ensure_started) for _ in range(2)]
        with health._worker._lock:
            for racer in racers:
                racer.start()
            # Both saw no prober running and now wait for the lock.
            wait_until(lambda: all(waiting_for_the_lock(r) for r in racers))
        for racer in racers:
            racer.join(5)
        started = prober_threads()

    assert len(started) == 1


@db
def test_a_reported_failure_wakes_the_prober_to_check_again_at_once(
    replica_signals, wait_until
):
    with override_settings(**CHECKS_ON):
        health.ensure_started()
        wait_until(lambda: all(s.state == "ok" for s in health.registry.statuses()))

        health.registry.report_failure("replica1", "OperationalError: gone")
        # Without the wake-up the next round would be a minute away.
        wait_until(lambda: len(replica_signals) == 2)

    assert [(e.signal, e.alias, e.thread) for e in replica_signals] == [
        ("replica_down", "replica1", "MainThread"),
        ("replica_up", "replica1", "multidb-health"),
    ]


@db
def test_the_prober_outlives_a_failed_round_and_stops_once_health_checks_are_off(
    caplog, wait_until
):
    caplog.set_level(logging.ERROR, logger="multidb")

    def failed_rounds():
        return [r for r in caplog.records if r.getMessage() == "a health probe failed"]

    # A string is no valid REPLICA_DATABASES: every round raises TypeError.
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.05, REPLICA_DATABASES="x"):
        health.ensure_started()
        (prober,) = prober_threads()
        wait_until(lambda: len(failed_rounds()) >= 2)
    wait_until(lambda: not prober.is_alive())

    assert {r.exc_info[0] for r in failed_rounds()} == {TypeError}


@db
@pytest.mark.parametrize(
    "interval",
    [1e10, math.inf, 10**400, "soon"],
    ids=["1e10", "inf", "10**400", "a string"],
)
def test_the_prober_outlives_an_interval_it_cannot_wait(
    interval, caplog, monkeypatch, wait_until
):
    """1e10 s is past ``threading.TIMEOUT_MAX`` (``Event.wait`` raises
    OverflowError): such a wait is cut to the longest possible, which a wake
    ends; one that is no number waits a second."""
    caplog.set_level(logging.ERROR, logger="multidb")
    rounds = []
    probe = health.registry.probe

    def counted_probe(*args, **kwargs):
        rounds.append(threading.current_thread().name)
        return probe(*args, **kwargs)

    monkeypatch.setattr(health.registry, "probe", counted_probe)
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=interval):
        health.ensure_started()
        (prober,) = prober_threads()
        wait_until(lambda: len(rounds) >= 1)
        # A failed wait sleeps a second instead; a long one needs waking.
        health._worker.wake()
        wait_until(lambda: len(rounds) >= 2, what="a second round")
        with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.01):
            health._worker.wake()
            wait_until(lambda: len(rounds) >= 5, what="rounds at the new interval")
        assert prober.is_alive()
        assert prober_threads() == [prober]

    assert set(rounds) == {"multidb-health"}
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize(
    ("interval", "pause"),
    [
        (0.5, 0.5), (3, 3.0), (1e10, threading.TIMEOUT_MAX),
        (math.inf, threading.TIMEOUT_MAX), (10**400, threading.TIMEOUT_MAX),
        (0, 1.0), (-1, 1.0), (math.nan, 1.0), ("soon", 1.0), ([], 1.0),
    ],
)  # fmt: skip
def test_the_prober_waits_the_interval_within_what_a_wait_can_do_and_never_spins(
    interval, pause
):
    assert health._pause(interval) == pause


# --- after fork --------------------------------------------------------------


@db
def test_after_fork_the_child_starts_over_and_runs_a_prober_of_its_own(wait_until):
    parent = health.registry
    parent_wake = health._worker._wake
    try:
        with override_settings(**CHECKS_ON):
            parent.report_failure("replica1", "OperationalError: gone")

            health._after_fork_in_child()
            child = health.registry
            child_statuses = child.statuses()
            rotation_dropped = rotation._rotation is None
            prober_before = health._worker._thread
            rotation.rotation()
            wait_until(lambda: all(s.state == "ok" for s in child.statuses()))
    finally:
        reset_state()  # the child's prober and probe connections
        health.registry = parent  # this process is the parent, after all

    assert child is not parent
    assert {s.state for s in child_statuses} == {"unknown"}
    assert by_alias(parent.statuses())["replica1"].state == "down"
    assert health._worker._wake is not parent_wake
    assert (rotation_dropped, prober_before) == (True, None)


@db
def test_after_fork_the_child_keeps_the_parents_probe_connections_without_closing(
    monkeypatch,
):
    """Closing would end the parent's sessions, and a finaliser might too:
    the child keeps the objects (their sockets closed, when they have one;
    tests/postgres/test_health.py shows that on real servers)."""
    parent = health.registry
    parent.probe(apply=False)
    inherited = dict(parent._connections)
    closed: list[str] = []
    monkeypatch.setattr(
        health._Connection, "close", lambda self: closed.append(self.wrapper.alias)
    )
    try:
        health._after_fork_in_child()
        child = health.registry
    finally:
        health.registry = parent  # this process is the parent, after all
        kept = health._inherited[-len(inherited) :]
        del health._inherited[-len(inherited) :]
        monkeypatch.undo()
    still_answering = by_alias(parent.probe(apply=False))

    assert sorted(inherited) == ["default", *REPLICAS]
    assert child._connections == {} and closed == []
    assert kept == list(inherited.values())
    assert parent._connections == inherited
    assert {status.state for status in still_answering.values()} == {"ok"}


# --- got_request_exception: a database error in a request --------------------

MISSING = "SELECT * FROM multidb_no_such_table"


def read_a_missing_table(request):
    """A read through the request's replica that SQLite refuses for real."""
    list(Item.objects.raw(MISSING))


async def async_read_a_missing_table(request):
    await sync_to_async(list)(Item.objects.raw(MISSING))


def fail_reading_the_primary(request):
    with use_primary_db:
        list(Item.objects.raw(MISSING))


def read_then_fail_otherwise(request):
    Item.objects.count()
    raise ValueError("not a database error")


urlpatterns = [
    path("missing/", read_a_missing_table),
    path("async-missing/", async_read_a_missing_table),
    path("missing-on-primary/", fail_reading_the_primary),
    path("not-a-db-error/", read_then_fail_otherwise),
]

in_these_views = override_settings(ROOT_URLCONF=__name__, **CHECKS_ON)


def replica_reads(decisions) -> list[str]:
    return [
        alias for kind, alias, _ in decisions if kind == "read" and alias != "default"
    ]


@db
def test_a_database_error_in_a_request_reports_the_replica_the_request_read(
    replica_signals, decisions
):
    rotation.rotation()  # built before: no prober starts during the test
    with in_these_views:
        response = Client(raise_request_exception=False).get("/missing/")
        statuses = by_alias(multidb.replica_status())

    (read,) = set(replica_reads(decisions))
    (other,) = set(REPLICAS) - {read}
    assert response.status_code == 500
    assert [(e.signal, e.alias, e.reason) for e in replica_signals] == [
        ("replica_down", read, "OperationalError: no such table: multidb_no_such_table")
    ]
    assert (statuses[read].state, statuses[other].state) == ("down", "unknown")
    assert rotation.rotation().usable == {other}


@db
@pytest.mark.asyncio
async def test_a_database_error_in_an_async_view_reports_the_replica_too(
    replica_signals, decisions
):
    rotation.rotation()
    with in_these_views:
        response = await AsyncClient(raise_request_exception=False).get(
            "/async-missing/"
        )

    (read,) = set(replica_reads(decisions))
    assert response.status_code == 500
    assert [(e.signal, e.alias) for e in replica_signals] == [("replica_down", read)]


@db
@pytest.mark.parametrize("url", ["/missing-on-primary/", "/not-a-db-error/"])
def test_an_error_that_does_not_implicate_a_replica_reports_nothing(
    replica_signals, url
):
    rotation.rotation()
    with in_these_views:
        response = Client(raise_request_exception=False).get(url)

    assert response.status_code == 500
    assert replica_signals == []
    assert rotation.rotation().usable == set(REPLICAS)


@db
def test_without_the_middleware_a_database_error_reports_nothing(
    replica_signals, decisions
):
    rotation.rotation()
    with in_these_views, override_settings(MIDDLEWARE=[]):
        response = Client(raise_request_exception=False).get("/missing/")

    assert response.status_code == 500
    assert replica_reads(decisions)  # it did read a replica
    assert replica_signals == []


class _DriverError(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "blamed"),
    [
        (None, True),  # libpq: connection refused, server closed the connection
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown
        ("40P01", False),  # deadlock detected
        ("55P03", False),  # lock not available
        ("57014", False),  # query canceled
    ],
)
def test_only_connection_errors_blame_a_replica(sqlstate, blamed):
    from django.db import OperationalError

    from multidb.middleware import _connection_error

    error = OperationalError("boom")
    error.__cause__ = _DriverError(sqlstate)
    assert _connection_error(error) is blamed


def test_errors_that_are_not_operational_never_blame_a_replica():
    from django.db import IntegrityError

    from multidb.middleware import _connection_error

    assert _connection_error(IntegrityError("duplicate")) is False
    assert _connection_error(None) is False
