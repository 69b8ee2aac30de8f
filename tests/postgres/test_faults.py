"""Faults under load: the short versions of ``benchmarks/faults.py``.

Each test breaks a server of a cluster of its own (a primary and two
streaming replicas, started for this module, never the session's) while 50
concurrent users (one ``httpx`` client and cookie jar each, on 127.0.0.1)
use the benchmark site (``benchmarks.site``) served by uvicorn (ASGI) or
gunicorn with threads (WSGI), in a process of its own.  Every request is
recorded (failed, stale, misrouted, latency) and the site's ``/health/db/``
is polled; the scenario's must-hold checks (``benchmarks.faults.CHECKS``)
are asserted here.  The load is a few seconds per fault; ``./run.sh
faults`` runs the full-size versions (20 s faults, both servers for every
scenario).  The site's databases use the recommended settings
(``benchmarks.faults.RECOMMENDED_OPTIONS``, ``CONN_MAX_AGE = 0``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import faults
from multidb.testing.cluster import Cluster

# Slow (about 80 s): ``./run.sh test`` and CI run them; the tox matrix,
# which checks compatibility across Django versions, leaves them out.
pytestmark = pytest.mark.slow

SHORT = faults.parameters(full=False)
INTERVAL = SHORT["health_check_interval_s"]
TIMEOUT = SHORT["health_check_timeout_s"]
MARGIN = SHORT["margin_s"]
CONNECT_TIMEOUT = SHORT["connect_timeout_s"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster of this module's own: these tests stop its primary and
    promote its replicas.  Each scenario puts it back before the next."""
    cluster = Cluster(replicas=2)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mdb-test-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(cluster: Cluster, workdir: Path, scenario: str, server: str) -> dict[str, Any]:
    """Run one scenario; fail with its figures unless every check held."""
    result = faults.run_scenario(cluster, scenario, server, SHORT, workdir)
    failed = {name: c for name, c in result["checks"].items() if not c["pass"]}
    shown = {k: v for k, v in result.items() if k != "server_log_tail"}
    assert not failed, (
        f"{scenario} under {server}: {json.dumps(failed, indent=1)}\n"
        f"{json.dumps(shown, indent=1, default=str)}\n"
        f"--- server log:\n{result.get('server_log_tail', '')}"
    )
    # The load really ran: 50 concurrent users, requests before, during and
    # after the fault.
    assert SHORT["users"] >= 50
    assert result["sent"] >= 200 and result["during_fault"]["sent"] >= 50
    return result


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_a_killed_replica_fails_only_reads_in_flight_and_rejoins_after_restart(
    cluster, workdir, server
):
    r = run(cluster, workdir, "replica_killed", server)

    # Failed: reads in flight on it at the kill, or sent before the first
    # failure was answered (the app then knew); none once the prober must
    # have seen it (interval + timeout), and never a write.
    assert r["failed_writes"] == 0
    assert r["during_fault"]["answered_by_target"] == 0
    assert "down" in r["target_states_seen"]
    assert r["back_s"] <= INTERVAL + TIMEOUT + MARGIN
    assert r["stale_reads"] == r["misrouted"] == 0


def test_a_frozen_replica_costs_no_request_more_than_connect_timeout(cluster, workdir):
    r = run(cluster, workdir, "replica_frozen", "uvicorn")

    # Sent after the freeze: bounded by connect_timeout (a new connection
    # per request).  A query already running on it at the freeze would wait
    # for SIGCONT: see ``max_wait_in_flight_s`` and the README.
    assert r["max_wait_s"] <= CONNECT_TIMEOUT + MARGIN
    assert r["out_s"] <= INTERVAL + TIMEOUT + MARGIN
    assert r["out_reasons"]  # the app said why it took the replica out
    assert r["back_s"] <= INTERVAL + TIMEOUT + MARGIN
    assert r["failed_writes"] == 0
    assert r["stale_reads"] == r["misrouted"] == 0


def test_a_replica_paused_past_the_lag_limit_leaves_without_stale_reads(
    cluster, workdir
):
    r = run(cluster, workdir, "replay_paused", "uvicorn")

    assert r["stale_pinned_reads"] == 0
    assert r["stale_reads"] == 0
    assert "lagging" in r["target_states_seen"]
    assert SHORT["max_lag_s"] - INTERVAL <= r["out_s"]
    assert r["out_s"] <= SHORT["max_lag_s"] + INTERVAL + TIMEOUT + MARGIN
    assert r["back_s"] <= INTERVAL + TIMEOUT + MARGIN
    assert r["failed"] == r["misrouted"] == 0


def test_a_promoted_replica_leaves_within_a_probe_interval_and_takes_no_write(
    cluster, workdir
):
    r = run(cluster, workdir, "replica_promoted", "uvicorn")

    assert "promoted" in r["target_states_seen"]
    last = r["last_target_read_s"]
    assert last is None or last <= INTERVAL + MARGIN
    assert r["writes_on_promoted_node"] == 0
    assert r["writes_answered_by_target"] == 0
    assert r["stale_reads"] == r["misrouted"] == 0


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_with_the_primary_stopped_writes_fail_clearly_and_unpinned_reads_go_on(
    cluster, workdir, server
):
    r = run(cluster, workdir, "primary_stopped", server)

    assert r["failed_writes"] > 0
    # A refused connection, or one the stop killed in use ("connection
    # already closed"): which one a request meets depends on timing.
    assert all(
        e.startswith(("OperationalError", "InterfaceError"))
        for e in r["error_examples"]
    ), r["error_examples"]
    # Every read that failed was pinned to the primary by time: a user whose
    # write failed (its position could not be read) reads the primary.
    assert r["failed_by_pin"]["none"] == 0
    assert r["failed_reads"] == r["failed_by_pin"]["time"]
    assert r["back_s"] <= MARGIN  # writes work again, the app untouched
    assert r["stale_reads"] == r["misrouted"] == 0
