"""The health view, ``multidb.views.health``, through Django's test client on
SQLite: the report, the status code, and when it probes anew.  The same
view with a stopped replica and a frozen primary is tested in
tests/postgres/test_status.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from django.test import Client, override_settings

from multidb import health, rotation

db = pytest.mark.django_db(transaction=True, databases="__all__")


def get():
    """The view's answer with every detail shown (see the tests at the end
    for who sees them)."""
    with override_settings(MULTIDB_HEALTH_DETAILS="always"):
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
    assert rotation.rotation().usable == {"replica1", "ghost"}


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_with_health_checks_on_the_views_probe_updates_the_rotation():
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60):
        body = get().json()

    assert body["replicas"][1]["state"] == "down"
    assert rotation.rotation().usable == {"replica1"}


# --- who sees the details ------------------------------------------------------


SUMMARY = {"status", "usable_replicas", "min_replicas"}


def staff_client(**flags: bool) -> Client:
    from django.contrib.auth.models import User

    user = User.objects.create_user("ops", password="x", **flags)
    client = Client()
    client.force_login(user)
    return client


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_by_default_the_health_view_answers_the_status_and_counts_only():
    response = Client().get("/health/db/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "usable_replicas": 1, "min_replicas": 1}


@db
@override_settings(MULTIDB_HEALTH_DETAILS="staff")
def test_with_details_for_staff_an_anonymous_client_sees_the_summary_only():
    assert set(Client().get("/health/db/").json()) == SUMMARY


@db
@override_settings(MULTIDB_HEALTH_DETAILS="staff")
def test_with_details_for_staff_a_user_who_is_not_staff_sees_the_summary_only():
    client = staff_client(is_staff=False)

    assert set(client.get("/health/db/").json()) == SUMMARY


@db
@override_settings(MULTIDB_HEALTH_DETAILS="staff")
def test_with_details_for_staff_a_staff_user_sees_every_database():
    client = staff_client(is_staff=True)

    body = client.get("/health/db/").json()

    assert set(body) > SUMMARY
    assert [r["alias"] for r in body["replicas"]] == ["replica1", "replica2"]


@db
@override_settings(MULTIDB_HEALTH_DETAILS="staff")
def test_with_details_for_staff_an_inactive_staff_user_sees_the_summary_only():
    client = staff_client(is_staff=True)
    from django.contrib.auth.models import User

    User.objects.filter(username="ops").update(is_active=False)

    assert set(client.get("/health/db/").json()) == SUMMARY


@db
@override_settings(MULTIDB_HEALTH_DETAILS="always")
def test_with_details_always_an_anonymous_client_sees_every_database():
    body = Client().get("/health/db/").json()

    assert body["primary"]["alias"] == "default"
