"""A user's own test suite on SQLite: Django's ``TestCase`` and
``TransactionTestCase``, as README.rst's Tests section shows them.

Inside a ``TestCase`` the router makes the decisions production makes (the
``TestCase``'s own transaction does not count), and a replica that is a test
mirror of ``default`` sees the rows the test wrote, because it shares the
primary's connection while the test case runs.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import mail
from django.db import router, transaction
from django.test import TestCase, TransactionTestCase, override_settings
from django.test.testcases import DatabaseOperationForbidden

import multidb
from multidb import health, rotation
from multidb.conf import _clear_cache, conf
from tests.app.models import Item

REPLICAS = {"replica1", "replica2"}


class TestCaseListingItsReplicas(TestCase):
    databases = {"default", "replica1", "replica2"}

    def test_a_view_reads_a_replica_and_sees_the_rows_the_test_wrote(self):
        Item.objects.create(name="written-by-the-test")

        body = self.client.get("/names/").json()

        assert body["db"] in REPLICAS
        assert body["names"] == ["written-by-the-test"]

    def test_a_write_in_the_request_pins_the_rest_of_it(self):
        body = self.client.get("/write-then-read/").json()

        assert body["before"] in REPLICAS
        assert body["after"] == "default"

    def test_outside_a_request_reads_go_to_a_replica(self):
        assert router.db_for_read(Item) in REPLICAS
        assert multidb.get_replica() in REPLICAS
        assert [item.name for item in Item.objects.all()] == []

    def test_the_tests_own_transaction_reads_the_primary(self):
        with transaction.atomic():
            assert router.db_for_read(Item) == "default"
        assert router.db_for_read(Item) in REPLICAS


class TestCaseListingOnlyThePrimary(TestCase):
    def test_routing_still_names_a_replica(self):
        assert router.db_for_read(Item) in REPLICAS
        assert multidb.get_replica() in REPLICAS

    def test_a_query_on_a_replica_fails_with_djangos_remedy(self):
        with pytest.raises(DatabaseOperationForbidden, match="databases"):
            list(Item.objects.all())


class TransactionTestCaseWithEveryDatabase(TransactionTestCase):
    databases = "__all__"

    def test_a_view_reads_a_replica_and_sees_committed_rows(self):
        Item.objects.create(name="committed")

        body = self.client.get("/names/").json()

        assert body["db"] in REPLICAS
        assert body["names"] == ["committed"]


# --- the health prober under a test runner -------------------------------------


def test_unset_the_prober_is_off_under_a_test_runner_and_on_outside_one(monkeypatch):
    with override_settings():
        del settings.MULTIDB_HEALTH_CHECK_INTERVAL
        _clear_cache()  # deleting a setting sends no setting_changed
        assert conf.HEALTH_CHECK_INTERVAL is None
        monkeypatch.delattr(mail, "outbox")
        assert conf.HEALTH_CHECK_INTERVAL == 1.0


def test_a_probe_the_test_forbids_leaves_every_replica_in_rotation():
    # No django_db mark: pytest-django blocks every connection, the prober's
    # own included.
    statuses = health.registry.probe()

    assert {status.state for status in statuses} == {health.UNKNOWN}
    assert rotation.rotation().usable == REPLICAS


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_probe_the_test_forbids_keeps_the_last_status():
    health.registry.probe()
    assert {status.state for status in health.registry.statuses()} == {health.OK}

    with pytest.MonkeyPatch.context():
        from django.db.backends.base.base import BaseDatabaseWrapper

        def forbidden(self):
            raise DatabaseOperationForbidden("Database queries are not allowed")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(BaseDatabaseWrapper, "ensure_connection", forbidden)
            for probe in health.registry._connections.values():
                probe.close()
            health.registry._connections.clear()
            statuses = health.registry.probe()

    assert {status.state for status in statuses} == {health.OK}
