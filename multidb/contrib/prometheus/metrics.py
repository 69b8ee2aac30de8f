"""The metrics, on a ``prometheus_client`` registry.

The request counters are read from ``multidb.tallies`` when they are
scraped (``RoutingCollector``): the middleware adds to a dict of its
thread's at each request's end, with no lock and no signal.  Under
``prometheus_client``'s multiprocess mode, which exports only the metrics it
keeps in its files, they are ``prometheus_client`` counters fed by
``request_routed`` instead (``FileCounters``).  The state-change counter is
fed by ``replica_down``/``replica_up``/``replica_lagging`` (the prober).
Gauges are read from the health registry when they are scraped
(``HealthCollector``): nothing is updated between scrapes.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ... import groups, health, signals, tallies
from ...conf import DEFAULT_DB_ALIAS
from ...explanation import Outcome, TokenCheck

__all__ = [
    "OUTCOMES",
    "STATES",
    "FileCounters",
    "HealthCollector",
    "Metrics",
    "RoutingCollector",
    "install",
    "multiprocess",
    "uninstall",
]

#: ``request_routed``'s outcomes: where a request's reads went, and why.
OUTCOMES: tuple[str, ...] = get_args(Outcome)
#: ``request_routed``'s token checks.
TOKEN_CHECKS: tuple[str, ...] = get_args(TokenCheck)
#: A replica's states, each a label value of ``multidb_replica_state``.
STATES = (health.OK, health.DOWN, health.PROMOTED, health.LAGGING, health.UNKNOWN)

_CHANGES = (
    (signals.replica_down, "down"),
    (signals.replica_up, "up"),
    (signals.replica_lagging, "lagging"),
)

#: The request counters: (name, help, labels).
_REQUESTS = (
    "multidb_requests",
    "Requests by where their reads went (outcome) and why.",
    ["outcome", "group"],
)
_TOKEN_CHECKS = (
    "multidb_token_checks",
    "Pin tokens checked against the replicas' positions, by result.",
    ["result", "group"],
)
_POSITION_QUERIES = (
    "multidb_position_queries",
    "Queries of the primary's position made for the pin cookie.",
    ["group"],
)
_COUNTER_FAMILIES = (_REQUESTS, _TOKEN_CHECKS, _POSITION_QUERIES)


def multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` was set when it was imported)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """The package's counters and gauges, registered on ``registry``; the
    counters count from ``connect()`` to ``disconnect()``."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        self.requests: RoutingCollector | FileCounters = (
            FileCounters() if multiprocess() else RoutingCollector()
        )
        self.state_changes = Counter(
            "multidb_replica_state_changes",
            "Replica state changes seen by the health prober.",
            ["alias", "to", "group"],
            registry=registry,
        )
        self.collector = HealthCollector()
        if registry is not None:
            self.requests.register(registry)
            registry.register(self.collector)
        self._receivers: list[tuple[Any, Any]] = []

    def _state_change(self, to: str) -> Any:
        def count(sender: Any, alias: str, **kwargs: Any) -> None:
            group = groups.primary_of(alias) or DEFAULT_DB_ALIAS
            self.state_changes.labels(alias, to, group).inc()

        return count

    def connect(self) -> None:
        """Count from now on."""
        if self._receivers:
            return
        self._receivers = [(signal, self._state_change(to)) for signal, to in _CHANGES]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)
        self.requests.start()

    def disconnect(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        if self._receivers:
            self.requests.stop()
        self._receivers = []

    def unregister(self) -> None:
        """Disconnect, and take every metric off the registry."""
        self.disconnect()
        if self.registry is not None:
            self.requests.unregister(self.registry)
            for metric in (self.state_changes, self.collector):
                self.registry.unregister(metric)


class RoutingCollector(Collector):
    """The request counters, summed from ``multidb.tallies`` at each scrape:
    what the requests that ended while it counted (``start()`` to
    ``stop()``) added."""

    def __init__(self) -> None:
        self._counted: Tally[tallies.Key] = Tally()
        self._since: Tally[tallies.Key] | None = None

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def unregister(self, registry: CollectorRegistry) -> None:
        registry.unregister(self)

    def start(self) -> None:
        if self._since is None:
            tallies.start()
            self._since = tallies.totals()

    def stop(self) -> None:
        if self._since is not None:
            self._counted = self.counts()
            self._since = None
            tallies.stop()

    def counts(self) -> Tally[tallies.Key]:
        """What it counted, by ``multidb.tallies.Key``."""
        counted = Tally(self._counted)
        if self._since is not None:
            now = tallies.totals()
            now.subtract(self._since)
            counted.update(now)
        return +counted  # without the keys that did not move

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [_counter(*family) for family in _COUNTER_FAMILIES]

    def collect(self) -> Iterable[CounterMetricFamily]:
        # Known series start at 0, so that rate() sees their first increase.
        requests: Tally[tuple[str, ...]] = Tally(
            {(outcome, DEFAULT_DB_ALIAS): 0 for outcome in OUTCOMES}
        )
        checks: Tally[tuple[str, ...]] = Tally(
            {(result, DEFAULT_DB_ALIAS): 0 for result in TOKEN_CHECKS}
        )
        queries: Tally[tuple[str, ...]] = Tally({(DEFAULT_DB_ALIAS,): 0})
        # The middleware counts ``default``'s group.
        by_kind = {"outcome": requests, "token_check": checks}
        for (kind, name), n in self.counts().items():
            if kind in by_kind:
                by_kind[kind][name, DEFAULT_DB_ALIAS] += n
            else:
                queries[DEFAULT_DB_ALIAS,] += n
        found = []
        for family, counts in zip(
            _COUNTER_FAMILIES, (requests, checks, queries), strict=True
        ):
            metric = _counter(*family)
            for labels, n in counts.items():
                metric.add_metric(labels, n)
            found.append(metric)
        return found


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


class FileCounters:
    """The request counters as ``prometheus_client`` counters, fed by
    ``request_routed``: in multiprocess mode, where only they are exported
    (at a signal's cost per request)."""

    def __init__(self) -> None:
        self.requests, self.token_checks, self.position_queries = (
            Counter(name, doc, labels, registry=None)
            for name, doc, labels in _COUNTER_FAMILIES
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome, DEFAULT_DB_ALIAS)
        for result in TOKEN_CHECKS:
            self.token_checks.labels(result, DEFAULT_DB_ALIAS)
        self.position_queries.labels(DEFAULT_DB_ALIAS)

    def register(self, registry: CollectorRegistry) -> None:
        for counter in (self.requests, self.token_checks, self.position_queries):
            registry.register(counter)

    def unregister(self, registry: CollectorRegistry) -> None:
        for counter in (self.requests, self.token_checks, self.position_queries):
            registry.unregister(counter)

    def start(self) -> None:
        signals.request_routed.connect(self.count, weak=False)

    def stop(self) -> None:
        signals.request_routed.disconnect(self.count)

    def count(
        self,
        sender: Any,
        outcome: str,
        token_check: str | None = None,
        position_queries: int = 0,
        group: str = DEFAULT_DB_ALIAS,
        **kwargs: Any,
    ) -> None:
        """``request_routed``."""
        self.requests.labels(outcome, group).inc()
        if token_check is not None:
            self.token_checks.labels(token_check, group).inc()
        if position_queries:
            self.position_queries.labels(group).inc(position_queries)


class HealthCollector(Collector):
    """Gauges read from the health registry at each scrape."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return _families().values()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = _families()
        now = datetime.now(timezone.utc)
        usable: dict[str, int] = {}
        # health.registry, not a name imported once: a forked child gets a
        # registry of its own.
        for status in health.registry.statuses():
            alias, group = status.alias, status.group
            if status.last_checked is not None:
                age = max(0.0, (now - status.last_checked).total_seconds())
                families["age"].add_metric([alias, group], age)
            if status.role != "replica":
                usable.setdefault(alias, 0)
                continue
            usable[group] = usable.get(group, 0) + status.usable
            for state in STATES:
                families["state"].add_metric(
                    [alias, group, state], 1.0 if status.state == state else 0.0
                )
            if status.lag_seconds is not None:
                families["seconds"].add_metric([alias, group], status.lag_seconds)
            if status.lag_bytes is not None:
                families["bytes"].add_metric([alias, group], status.lag_bytes)
        for group, count in usable.items():
            families["usable"].add_metric([group], count)
        return families.values()


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "state": GaugeMetricFamily(
            "multidb_replica_state",
            "1 for each replica's current state (ok, down, promoted, lagging, "
            "unknown), 0 for the others.",
            labels=["alias", "group", "state"],
        ),
        "seconds": GaugeMetricFamily(
            "multidb_replica_lag_seconds",
            "Seconds each replica is behind its primary, as last probed.",
            labels=["alias", "group"],
        ),
        "bytes": GaugeMetricFamily(
            "multidb_replica_lag_bytes",
            "Bytes of WAL each replica has still to replay, as last probed.",
            labels=["alias", "group"],
        ),
        "usable": GaugeMetricFamily(
            "multidb_usable_replicas",
            "Replicas that can take reads, per replica group.",
            labels=["group"],
        ),
        "age": GaugeMetricFamily(
            "multidb_probe_age_seconds",
            "Seconds since each database's status was last recorded.",
            labels=["alias", "group"],
        ),
    }


#: What ``install()`` set up, for ``uninstall()``.
_installed: Metrics | None = None


def install(registry: CollectorRegistry = REGISTRY) -> Metrics:
    """Register the metrics on ``registry`` and connect their receivers
    (once: ``AppConfig.ready()`` may run more than once)."""
    global _installed
    if _installed is None:
        metrics = Metrics(registry)
        metrics.connect()
        _installed = metrics
    return _installed


def uninstall() -> None:
    """Undo ``install()``."""
    global _installed
    if _installed is not None:
        _installed.unregister()
        _installed = None
