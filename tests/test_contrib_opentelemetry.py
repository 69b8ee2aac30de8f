"""``multidb.contrib.opentelemetry`` in process, on SQLite, with the SDK's
in-memory exporter: the request span's attributes (the ``request_routed``
signal sent here as the middleware sends it), the probe round's span, the
app and its check.

Probe spans of a real cluster with a replica stopped: tests/postgres/
test_opentelemetry.py; attributes of real requests through the middleware:
tests/postgres/test_opentelemetry_requests.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from django.core import checks
from django.test import override_settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from multidb import health, signals
from multidb.contrib.opentelemetry import tracing
from multidb.contrib.opentelemetry.checks import check_opentelemetry_api
from multidb.middleware import PinningRouterMiddleware

APP = "multidb.contrib.opentelemetry"
db = pytest.mark.django_db(databases=["default", "replica1", "replica2"])


@pytest.fixture
def provider() -> TracerProvider:
    provider = TracerProvider()
    provider.exporter = InMemorySpanExporter()  # type: ignore[attr-defined]
    provider.add_span_processor(SimpleSpanProcessor(provider.exporter))
    return provider


@pytest.fixture
def exporter(provider) -> Iterator[InMemorySpanExporter]:
    """The spans of ``provider``, where the probe spans go too."""
    tracing.install(tracer_provider=provider)
    try:
        yield provider.exporter
    finally:
        tracing.uninstall()


def routed(**kwargs) -> None:
    arguments = {
        "outcome": "replica",
        "read_alias": "replica2",
        "token_check": None,
        "position_queries": 0,
        "group": "default",
        **kwargs,
    }
    signals.request_routed.send(sender=PinningRouterMiddleware, **arguments)


def test_the_request_span_gets_the_read_alias_and_the_outcome(provider, exporter):
    with provider.get_tracer("test").start_as_current_span("GET /find/"):
        routed()

    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes) == {
        "multidb.read_alias": "replica2",
        "multidb.outcome": "replica",
    }


def test_a_checked_token_adds_how_it_was_checked(provider, exporter):
    with provider.get_tracer("test").start_as_current_span("GET /find/"):
        routed(
            outcome="primary_token_waiting", read_alias="default", token_check="behind"
        )

    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes) == {
        "multidb.read_alias": "default",
        "multidb.outcome": "primary_token_waiting",
        "multidb.token_check": "behind",
    }


def test_a_request_that_chose_no_replica_sets_no_read_alias(provider, exporter):
    with provider.get_tracer("test").start_as_current_span("GET /"):
        routed(read_alias="")

    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes) == {"multidb.outcome": "replica"}


def test_without_a_recording_span_a_routed_request_costs_a_check_and_records_nothing(
    exporter,
):
    routed()

    assert exporter.get_finished_spans() == ()


@db
def test_each_probe_round_is_a_span_with_every_databases_status(exporter):
    statuses = health.registry.probe()

    (span,) = exporter.get_finished_spans()
    assert span.name == "multidb.probe"
    assert span.start_time <= span.end_time
    assert dict(span.attributes) == {
        f"multidb.db.{status.alias}.{field}": value
        for status in statuses
        for field, value in (("role", status.role), ("state", status.state))
    }
    assert span.attributes["multidb.db.replica1.role"] == "replica"
    assert span.attributes["multidb.db.default.state"] == "ok"


@db
def test_a_failing_probe_observer_fails_neither_the_round_nor_the_span(
    exporter, caplog
):
    def broken(**kwargs):
        raise RuntimeError("observer bug")

    signals.probe_finished.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, "django.dispatch"):
            statuses = health.registry.probe()
    finally:
        signals.probe_finished.disconnect(broken)

    assert statuses[0].alias == "default"
    assert [span.name for span in exporter.get_finished_spans()] == ["multidb.probe"]
    assert "observer bug" in caplog.text


@db
@override_settings(REPLICA_DATABASES=["replica1", "ghost"])
def test_a_down_database_reports_its_reason_and_uninstall_stops_the_spans(exporter):
    health.registry.probe()
    tracing.uninstall()
    health.registry.probe()

    (span,) = exporter.get_finished_spans()
    assert span.attributes["multidb.db.ghost.state"] == "down"
    assert span.attributes["multidb.db.ghost.reason"] == "KeyError: 'ghost'"
    assert "multidb.db.ghost.lag_seconds" not in span.attributes


def test_the_app_connects_the_receivers_to_the_global_tracer_provider():
    from django.conf import settings

    try:
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, APP]):
            connected = signals.probe_finished.has_listeners()
            annotated = signals.request_routed.has_listeners()
        assert check_opentelemetry_api in checks.registry.registry.get_checks()
        assert check_opentelemetry_api() == []
    finally:
        tracing.uninstall()

    assert (connected, annotated) == (True, True)
    assert not signals.probe_finished.has_listeners()


@pytest.mark.parametrize("missing", ["opentelemetry", "opentelemetry.trace"])
def test_the_check_says_opentelemetry_is_missing_and_the_app_starts_without(
    monkeypatch, missing
):
    # As if never installed: neither the namespace nor the API can be imported.
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    monkeypatch.setitem(sys.modules, missing, None)
    from multidb.contrib.opentelemetry.apps import OpenTelemetryConfig

    (error,) = check_opentelemetry_api()
    OpenTelemetryConfig.ready(OpenTelemetryConfig.__new__(OpenTelemetryConfig))

    assert error.id == "multidb.E035"
    assert "opentelemetry-api is not installed" in error.msg
    assert "django-replica-router[opentelemetry]" in error.hint
    assert not signals.probe_finished.has_listeners()
