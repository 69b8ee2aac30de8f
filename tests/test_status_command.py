"""``manage.py multidb_status`` on SQLite: the table's layout, and the
command's output and exit status with reachability-only databases.  The
PostgreSQL figures (lag, positions) and an unreachable primary are tested
in tests/postgres/test_status.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from multidb import rotation
from multidb.health import DatabaseStatus
from multidb.management.commands.multidb_status import table

db = pytest.mark.django_db(transaction=True, databases="__all__")

CHECKED = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def run(*args: str) -> str:
    out = StringIO()
    call_command("multidb_status", *args, stdout=out)
    return out.getvalue()


# --- the table ------------------------------------------------------------------


def test_the_table_has_a_header_and_a_row_per_status_with_dashes_for_unknowns():
    statuses = [
        DatabaseStatus("default", "primary", "ok", reachable=True,
                       replay_position="16/B374D848", last_checked=CHECKED),
        DatabaseStatus("replica1", "replica", "lagging", reachable=True,
                       is_replica=True, lag_bytes=123456, lag_seconds=31.25,
                       replay_position="16/B3700000", last_checked=CHECKED,
                       reason="31.25s behind the primary (limit 30s)"),
        DatabaseStatus("replica2", "replica", "down", reachable=False,
                       last_checked=CHECKED, reason="OperationalError: refused"),
    ]  # fmt: skip

    assert table(statuses).splitlines() == [
        "ALIAS     ROLE     STATE    LAG BYTES  LAG SECONDS  POSITION     REASON",
        "default   primary  ok       -          -            16/B374D848",
        "replica1  replica  lagging  123456     31.25        16/B3700000  31.25s behind the primary (limit 30s)",  # noqa: E501
        "replica2  replica  down     -          -            -            OperationalError: refused",  # noqa: E501
    ]


def test_table_columns_widen_to_the_longest_cell_and_lines_have_no_trailing_space():
    statuses = [
        DatabaseStatus("default", "primary", "ok"),
        DatabaseStatus("a-very-long-replica-alias", "replica", "ok", lag_bytes=0,
                       lag_seconds=0.0),
    ]  # fmt: skip

    assert table(statuses).splitlines() == [
        "ALIAS                      ROLE     STATE  LAG BYTES  LAG SECONDS  POSITION  REASON",  # noqa: E501
        "default                    primary  ok     -          -            -",
        "a-very-long-replica-alias  replica  ok     0          0            -",
    ]


# --- the command on SQLite ----------------------------------------------------------


@db
def test_multidb_status_on_sqlite_reports_reachability_without_lag_or_position():
    lines = run().splitlines()

    assert [line.split() for line in lines[1:]] == [
        ["default", "primary", "ok", "-", "-", "-"],
        ["replica1", "replica", "ok", "-", "-", "-"],
        ["replica2", "replica", "ok", "-", "-", "-"],
    ]


@db
def test_multidb_status_json_is_a_list_of_status_records():
    data = json.loads(run("--json"))

    assert [(d["alias"], d["role"], d["state"], d["usable"]) for d in data] == [
        ("default", "primary", "ok", True),
        ("replica1", "replica", "ok", True),
        ("replica2", "replica", "ok", True),
    ]
    assert all(d["lag_bytes"] is None and d["replay_position"] is None for d in data)
    assert all(datetime.fromisoformat(d["last_checked"]).tzinfo for d in data)


@db
def test_multidb_status_strict_succeeds_when_every_replica_is_usable():
    assert run("--strict").splitlines()[0].startswith("ALIAS")


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_multidb_status_strict_fails_on_a_replica_it_cannot_reach_and_names_it():
    plain = run()
    with pytest.raises(CommandError) as raised:
        run("--strict")

    assert plain.splitlines()[3].split()[:3] == ["ghost", "replica", "down"]
    assert str(raised.value) == (
        "Unusable replicas: ghost. Reads that would go to them go to other "
        "replicas, or to the primary."
    )
    assert rotation.rotation().usable == {"replica1", "ghost"}  # only reported
