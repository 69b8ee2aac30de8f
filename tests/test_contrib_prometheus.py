"""``multidb.contrib.prometheus`` in process, on SQLite (no positions, so no
lag): the counters fed by the signals, the gauges read from the health
registry at scrape time, scraped through the real exposition format, the
app and its check, and the default registry shared with django-prometheus.

Lag, a replica stopped and restarted, and requests through the middleware
are tested against the real cluster: tests/postgres/test_prometheus.py and
tests/postgres/test_prometheus_requests.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import checks
from django.test import Client, override_settings
from django.urls import path
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from multidb import health, signals, tallies
from multidb.contrib.prometheus import metrics as prometheus_metrics
from multidb.contrib.prometheus.checks import check_prometheus_client
from multidb.contrib.prometheus.metrics import OUTCOMES, STATES, Metrics
from multidb.middleware import PinningRouterMiddleware
from tests.conftest import tally
from tests.scraping import names, registry, scrape, series, value

__all__ = ["registry"]  # the fixture

APP = "multidb.contrib.prometheus"
ROOT = Path(__file__).resolve().parent.parent
#: Probes of the SQLite databases need access to them.
db = pytest.mark.django_db(databases=["default", "replica1", "replica2"])


def routed(
    outcome: str = "replica",
    token_check: str | None = None,
    position_queries: int = 0,
) -> None:
    """A request ending as the middleware ends it, while something counts."""
    if tallies.counting:
        tally(outcome, token_check, position_queries)


def test_every_outcome_token_check_and_position_query_series_starts_at_zero(registry):
    samples = scrape(registry)

    for outcome in OUTCOMES:
        assert (
            value(samples, "multidb_requests_total", outcome=outcome, group="default")
            == 0
        )
    for result in ("cached", "queried", "behind"):
        assert (
            value(samples, "multidb_token_checks_total", result=result, group="default")
            == 0
        )
    assert value(samples, "multidb_position_queries_total", group="default") == 0


def test_each_routed_request_counts_its_outcome_token_check_and_position_queries(
    registry,
):
    routed("replica")
    routed("replica", token_check="cached")
    routed("primary_token_waiting", token_check="behind")
    routed("primary_forced", position_queries=1)
    routed("replica", token_check="queried", position_queries=2)

    samples = scrape(registry)

    requests = series(samples, "multidb_requests_total", "outcome", "group")
    assert {key: n for key, n in requests.items() if n} == {
        ("replica", "default"): 3,
        ("primary_token_waiting", "default"): 1,
        ("primary_forced", "default"): 1,
    }
    checks_by_result = series(samples, "multidb_token_checks_total", "result", "group")
    assert checks_by_result == {
        ("cached", "default"): 1, ("queried", "default"): 1, ("behind", "default"): 1,
    }  # fmt: skip
    assert value(samples, "multidb_position_queries_total", group="default") == 3


def test_a_disconnected_metrics_object_counts_nothing(registry):
    metrics = Metrics(None)
    metrics.connect()
    metrics.connect()  # once only
    routed("primary_forced")
    metrics.unregister()  # on no registry: disconnects only
    routed("replica")
    metrics.disconnect()  # again: nothing more

    assert metrics.requests.counts() == {("outcome", "primary_forced"): 1}
    requests = series(scrape(registry), "multidb_requests_total", "outcome", "group")
    assert {key: n for key, n in requests.items() if n} == {
        ("replica", "default"): 1,
        ("primary_forced", "default"): 1,
    }


def test_a_collector_started_twice_counts_once_and_stopped_twice_keeps_its_counts():
    collector = prometheus_metrics.RoutingCollector()
    collector.stop()  # never started: nothing to keep
    collector.start()
    collector.start()
    routed("replica")
    collector.stop()
    collector.stop()

    assert collector.counts() == {("outcome", "replica"): 1}
    assert not tallies.counting


def test_counting_stops_when_every_metrics_object_has_disconnected():
    first, second = Metrics(None), Metrics(None)
    first.connect()
    second.connect()
    first.disconnect()
    assert tallies.counting

    second.disconnect()

    assert not tallies.counting


@db
def test_requests_through_the_middleware_count_and_still_reach_the_signal(registry):
    heard = []

    def hear(sender, **kwargs):
        heard.append(kwargs["outcome"])

    signals.request_routed.connect(hear)
    try:
        with override_settings(
            ROOT_URLCONF="tests.urls",
            MIDDLEWARE=["multidb.middleware.PinningRouterMiddleware"],
        ):
            Client().get("/read/")
            Client().post("/write-then-read/")
    finally:
        signals.request_routed.disconnect(hear)

    requests = series(scrape(registry), "multidb_requests_total", "outcome", "group")
    assert {key: n for key, n in requests.items() if n} == {
        ("replica", "default"): 1,
        ("primary_pinned_time", "default"): 1,
    }
    assert heard == ["replica", "primary_pinned_time"]


def test_before_any_probe_every_replica_is_unknown_and_usable_and_nothing_is_timed(
    registry,
):
    samples = scrape(registry)

    for alias in ("replica1", "replica2"):
        for state in STATES:
            expected = 1 if state == "unknown" else 0
            assert (
                value(
                    samples,
                    "multidb_replica_state",
                    alias=alias,
                    group="default",
                    state=state,
                )
                == expected
            )
    assert value(samples, "multidb_usable_replicas", group="default") == 2
    assert not {"multidb_probe_age_seconds", "multidb_replica_lag_seconds"} & names(
        samples
    )


@db
def test_after_a_probe_replicas_are_ok_with_a_probe_age_and_sqlite_reports_no_lag(
    registry,
):
    health.registry.probe()

    samples = scrape(registry)

    for alias in ("default", "replica1", "replica2"):
        age = value(samples, "multidb_probe_age_seconds", alias=alias, group="default")
        assert age is not None and 0 <= age < 60
    for alias in ("replica1", "replica2"):
        assert (
            value(
                samples,
                "multidb_replica_state",
                alias=alias,
                group="default",
                state="ok",
            )
            == 1
        )
        assert (
            value(
                samples,
                "multidb_replica_state",
                alias=alias,
                group="default",
                state="unknown",
            )
            == 0
        )
    assert not {"multidb_replica_lag_seconds", "multidb_replica_lag_bytes"} & names(
        samples
    )


@db
@override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=60)
def test_a_replica_reported_down_shows_in_the_state_gauge_and_the_change_counter(
    registry,
):
    health.registry.probe()
    health.registry.report_failure("replica1", "a request failed on it")

    samples = scrape(registry)

    assert (
        value(
            samples,
            "multidb_replica_state",
            alias="replica1",
            group="default",
            state="down",
        )
        == 1
    )
    assert (
        value(
            samples,
            "multidb_replica_state",
            alias="replica1",
            group="default",
            state="ok",
        )
        == 0
    )
    assert value(samples, "multidb_usable_replicas", group="default") == 1
    changes = series(samples, "multidb_replica_state_changes_total", "to")
    assert changes == {("down",): 1}
    assert (
        value(
            samples,
            "multidb_replica_state_changes_total",
            alias="replica1",
            to="down",
            group="default",
        )
        == 1
    )


def test_replica_up_and_lagging_signals_count_as_state_changes(registry):
    for signal in (signals.replica_lagging, signals.replica_up):
        signal.send(sender=None, alias="replica2", reason="test")

    samples = scrape(registry)

    for to in ("lagging", "up"):
        assert (
            value(
                samples,
                "multidb_replica_state_changes_total",
                alias="replica2",
                to=to,
                group="default",
            )
            == 1
        )


@override_settings(MULTIDB_REPLICA_GROUPS={"billing": ["billing_r1", "billing_r2"]})
def test_with_replica_groups_every_series_is_labelled_with_its_replicas_group(
    registry,
):
    signals.replica_down.send(sender=None, alias="billing_r1", reason="test")

    samples = scrape(registry)

    assert value(samples, "multidb_usable_replicas", group="default") == 2
    assert value(samples, "multidb_usable_replicas", group="billing") == 2
    assert (
        value(
            samples,
            "multidb_replica_state",
            alias="billing_r2",
            group="billing",
            state="unknown",
        )
        == 1
    )
    assert (
        value(
            samples,
            "multidb_replica_state_changes_total",
            alias="billing_r1",
            to="down",
            group="billing",
        )
        == 1
    )


@override_settings(MULTIDB_REPLICA_GROUPS={"billing": []})
def test_a_group_without_replicas_has_zero_usable_replicas(registry):
    samples = scrape(registry)

    assert value(samples, "multidb_usable_replicas", group="billing") == 0
    assert value(samples, "multidb_usable_replicas", group="default") == 2


def test_the_collector_describes_its_families_without_reading_the_registry(registry):
    collector = prometheus_metrics.HealthCollector()

    described = [family.name for family in collector.describe()]

    assert described == [
        "multidb_replica_state",
        "multidb_replica_lag_seconds",
        "multidb_replica_lag_bytes",
        "multidb_usable_replicas",
        "multidb_probe_age_seconds",
    ]
    assert all(not family.samples for family in collector.describe())


# --- the app, its check, and the default registry ---------------------------

try:
    from django_prometheus.exports import ExportToDjangoView
except ImportError:  # tox leaves it out where it does not support Django
    ExportToDjangoView = None

#: This module is the URLconf of the django-prometheus test.
urlpatterns = [path("metrics/", ExportToDjangoView)] if ExportToDjangoView else []


@pytest.fixture
def installed_app() -> Iterator[None]:
    """The app in INSTALLED_APPS (its ``ready()`` runs), undone afterwards."""
    from django.conf import settings

    try:
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, APP]):
            yield
    finally:
        prometheus_metrics.uninstall()


def test_the_app_registers_the_metrics_on_the_default_registry_once(installed_app):
    from django.apps import apps

    apps.get_app_config("multidb_prometheus").ready()  # again: still once
    routed("primary_atomic")

    samples = scrape(REGISTRY)

    assert (
        value(
            samples, "multidb_requests_total", outcome="primary_atomic", group="default"
        )
        == 1
    )
    assert "multidb_usable_replicas" in names(samples)
    assert check_prometheus_client() == []
    assert check_prometheus_client in checks.registry.registry.get_checks()


def test_uninstall_takes_the_metrics_off_the_default_registry(installed_app):
    prometheus_metrics.uninstall()
    prometheus_metrics.uninstall()

    assert not any(name.startswith("multidb_") for name in names(scrape(REGISTRY)))
    assert not any(
        getattr(receiver, "__self__", None).__class__ is Metrics
        for _, receiver in signals.request_routed.receivers
    )


@override_settings(
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "multidb.middleware.PinningRouterMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ],
)
@pytest.mark.skipif(
    ExportToDjangoView is None, reason="django-prometheus does not support this Django"
)
def test_django_prometheus_metrics_view_exports_ours_beside_its_own():
    from django.conf import settings

    try:
        apps_ = [*settings.INSTALLED_APPS, "django_prometheus", APP]
        with override_settings(INSTALLED_APPS=apps_):
            client = Client()
            client.get("/metrics/")
            response = client.get("/metrics/")
    finally:
        prometheus_metrics.uninstall()

    assert response.status_code == 200
    families = {
        family.name
        for family in text_string_to_metric_families(response.content.decode())
    }
    assert {
        "multidb_requests", "multidb_token_checks", "multidb_position_queries",
        "multidb_replica_state_changes", "multidb_replica_state",
        "multidb_usable_replicas",
    } <= families  # fmt: skip
    assert "django_http_requests_before_middlewares" in families


def test_the_check_says_prometheus_client_is_missing_and_the_app_starts_without(
    monkeypatch,
):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)

    (error,) = check_prometheus_client()
    from multidb.contrib.prometheus.apps import PrometheusConfig

    PrometheusConfig.ready(PrometheusConfig.__new__(PrometheusConfig))

    assert error.id == "multidb.E034"
    assert "prometheus_client is not installed" in error.msg
    assert "django-replica-router[prometheus]" in error.hint
    assert prometheus_metrics._installed is None


# --- prometheus_client's multiprocess mode -----------------------------------


def test_in_multiprocess_mode_the_request_counters_are_files_fed_by_the_signal(
    monkeypatch,
):
    monkeypatch.setattr(prometheus_metrics, "multiprocess", lambda: True)
    receivers = len(signals.request_routed.receivers)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.connect()
    try:
        signals.request_routed.send(
            sender=PinningRouterMiddleware, outcome="replica", read_alias="replica1",
            token_check="queried", position_queries=1, group="default",
        )  # fmt: skip
        signals.request_routed.send(
            sender=PinningRouterMiddleware, outcome="primary_forced",
            read_alias="default", token_check=None, position_queries=0,
            group="default",
        )  # fmt: skip
        samples = scrape(registry)
    finally:
        metrics.unregister()

    assert isinstance(metrics.requests, prometheus_metrics.FileCounters)
    assert series(samples, "multidb_requests_total", "outcome", "group") == {
        **{(outcome, "default"): 0 for outcome in OUTCOMES},
        ("replica", "default"): 1,
        ("primary_forced", "default"): 1,
    }
    assert (
        value(samples, "multidb_token_checks_total", result="queried", group="default")
        == 1
    )
    assert value(samples, "multidb_position_queries_total", group="default") == 1
    assert not any(name.startswith("multidb_") for name in names(scrape(registry)))
    assert len(signals.request_routed.receivers) == receivers


#: A worker of a site in multiprocess mode: the app installed, a trivial view,
#: GET twice and POST once through the middleware.
WORKER = """
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("", lambda request: HttpResponse(b"ok"))]
sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
settings.configure(
    DATABASES={"default": sqlite, "replica": sqlite},
    DATABASE_ROUTERS=["multidb.PinningReplicaRouter"],
    REPLICA_DATABASES=["replica"],
    INSTALLED_APPS=["multidb", "multidb.contrib.prometheus"],
    MIDDLEWARE=["multidb.middleware.PinningRouterMiddleware"],
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MULTIDB_HEALTH_CHECK_INTERVAL=0,
)
django.setup()
from django.test import Client

client = Client()
client.get("/")
client.get("/")
client.post("/")
"""


def test_in_multiprocess_mode_every_workers_requests_are_counted(tmp_path):
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", WORKER],
            cwd=ROOT,
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": os.environ["PATH"]},
            check=True,
            timeout=60,
        )
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))

    requests = series(scrape(registry), "multidb_requests_total", "outcome", "group")

    assert {key: n for key, n in requests.items() if n} == {
        ("replica", "default"): 4,
        ("primary_pinned_time", "default"): 2,
    }
