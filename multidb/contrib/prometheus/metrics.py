"""The metrics, on a ``prometheus_client`` registry.

Counters are fed by signals: ``request_routed`` (the middleware, once per
request) and ``replica_down``/``replica_up``/``replica_lagging`` (the
prober).  Gauges are read from the health registry when they are scraped
(``HealthCollector``): nothing is updated between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ... import groups, health, signals
from ...conf import DEFAULT_DB_ALIAS
from ...explanation import Outcome, TokenCheck

__all__ = ["OUTCOMES", "STATES", "HealthCollector", "Metrics", "install", "uninstall"]

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


class Metrics:
    """The package's counters and gauges, registered on ``registry``, and
    the signal receivers that feed the counters (``connect()``)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter(
            "multidb_requests",
            "Requests by where their reads went (outcome) and why.",
            ["outcome", "group"],
            registry=registry,
        )
        self.token_checks = Counter(
            "multidb_token_checks",
            "Pin tokens checked against the replicas' positions, by result.",
            ["result", "group"],
            registry=registry,
        )
        self.position_queries = Counter(
            "multidb_position_queries",
            "Queries of the primary's position made for the pin cookie.",
            ["group"],
            registry=registry,
        )
        self.state_changes = Counter(
            "multidb_replica_state_changes",
            "Replica state changes seen by the health prober.",
            ["alias", "to", "group"],
            registry=registry,
        )
        self.collector = HealthCollector()
        if registry is not None:
            registry.register(self.collector)
        # Known series start at 0, so that rate() sees their first increase.
        for outcome in OUTCOMES:
            self.requests.labels(outcome, DEFAULT_DB_ALIAS)
        for result in TOKEN_CHECKS:
            self.token_checks.labels(result, DEFAULT_DB_ALIAS)
        self.position_queries.labels(DEFAULT_DB_ALIAS)
        # labels() takes a lock and builds a key: once per label values.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._receivers: list[tuple[Any, Any]] = []

    def _child(self, counter: Counter, *values: str) -> Any:
        key = (counter, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*values)
        return child

    # --- receivers ---------------------------------------------------------

    def count_request(
        self,
        sender: Any,
        outcome: str,
        token_check: str | None = None,
        position_queries: int = 0,
        group: str = DEFAULT_DB_ALIAS,
        **kwargs: Any,
    ) -> None:
        """``request_routed``."""
        self._child(self.requests, outcome, group).inc()
        if token_check is not None:
            self._child(self.token_checks, token_check, group).inc()
        if position_queries:
            self._child(self.position_queries, group).inc(position_queries)

    def _state_change(self, to: str) -> Any:
        def count(sender: Any, alias: str, **kwargs: Any) -> None:
            group = groups.primary_of(alias) or DEFAULT_DB_ALIAS
            self.state_changes.labels(alias, to, group).inc()

        return count

    # --- wiring ------------------------------------------------------------

    def connect(self) -> None:
        """Feed the counters from the package's signals."""
        if self._receivers:
            return
        self._receivers = [(signals.request_routed, self.count_request)]
        self._receivers += [(signal, self._state_change(to)) for signal, to in _CHANGES]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def disconnect(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers = []

    def unregister(self) -> None:
        """Disconnect, and take every metric off the registry."""
        self.disconnect()
        if self.registry is not None:
            for metric in (
                self.requests,
                self.token_checks,
                self.position_queries,
                self.state_changes,
                self.collector,
            ):
                self.registry.unregister(metric)


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
