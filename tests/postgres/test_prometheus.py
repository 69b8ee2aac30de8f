"""``multidb.contrib.prometheus``'s gauges and state-change counter against a
real primary and two streaming replicas: a replica stopped and restarted
while the prober runs, and a paused replica falling behind, each scraped
through the real exposition format (``generate_latest`` and
``make_wsgi_app``) and parsed with ``prometheus_client``'s parser.

The request counters, fed by the middleware: test_prometheus_requests.py.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from multidb import health
from tests.app.models import Item
from tests.scraping import registry, scrape, scrape_wsgi, series, value

__all__ = ["registry"]  # the fixture

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def state_of(samples, alias: str) -> str | None:
    """The state the one-hot ``multidb_replica_state`` gauge says ``alias`` is in."""
    states = series(samples, "multidb_replica_state", "alias", "state")
    (current,) = [state for (name, state), on in states.items() if name == alias and on]
    return current


def scraped_when(scraper, registry, alias: str, state: str):
    """A predicate: a scrape, once ``alias`` is in ``state`` in it."""

    def scraped():
        samples = scraper(registry)
        return samples if state_of(samples, alias) == state else None

    return scraped


@pytest.mark.usefixtures("route_via")
def test_a_stopped_replica_shows_down_then_up_in_the_state_gauge_and_change_counter(
    registry, faults, wait_until
):
    with override_settings(MULTIDB_HEALTH_CHECK_INTERVAL=0.2):
        health.ensure_started()
        wait_until(lambda: state_of(scrape(registry), "replica1") == "ok")
        faults.stop("replica1")
        down = wait_until(
            scraped_when(scrape_wsgi, registry, "replica1", "down"),
            what="the prober to find replica1 down",
        )
        faults.start("replica1")
        up = wait_until(
            scraped_when(scrape, registry, "replica1", "ok"),
            timeout=30,
            what="the prober to find replica1 back",
        )

    assert state_of(down, "replica2") == "ok"
    assert value(down, "multidb_usable_replicas", group="default") == 1
    assert value(up, "multidb_usable_replicas", group="default") == 2
    changes = series(up, "multidb_replica_state_changes_total", "alias", "to", "group")
    assert changes == {
        ("replica1", "down", "default"): 1,
        ("replica1", "up", "default"): 1,
    }
    for samples in (down, up):
        for alias in ("default", "replica1", "replica2"):
            # The prober probes every 0.2 s; a generous bound.
            assert (
                0
                <= value(
                    samples, "multidb_probe_age_seconds", alias=alias, group="default"
                )
                < 10
            )
    assert (
        value(down, "multidb_replica_lag_seconds", alias="replica1", group="default")
        is None
    )
    assert (
        value(up, "multidb_replica_lag_bytes", alias="replica2", group="default")
        is not None
    )


@override_settings(MULTIDB_REPLICA_MAX_LAG=None, MULTIDB_REPLICA_MAX_LAG_BYTES=None)
def test_a_paused_replicas_lag_gauges_grow_until_it_replays(
    registry, pg_cluster, faults, wait_until
):
    health.registry.probe()
    faults.pause("replica1")

    def behind(than: float):
        def check():
            Item.objects.create(name="keeps the primary writing")
            pg_cluster.wait_caught_up(skip_paused=True)  # replica2 keeps up
            health.registry.probe()
            samples = scrape(registry)
            seconds = value(
                samples,
                "multidb_replica_lag_seconds",
                alias="replica1",
                group="default",
            )
            return samples if seconds is not None and seconds > than else None

        return check

    first = wait_until(behind(0.0), what="replica1 to fall behind")
    first_seconds = value(
        first, "multidb_replica_lag_seconds", alias="replica1", group="default"
    )
    later = wait_until(behind(first_seconds), what="replica1's lag to grow")
    faults.resume("replica1")

    def replayed():
        health.registry.probe()
        samples = scrape(registry)
        caught_up = (
            value(
                samples, "multidb_replica_lag_bytes", alias="replica1", group="default"
            )
            == 0
        )
        return samples if caught_up else None

    after = wait_until(replayed, what="replica1 to replay")

    assert (
        value(first, "multidb_replica_lag_bytes", alias="replica1", group="default") > 0
    )
    assert value(
        later, "multidb_replica_lag_bytes", alias="replica1", group="default"
    ) > value(first, "multidb_replica_lag_bytes", alias="replica1", group="default")
    assert state_of(later, "replica1") == "ok"  # no lag limit: still in rotation
    assert (
        value(after, "multidb_replica_lag_seconds", alias="replica1", group="default")
        == 0
    )
