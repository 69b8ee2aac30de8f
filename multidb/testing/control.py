"""Running clusters (:class:`~multidb.testing.cluster.Cluster`), driven by
the ``DATABASES`` aliases of a Django site: the helpers of the pytest plugin
(``multidb.testing.pytest_plugin``).  A site with replica groups has one
cluster per primary; every helper acts on the cluster of the alias it is
given.

::

    control = SiteCluster(cluster, {"default": cluster.primary,
                                    "replica1": cluster.replicas[0]})
    control.point_settings()         # the aliases now lead to those servers
    control.pause("replica1")
    with control.record() as served:
        client.get("/notes/")
    assert served.servers == {"default"}

Importing this module imports neither Django nor psycopg: they are imported
when a method needs them.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidb.testing.cluster import Cluster, Node

__all__ = ["Query", "Served", "SiteCluster"]

#: Connection settings the cluster replaces in an alias's ``DATABASES`` entry;
#: its ``NAME`` stays when it already was a PostgreSQL database.
_CONNECTION_KEYS = ("ENGINE", "HOST", "PORT", "USER", "PASSWORD")
#: ``OPTIONS`` that would lead a connection elsewhere than the cluster's server.
_FOREIGN_OPTIONS = frozenset(
    {"service", "passfile", "sslmode", "sslrootcert", "sslcert", "sslkey", "options"}
)
#: The ``CursorWrapper`` method every statement passes through (``execute``,
#: ``executemany``, with or without ``CursorDebugWrapper``), since Django 2.0.
_HOOK = "_execute_with_wrappers"
_POSTGRES_ENGINES = frozenset(
    {"django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"}
)


@dataclass(frozen=True)
class Query:
    """One statement a Django connection sent, and which server answered it."""

    #: The alias the ORM (or the router) chose.
    alias: str
    #: The alias of the server that answered, found by its
    #: ``inet_server_port()``; ``None`` when it could not be asked.
    server: str | None
    sql: str


@dataclass
class Served:
    """The statements run while :meth:`SiteCluster.record` was open."""

    queries: list[Query] = field(default_factory=list)
    #: The alias of the (first group's) primary.
    primary: str = "default"
    #: Every primary's alias; ``(primary,)`` when not given.
    primaries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.primaries:
            self.primaries = (self.primary,)

    @property
    def servers(self) -> set[str | None]:
        """The aliases of the servers that answered."""
        return {q.server for q in self.queries}

    @property
    def on_primary(self) -> bool:
        """Whether any statement ran on a primary."""
        return any(q.server in self.primaries for q in self.queries)

    @property
    def on_replicas(self) -> set[str]:
        """The replicas that answered any statement."""
        return {
            q.server
            for q in self.queries
            if q.server is not None and q.server not in self.primaries
        }

    def __len__(self) -> int:
        return len(self.queries)


class SiteCluster:
    """Clusters' servers known by the aliases of a Django site.

    ``servers`` maps each alias to its server: a primary's alias (normally
    ``default``) to a cluster's ``primary``, each replica alias to one of
    that cluster's replicas.  ``cluster`` is one cluster, or a sequence of
    them for a site with replica groups (one per primary, the ``default``
    group's first); every cluster's primary is named by exactly one alias.
    Every fault made through it (``pause``, ``stop``, ``delay``,
    ``promote``) is listed until :meth:`restore` undoes it.
    """

    def __init__(
        self, cluster: Cluster | Sequence[Cluster], servers: Mapping[str, Node]
    ) -> None:
        clusters = [cluster] if isinstance(cluster, Cluster) else list(cluster)
        if not clusters:
            raise ValueError("a SiteCluster needs at least one cluster")
        #: Every cluster, the first group's first.
        self.clusters = clusters
        #: The first group's cluster.
        self.cluster = clusters[0]
        self.servers = dict(servers)
        strangers = [
            a
            for a, n in self.servers.items()
            if not any(n.cluster is c for c in clusters)
        ]
        if strangers:
            raise ValueError(
                f"{', '.join(strangers)}: not a server of the given clusters"
            )
        #: Every primary's alias, in the order of ``clusters``.
        self.primaries: list[str] = []
        for each in clusters:
            named = [a for a, n in self.servers.items() if n is each.primary]
            if len(named) != 1:
                raise ValueError("exactly one alias must name the cluster's primary")
            self.primaries.append(named[0])
        #: The alias of the first group's primary.
        self.primary = self.primaries[0]
        self._undo: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        names = ", ".join(f"{a}={n.name}:{n.port}" for a, n in self.servers.items())
        return f"<SiteCluster {names}>"

    @classmethod
    def for_aliases(
        cls, cluster: Cluster, primary: str, replicas: Sequence[str]
    ) -> SiteCluster:
        """``primary`` on the cluster's primary, ``replicas`` in order on its
        replicas (the cluster needs at least as many)."""
        return cls.for_groups({primary: cluster}, {primary: replicas})

    @classmethod
    def for_groups(
        cls, clusters: Mapping[str, Cluster], replicas: Mapping[str, Sequence[str]]
    ) -> SiteCluster:
        """Each primary alias of ``clusters`` on its cluster's primary, and
        its ``replicas[primary]`` in order on that cluster's replicas (each
        cluster needs at least as many)."""
        servers: dict[str, Node] = {}
        for primary, cluster in clusters.items():
            aliases = replicas.get(primary, ())
            if len(aliases) > len(cluster.replicas):
                raise ValueError(
                    f"{len(aliases)} replica aliases but the cluster has "
                    f"{len(cluster.replicas)} replicas"
                )
            servers[primary] = cluster.primary
            servers.update(zip(aliases, cluster.replicas, strict=False))
        return cls(list(clusters.values()), servers)

    @property
    def replicas(self) -> list[str]:
        """The replica aliases of every group, in order."""
        return [a for a in self.servers if a not in self.primaries]

    def replicas_of(self, primary: str) -> list[str]:
        """The replica aliases of ``primary``'s cluster, in order."""
        cluster = self.cluster_of(primary)
        return [a for a in self.replicas if self.servers[a].cluster is cluster]

    def node(self, alias: str) -> Node:
        try:
            return self.servers[alias]
        except KeyError:
            raise ValueError(
                f"{alias!r} is not an alias of the cluster "
                f"(it has {', '.join(self.servers)})"
            ) from None

    def cluster_of(self, alias: str) -> Cluster:
        """The cluster of the server behind ``alias``."""
        return self.node(alias).cluster

    def primary_of(self, alias: str) -> str:
        """The alias of the primary of ``alias``'s cluster."""
        cluster = self.cluster_of(alias)
        return next(a for a in self.primaries if self.servers[a] is cluster.primary)

    def port(self, alias: str) -> int:
        """The port of the server behind ``alias``."""
        return self.node(alias).port

    # --- settings ------------------------------------------------------

    def point_settings(self) -> None:
        """Point each alias's entry in Django's ``connections.settings`` at
        its server, and make each replica a test mirror of its own primary.

        Its other settings stay (``NAME`` only when it named a PostgreSQL
        database, ``OPTIONS`` but for those that lead elsewhere, ``TEST``,
        ``CONN_MAX_AGE``...).  This thread's open connections to those
        aliases are closed and forgotten, so that the next use connects to
        the cluster.
        """
        from django.db import connections

        for alias, node in self.servers.items():
            entry = connections.settings[alias]
            wanted = node.django_settings(name=self._name(entry))
            was_postgres = entry.get("ENGINE") in _POSTGRES_ENGINES
            options = dict(entry.get("OPTIONS") or {}) if was_postgres else {}
            for key in _FOREIGN_OPTIONS:
                options.pop(key, None)
            options.setdefault("connect_timeout", wanted["OPTIONS"]["connect_timeout"])
            entry.update({key: wanted[key] for key in _CONNECTION_KEYS})
            entry["NAME"] = wanted["NAME"]
            entry["OPTIONS"] = options
            test = entry.setdefault("TEST", {})
            test["MIRROR"] = None if alias in self.primaries else self.primary_of(alias)
            if alias in connections:
                connections[alias].close()
                del connections[alias]

    @staticmethod
    def _name(entry: Mapping[str, Any]) -> str:
        name = entry.get("NAME")
        if entry.get("ENGINE") in _POSTGRES_ENGINES and name:
            return str(name)
        return "postgres"

    # --- faults --------------------------------------------------------

    def _replica(self, alias: str) -> Node:
        node = self.node(alias)
        if alias in self.primaries:
            raise ValueError(f"{alias!r} is a primary, not a replica")
        return node

    def _on_restore(self, faulty: Callable[[], bool], undo: Callable[[], Any]) -> None:
        """Have :meth:`restore` call ``undo`` if ``faulty()`` still holds then
        (a fault undone by hand is not undone twice)."""

        def step() -> None:
            if faulty():
                undo()

        self._undo.append(step)

    def pause(self, alias: str) -> Node:
        """Stop replaying WAL on a replica: rows written from now on stay
        invisible there until :meth:`resume`."""
        node = self._replica(alias)
        node.cluster.pause_replay(node)
        self._on_restore(
            lambda: node.paused and node.running, lambda: self.resume(alias)
        )
        return node

    def resume(self, alias: str) -> Node:
        node = self._replica(alias)
        node.cluster.resume_replay(node)
        return node

    def delay(self, alias: str, seconds: float) -> Node:
        """Apply WAL ``seconds`` late on a replica (``0`` clears it)."""
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"a delay is finite and not negative, not {seconds!r}")
        node = self._replica(alias)
        node.cluster.set_apply_delay(node, round(seconds * 1000))
        self._on_restore(
            lambda: bool(node.apply_delay_ms) and node.running,
            lambda: node.cluster.set_apply_delay(node, 0),
        )
        return node

    def stop(self, alias: str) -> Node:
        """Stop the server behind ``alias`` (an immediate shutdown)."""
        node = self.node(alias)
        node.cluster.stop_node(node)
        self._on_restore(lambda: not node.running, lambda: self.start(alias))
        return node

    def start(self, alias: str, keep_connections: bool = False) -> Node:
        """Start a stopped server again (a replica: until it streams), and
        close this thread's connections to it, which died with it, unless
        ``keep_connections`` (to test what heals them)."""
        node = self.node(alias)
        node.cluster.start_node(node)
        if not keep_connections:
            self.forget_connections(alias)
        return node

    def freeze(self, alias: str) -> Node:
        """SIGSTOP the server: it accepts nothing and answers nothing (new
        connections time out) until :meth:`thaw`."""
        node = self.node(alias)
        node.cluster.freeze(node)
        self._on_restore(lambda: node.frozen, lambda: self.thaw(alias))
        return node

    def thaw(self, alias: str) -> Node:
        node = self.node(alias)
        node.cluster.thaw(node)
        return node

    def promote(self, alias: str) -> Node:
        """Promote a replica.  :meth:`restore` makes it a replica again
        (:meth:`rebuild`)."""
        node = self._replica(alias)
        node.cluster.promote(node)
        self._on_restore(lambda: node.role == "primary", lambda: self.rebuild(alias))
        return node

    def rebuild(self, alias: str) -> Node:
        """Make a promoted replica a replica of its primary again, from a new
        base backup, and close this thread's connections to it."""
        node = self._replica(alias)
        node.cluster.rebuild_replica(node)
        self.forget_connections(alias)
        return node

    def wait_caught_up(self, timeout: float = 10) -> None:
        """Wait until every running, unpaused, undelayed replica has replayed
        everything its primary has written so far (``timeout`` bounds the
        wait for all clusters together)."""
        deadline = time.monotonic() + timeout
        for cluster in self.clusters:
            remaining = max(0.0, deadline - time.monotonic())
            cluster.wait_caught_up(remaining, skip_paused=True)

    def restore(self) -> None:
        """Undo every fault made through this object, newest first, trying
        each even when one fails; the first error is raised after."""
        undo, self._undo = self._undo[::-1], []
        errors = []
        for step in undo:
            try:
                step()
            except Exception as exc:  # raised below, after the rest
                errors.append(exc)
        if errors:
            raise errors[0]

    @property
    def faulty(self) -> bool:
        """Whether a fault made through this object may still be in place."""
        return bool(self._undo)

    def forget_connections(self, alias: str) -> None:
        """Close this thread's connection to ``alias`` and its pool (Django
        5.1+), which may hold connections to a server that restarted."""
        from django.db import connections

        connection = connections[alias]
        connection.close()
        close_pool = getattr(connection, "close_pool", None)  # Django 5.1+
        if close_pool is not None:
            close_pool()

    # --- which server answered -----------------------------------------

    @contextlib.contextmanager
    def record(self) -> Iterator[Served]:
        """Record every statement Django sends while the block runs, in any
        thread (async views run the ORM in worker threads), with the server
        that answered it.

        The server is found once per database connection, by asking it
        ``SELECT inet_server_port()`` on that connection before its first
        recorded statement.  Behind a transaction-pooling PgBouncer a
        connection changes servers between transactions, so there the answer
        is the first server's.  Under ``TestCase``, a replica alias that is a
        test mirror shares the primary's connection: its reads show as the
        primary's, which is the truth.
        """
        from django.db.backends.utils import CursorWrapper

        served = Served(primary=self.primary, primaries=tuple(self.primaries))
        by_port = {node.port: alias for alias, node in self.servers.items()}
        ports: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        lock = threading.Lock()
        original = getattr(CursorWrapper, _HOOK)

        def server_of(raw: Any) -> str | None:
            with lock:
                port = ports.get(raw)
            if port is None:
                port = _server_port(raw)
                if port is None:
                    return None
                with lock:
                    ports[raw] = port
            return by_port.get(port)

        def recording(
            cursor: CursorWrapper, sql: Any, params: Any, many: bool, executor: Any
        ) -> Any:
            query = Query(cursor.db.alias, server_of(cursor.db.connection), str(sql))
            with lock:
                served.queries.append(query)
            return original(cursor, sql, params, many, executor)

        setattr(CursorWrapper, _HOOK, recording)
        try:
            yield served
        finally:
            setattr(CursorWrapper, _HOOK, original)


def _server_port(raw: Any) -> int | None:
    """``inet_server_port()`` of a DB-API connection; ``None`` when it cannot
    answer (not PostgreSQL, or a failed transaction)."""
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            row = cursor.fetchone()
    except Exception:  # any driver's error: the statement itself will tell
        return None
    return int(row[0]) if row and row[0] is not None else None
