"""A user's own test suite against a real primary and replicas: a
``TestCase`` reads its own rows through a test mirror (which shares the
primary's connection while it runs), and ``manage.py test`` following
README.rst's advice exits 0 and leaves no test database behind, with the
health prober off (the default under a test runner) or asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.db import router
from django.test import TestCase
from prometheus_client import CollectorRegistry

import multidb
from multidb import health
from multidb.contrib.prometheus.metrics import Metrics
from multidb.testing.cluster import Cluster
from tests.app.models import Item
from tests.postgres.test_tokens import PRIMARY, REPLICAS, find
from tests.scraping import scrape, series

ROOT = Path(__file__).resolve().parents[2]


class TestCaseListingItsReplicas(TestCase):
    databases = {"default", "replica1", "replica2"}

    def test_a_view_routed_to_a_replica_sees_the_rows_the_test_wrote(self):
        Item.objects.create(name="written-by-the-test")

        answer = find(self.client, "written-by-the-test")

        assert answer["db"] in REPLICAS  # the decision production makes
        assert answer["found"] is True
        assert answer["port"] == PRIMARY  # over the shared connection

    def test_a_view_read_in_the_tests_transaction_is_counted_as_a_replica_read(self):
        registry = CollectorRegistry()
        metrics = Metrics(registry)  # multidb.contrib.prometheus's
        metrics.connect()
        try:
            Item.objects.create(name="counted")
            answer = find(self.client, "counted")
            samples = scrape(registry)
        finally:
            metrics.unregister()

        assert answer["db"] in REPLICAS
        counted = series(samples, "multidb_requests_total", "outcome", "group")
        # The test's own transaction is not the application's atomic().
        assert {key: n for key, n in counted.items() if n} == {
            ("replica", "default"): 1
        }

    def test_routing_outside_a_request_names_a_replica(self):
        assert router.db_for_read(Item) in REPLICAS
        assert multidb.get_replica() in REPLICAS


USER_TESTS = """
from django.test import TestCase, TransactionTestCase

from tests.app.models import Item
from tests.postgres.test_tokens import find


class ReadsThroughReplicas(TestCase):
    databases = {"default", "replica1", "replica2"}

    def test_sees_its_rows(self):
        Item.objects.create(name="mine")
        self.assertTrue(find(self.client, "mine")["found"])


class CommitsAndReadsReplicas(TransactionTestCase):
    databases = "__all__"

    def test_reads_a_replica(self):
        self.assertIn(find(self.client, "nothing")["db"], {"replica1", "replica2"})
"""


@pytest.mark.parametrize("prober", ["default", "asked-for"])
def test_manage_py_test_with_the_readme_advice_exits_0_and_drops_its_database(
    pg_cluster: Cluster, prober
):
    project = Path(pg_cluster.base_dir) / f"user-project-{prober}"
    project.mkdir()
    (project / "user_tests.py").write_text(USER_TESTS)
    databases = {
        alias: {**entry, "NAME": "userapp"}
        for alias, entry in settings.DATABASES.items()
    }
    (project / "user_settings.py").write_text(
        textwrap.dedent(
            f"""
            from tests.postgres.settings import *  # noqa: F403
            DATABASES = {databases!r}
            MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
            """
        )
        + (
            "MULTIDB_HEALTH_CHECK_INTERVAL = 0.05\n"
            if prober == "asked-for"
            else "del MULTIDB_HEALTH_CHECK_INTERVAL\n"
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "django", "test", "user_tests", "--noinput"],
        cwd=project,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "user_settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert "Ran 2 tests" in run.stderr and "OK" in run.stderr
    assert (
        pg_cluster.primary.query(
            "SELECT datname FROM pg_database WHERE datname = 'test_userapp'"
        )
        == []
    )


def test_probes_use_the_maintenance_database_only_under_a_test_runner(monkeypatch):
    under_runner = health._Connection("replica1", 1.0)
    monkeypatch.delattr(mail, "outbox")
    in_production = health._Connection("replica1", 1.0)

    assert under_runner.wrapper.settings_dict["NAME"] is None
    assert (
        in_production.wrapper.settings_dict["NAME"]
        == (settings.DATABASES["replica1"]["NAME"])
    )
