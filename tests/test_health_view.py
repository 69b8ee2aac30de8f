"""The health view, ``multidb.views.health``, through Django's test client on
SQLite: the report, the status code, and when it probes anew.  The same
view with a stopped replica and a frozen primary is tested in
tests/postgres/test_status.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.test import Client, override_settings

from multidb import health, replicas

db = pytest.mark.django_db(transaction=True, databases="__all__")


def get():
    return Client().get("/health/db/")


def checked(body) -> list[str]:
    """When each database in a report was last probed."""
    return [body["primary"]["last_checked"]] + [
        replica["last_checked"] for replica in body["replicas"]
    ]


@db
def test_the_health_view_is_200_with_a_json_report_when_all_is_well():
    response = get()

    body = response.json()
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert {k: body[k] for k in ("status", "usable_replicas", "min_replicas")} == {
        "status": "ok", "usable_replicas": 2, "min_replicas": 1,
    }  # fmt: skip
    assert {k: body["primary"][k] for k in ("alias", "role", "state", "usable")} == {
        "alias": "default", "role": "primary", "state": "ok", "usable": True,
    }  # fmt: skip
    assert [(r["alias"], r["state"], r["usable"]) for r in body["replicas"]] == [
        ("replica1", "ok", True),
        ("replica2", "ok", True),
    ]


@db
def test_the_health_view_is_never_cached():
    cache_control = get()["Cache-Control"]

    assert {"no-cache", "no-store", "must-revalidate", "max-age=0"} <= {
        part.strip() for part in cache_control.split(",")
    }


@db
@override_settings(MULTIDB_HEALTH_MIN_REPLICAS=3)
def test_the_health_view_is_503_with_fewer_usable_replicas_than_required():
    response = get()

    body = response.json()
    assert response.status_code == 503
    assert (body["status"], body["usable_replicas"], body["min_replicas"]) == (
        "fail", 2, 3,
    )  # fmt: skip


@db
@override_settings(
    REPLICA_DATABASES=["replica1", "ghost"], MULTIDB_HEALTH_MIN_REPLICAS=2
)
def test_the_health_view_counts_only_usable_replicas():
    response = get()

    body = response.json()
    assert (response.status_code, body["usable_replicas"]) == (503, 1)
    assert [(r["alias"], r["state"], r["reason"]) for r in body["replicas"]] == [
        ("replica1", "ok", ""),
        ("ghost", "down", "KeyError: 'ghost'"),
    ]


@db
def test_the_health_view_probes_when_a_database_was_never_probed():
    assert all(s.last_checked is None for s in health.registry.statuses())

    body = get().json()

    assert all(checked(body))
    assert checked(body) == [
        s.last_checked.isoformat() for s in health.registry.statuses()
    ]


@db
def test_the_health_view_reuses_results_younger_than_twice_the_timeout():
    probed = health.registry.probe()

    body = get().json()

    assert checked(body) == [s.last_checked.isoformat() for s in probed]


@db
@override_settings(MULTIDB_HEALTH_CHECK_TIMEOUT=0.2)
def test_the_health_view_probes_again_once_results_are_older_than_that(wait_until):
    probed = health.registry.probe()
    wait_until(
        lambda: (
            datetime.now(timezone.utc) - probed[0].last_checked > timedelta(seconds=0.4)
        )
    )

    body = get().json()

    assert all(
        datetime.fromisoformat(now) > before.last_checked
        for now, before in zip(checked(body), probed, strict=True)
    )


@db
def test_with_a_prober_running_results_count_as_fresh_for_two_intervals(wait_until):
    probed = health.registry.probe()
    # No prober starts here (nothing routes), but the view trusts one to run.
    with override_settings(
        MULTIDB_HEALTH_CHECK_INTERVAL=5, MULTIDB_HEALTH_CHECK_TIMEOUT=0.1
    ):
        wait_until(
            lambda: (
                datetime.now(timezone.utc) - probed[0].last_checked
                > timedelta(seconds=0.2)
            )
        )
        body = get().json()

    assert checked(body) == [s.last_checked.isoformat() for s in probed]


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_with_health_checks_off_the_views_probe_leaves_the_rotation_alone():
    body = get().json()

    assert body["replicas"][1]["state"] == "down"
    assert replicas.rotation().usable == {"replica1", "ghost"}


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_with_health_checks_on_the_views_probe_updates_the_rotation():
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60):
        body = get().json()

    assert body["replicas"][1]["state"] == "down"
    assert replicas.rotation().usable == {"replica1"}
