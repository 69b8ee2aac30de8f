"""``manage.py multidb_status`` and the health view against the real cluster.

The primary's "unreachable" path freezes the session primary (SIGSTOP): its
clients then hang instead of failing, which is what a probe must survive,
and a thaw puts it back exactly as it was.  Stopping it instead would break
the replicas' streaming and every open connection of the session.

The lag of a delayed replica is checked from a process of its own, as an
operator runs the command: this session's prober has a history of the
primary's positions that a fresh process lacks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client, override_settings

from multidb import health, rotation
from multidb.positions import parse_lsn
from multidb.testing.cluster import Cluster
from tests.conftest import at_once
from tests.postgres.conftest import node_of

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

DATABASES = ("default", "replica1", "replica2")
FIELDS = {
    "alias", "role", "state", "reachable", "is_replica", "lag_bytes",
    "lag_seconds", "replay_position", "last_checked", "reason", "usable",
}  # fmt: skip


ROOT = Path(__file__).resolve().parents[2]


def status(*args: str) -> str:
    out = StringIO()
    call_command("multidb_status", *args, stdout=out)
    return out.getvalue()


def rows(table: str) -> list[list[str]]:
    """The table's rows (header first), split on the column gaps."""
    return [re.split(r"\s{2,}", line) for line in table.splitlines()]


def test_multidb_status_prints_a_row_per_database_with_role_state_lag_and_position(
    pg_cluster,
):
    before = parse_lsn(pg_cluster.current_lsn())

    header, *table = rows(status())

    assert header == [
        "ALIAS", "ROLE", "STATE", "LAG BYTES", "LAG SECONDS", "POSITION", "REASON",
    ]  # fmt: skip
    assert [row[:3] for row in table] == [
        ["default", "primary", "ok"],
        ["replica1", "replica", "ok"],
        ["replica2", "replica", "ok"],
    ]
    primary, *replica_rows = table
    assert primary[3:5] == ["-", "-"]
    assert parse_lsn(primary[5]) >= before
    for row in replica_rows:
        assert int(row[3]) >= 0 and float(row[4]) >= 0
        assert parse_lsn(row[5]) >= before


def test_multidb_status_json_gives_the_same_databases_and_figures_as_the_table():
    table = rows(status())[1:]

    data = json.loads(status("--json"))

    assert [d["alias"] for d in data] == list(DATABASES)
    assert all(set(d) == FIELDS for d in data)
    assert [[d["alias"], d["role"], d["state"]] for d in data] == [
        row[:3] for row in table
    ]
    assert [d["usable"] for d in data] == [True, True, True]
    assert data[0]["lag_bytes"] is None and data[0]["is_replica"] is False
    for entry in data:
        assert parse_lsn(entry["replay_position"]) > 0
        assert entry["last_checked"].endswith("+00:00")
    for entry in data[1:]:
        assert isinstance(entry["lag_bytes"], int)
        assert isinstance(entry["lag_seconds"], float)
        assert entry["is_replica"] is True


def test_multidb_status_strict_fails_on_a_stopped_replica_and_plain_only_reports(
    faults,
):
    faults.stop("replica1")

    plain = rows(status())
    with pytest.raises(CommandError, match=r"^Unusable replicas: replica1\. "):
        status("--strict")

    assert [row[:3] for row in plain[1:]] == [
        ["default", "primary", "ok"],
        ["replica1", "replica", "down"],
        ["replica2", "replica", "ok"],
    ]
    assert plain[2][3:6] == ["-", "-", "-"]
    assert plain[2][6].startswith("OperationalError: connection failed")


def test_multidb_status_leaves_this_process_rotation_alone(faults):
    faults.stop("replica1")

    status()

    assert rotation.rotation().usable == {"replica1", "replica2"}


#: How late replica1 applies WAL in the fresh-process tests, and the lag limit
#: their command runs with: far apart, so that neither the delayed replica nor
#: the one that keeps up comes near the limit by a scheduling hiccup.
DELAY = 10.0
MAX_LAG = DELAY / 2


@pytest.fixture
def replica1_delayed(pg_cluster: Cluster) -> Iterator[None]:
    """replica1 applies WAL ``DELAY`` seconds late, while the primary commits
    every 0.1 s; ready once replica1 replays commits made under the delay,
    so it is ``DELAY`` behind and no longer merely as far behind as the
    delay is old."""
    node = node_of(pg_cluster, "replica1")
    stop = threading.Event()

    def commit() -> None:
        with psycopg.connect(pg_cluster.primary.dsn(), autocommit=True) as conn:
            while not stop.wait(0.1):
                conn.execute("SELECT txid_current()")  # a commit record

    writer = threading.Thread(target=commit, name="status-test-writer", daemon=True)
    try:
        pg_cluster.set_apply_delay(node, int(DELAY * 1000))
        delayed_since = pg_cluster.primary.scalar("SELECT clock_timestamp()")
        writer.start()
        deadline = time.monotonic() + DELAY + 30
        while not node.scalar(
            "SELECT coalesce(pg_last_xact_replay_timestamp() > %s, false)",
            [delayed_since],
        ):
            assert writer.is_alive(), "the writer stopped"
            assert time.monotonic() < deadline, "replica1 replays nothing delayed"
            time.sleep(0.25)
        yield
    finally:
        stop.set()
        if writer.ident is not None:
            writer.join(10)
        pg_cluster.set_apply_delay(node, 0)


def fresh_process_env(directory: Path, max_lag: float) -> dict[str, str]:
    """The environment of a process of its own, run in ``directory``, whose
    settings are the session's cluster with ``MULTIDB_REPLICA_MAX_LAG``."""
    (directory / "status_settings.py").write_text(
        "from tests.postgres.settings import *  # noqa: F403\n"
        f"MULTIDB_REPLICA_MAX_LAG = {max_lag!r}\n"
    )
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "status_settings",
        # The settings module then describes the session's cluster.
        "MULTIDB_TEST_PG_PORTS": ",".join(map(str, settings.PG_PORTS)),
    }


def status_in_a_fresh_process(
    directory: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``manage.py multidb_status`` in a process of its own, against the
    session's cluster, with ``MULTIDB_REPLICA_MAX_LAG = MAX_LAG``."""
    return subprocess.run(
        [sys.executable, "-m", "django", "multidb_status", *args],
        cwd=directory,
        env=fresh_process_env(directory, MAX_LAG),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_multidb_status_in_a_fresh_process_reports_a_delayed_replica_at_its_delay(
    replica1_delayed, tmp_path
):
    run = status_in_a_fresh_process(tmp_path, "--json")

    assert run.returncode == 0, run.stderr[-3000:]
    data = {entry["alias"]: entry for entry in json.loads(run.stdout)}
    delayed, keeping_up = data["replica1"], data["replica2"]
    assert delayed["lag_seconds"] >= DELAY * 0.8 and delayed["lag_bytes"] > 0
    assert (delayed["state"], delayed["reason"]) == (
        "lagging",
        f"{delayed['lag_seconds']:g}s behind the primary (limit {MAX_LAG:g}s)",
    )
    assert keeping_up["state"] == "ok" and keeping_up["lag_seconds"] < MAX_LAG


def test_multidb_status_strict_in_a_fresh_process_fails_on_a_replica_past_the_lag_limit(
    replica1_delayed, tmp_path
):
    run = status_in_a_fresh_process(tmp_path, "--strict")

    assert run.returncode == 1, run.stdout
    assert "CommandError: Unusable replicas: replica1. " in run.stderr
    assert [row[:3] for row in rows(run.stdout)[1:]] == [
        ["default", "primary", "ok"],
        ["replica1", "replica", "lagging"],
        ["replica2", "replica", "ok"],
    ]


@override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=0.5)
def test_multidb_status_fails_when_the_primary_is_unreachable(
    faults, caplog, wait_until
):
    caplog.set_level(logging.INFO, logger="multidb")
    health.registry.probe()  # the primary was fine
    faults.freeze("default")

    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("multidb_status", stdout=out)
    faults.thaw("default")
    wait_until(lambda: health.registry.probe()[0].state == "ok")

    assert str(raised.value) == (
        "The primary (default) is unreachable: TimeoutError: no answer within 0.5s"
    )
    assert rows(out.getvalue())[1][:3] == ["default", "primary", "down"]
    messages = [r.getMessage() for r in caplog.records if r.name == "multidb"]
    assert messages == [
        "the primary is down: TimeoutError: no answer within 0.5s",
        "the primary is ok",
    ]


@override_settings(MULTIDB_HEALTH_DETAILS="always")
def test_the_health_view_is_200_when_the_databases_are_fine(pg_cluster):
    response = Client().get("/health/db/")

    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["usable_replicas"], body["min_replicas"]) == (
        "ok", 2, 1,
    )  # fmt: skip
    assert body["primary"]["state"] == "ok"
    assert [r["alias"] for r in body["replicas"]] == ["replica1", "replica2"]
    assert all(parse_lsn(r["replay_position"]) > 0 for r in body["replicas"])


@override_settings(MULTIDB_HEALTH_MIN_REPLICAS=2, MULTIDB_HEALTH_DETAILS="always")
def test_the_health_view_is_503_when_fewer_replicas_than_required_are_usable(faults):
    faults.stop("replica2")

    response = Client().get("/health/db/")

    body = response.json()
    assert response.status_code == 503
    assert (body["status"], body["usable_replicas"], body["min_replicas"]) == (
        "fail", 1, 2,
    )  # fmt: skip
    assert [(r["alias"], r["state"]) for r in body["replicas"]] == [
        ("replica1", "ok"),
        ("replica2", "down"),
    ]


@override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=0.5, MULTIDB_HEALTH_DETAILS="always")
def test_the_health_view_is_503_when_the_primary_is_unreachable(faults):
    faults.freeze("default")

    response = Client().get("/health/db/")

    body = response.json()
    assert (response.status_code, body["status"], body["usable_replicas"]) == (
        503, "fail", 2,
    )  # fmt: skip
    assert (body["primary"]["state"], body["primary"]["reachable"]) == ("down", False)


# --- what the health view shows, and to whom -----------------------------------------


@pytest.fixture
def replica2_as_a_missing_role() -> Iterator[str]:
    """replica2's alias logs in as a role the server does not have, so its
    probe fails with the driver's error text (host, port and role in it)."""
    entry = connections.settings["replica2"]
    saved = entry["USER"]
    entry["USER"] = "app_ro"
    health.registry.forget()  # no probe connection made with the old role
    try:
        yield "app_ro"
    finally:
        # The probe connection made with the missing role goes with the
        # health state that every test ends by resetting (tests/conftest.py).
        entry["USER"] = saved


def infrastructure(body: str) -> list[str]:
    """What in ``body`` names a host, a port, a role, a position or an error."""
    from django.conf import settings

    names = [
        "127.0.0.1", "localhost", "app_ro", "OperationalError", "FATAL",
        "does not exist", *(str(port) for port in settings.PG_NODE_PORTS.values()),
    ]  # fmt: skip
    found = [name for name in names if name in body]
    found += re.findall(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}", body)
    return found


def test_an_anonymous_client_sees_no_host_port_role_position_or_error(
    replica2_as_a_missing_role,
):
    response = Client().get("/health/db/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "usable_replicas": 1, "min_replicas": 1}
    assert infrastructure(response.content.decode()) == []


# Health checks on: the probe takes replica2 out, so that the session and
# user reads of a logged-in request do not wait on its pool.
@override_settings(MULTIDB_HEALTH_DETAILS="staff", MULTIDB_HEALTH_CHECK_INTERVAL=60)
def test_a_staff_user_sees_the_details_that_name_the_failure(
    replica2_as_a_missing_role, caplog, pg_cluster
):
    from django.contrib.auth.models import User

    health.registry.probe()
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    # The request reads its session and user from replica1.
    pg_cluster.wait_caught_up()

    body = client.get("/health/db/").json()

    replica2 = body["replicas"][1]
    assert (replica2["alias"], replica2["state"]) == ("replica2", "down")
    assert 'role "app_ro" does not exist' in replica2["reason"]
    assert parse_lsn(body["replicas"][0]["replay_position"]) > 0
    # The log has them too, whoever asked.
    assert any("app_ro" in r.getMessage() for r in caplog.records)


@override_settings(MULTIDB_HEALTH_DETAILS="always")
def test_concurrent_health_requests_with_a_frozen_replica_share_one_probe_round(
    faults,
):
    with override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=1):
        faults.freeze("replica2")
        bodies = at_once(lambda: Client().get("/health/db/").json(), threads=8)

    assert len(bodies) == 8
    assert {body["replicas"][1]["state"] for body in bodies} == {"down"}
    rounds = {body["primary"]["last_checked"] for body in bodies}
    assert len(rounds) == 1
