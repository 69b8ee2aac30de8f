"""``multidb.contrib.opentelemetry``'s probe spans against a real primary and
two streaming replicas, with the SDK's in-memory exporter: every database's
status in the span, a stopped replica's reason, and the prober's own rounds.

Attributes of real requests through the middleware:
test_opentelemetry_requests.py.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from multidb import health
from multidb.contrib.opentelemetry import tracing
from tests.test_contrib_opentelemetry import exporter, provider

__all__ = ["exporter", "provider"]  # the fixtures

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.usefixtures("route_via"),
]


def test_a_probe_span_carries_each_databases_state_position_and_lag(exporter):
    statuses = {status.alias: status for status in health.registry.probe()}

    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes)
    assert span.name == "multidb.probe"
    assert attributes["multidb.db.default.role"] == "primary"
    assert attributes["multidb.db.default.state"] == "ok"
    assert (
        attributes["multidb.db.default.replay_position"]
        == statuses["default"].replay_position
    )
    for alias in ("replica1", "replica2"):
        status = statuses[alias]
        assert attributes[f"multidb.db.{alias}.state"] == "ok"
        assert attributes[f"multidb.db.{alias}.lag_bytes"] == status.lag_bytes
        assert attributes[f"multidb.db.{alias}.lag_seconds"] == status.lag_seconds
        assert (
            attributes[f"multidb.db.{alias}.replay_position"] == status.replay_position
        )
    assert not any(key.endswith(".reason") for key in attributes)


def test_the_probers_rounds_are_spans_and_a_stopped_replica_is_down_with_its_reason(
    exporter, faults, wait_until
):
    faults.stop("replica2")

    def down_span():
        for span in exporter.get_finished_spans():
            if span.attributes.get("multidb.db.replica2.state") == "down":
                return span
        return None

    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.2):
        health.ensure_started()
        span = wait_until(down_span, what="a probe span with replica2 down")
    tracing.uninstall()  # no span after the test's

    assert span.attributes["multidb.db.replica2.reason"]
    assert span.attributes["multidb.db.replica1.state"] == "ok"
    assert "multidb.db.replica2.lag_seconds" not in span.attributes
    assert span.start_time <= span.end_time
