"""Replica health: probes, lag, and which replicas stay in the rotation.

A background thread (one per process, started on first use, restarted after
``fork``) probes the primary and every replica each
``MULTIDB_HEALTH_CHECK_INTERVAL`` seconds over connections of its own.  A
replica that is unreachable, promoted, or behind by more than the lag limits
leaves the rotation (``multidb.rotation.exclude``) and comes back after the
next good probe.  Routing itself never waits for a probe.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

from django.db import connections
from django.db.utils import load_backend
from django.dispatch import Signal

from . import groups, reconnect, rotation, signals
from .conf import DEFAULT_DB_ALIAS, conf, under_test_runner
from .positions import ReplicaState, adapter, format_lsn, parse_lsn

logger = logging.getLogger("multidb")

OK = "ok"
DOWN = "down"
PROMOTED = "promoted"
LAGGING = "lagging"
UNKNOWN = "unknown"

#: How many primary positions to remember for lag in seconds (one a probe).
HISTORY = 3600

T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseStatus:
    """What the last probe found out about one database."""

    alias: str
    #: ``"primary"`` or ``"replica"``.
    role: str
    #: ``ok``, ``down``, ``promoted``, ``lagging``, or ``unknown`` (not probed yet).
    state: str
    reachable: bool | None = None
    #: False once a replica has been promoted; None when not known.
    is_replica: bool | None = None
    #: Bytes of WAL the replica has still to replay (None without positions).
    lag_bytes: int | None = None
    #: Seconds since the primary was at a position the replica has replayed
    #: (0 when it has replayed the primary's newest; see ``Registry._lag``).
    lag_seconds: float | None = None
    #: The replica's replay position, or the primary's current position.
    replay_position: str | None = None
    last_checked: datetime | None = None
    #: Why the state is not ``ok``.
    reason: str = ""

    @property
    def usable(self) -> bool:
        """Whether this database can take reads now."""
        return self.state in (OK, UNKNOWN)

    @property
    def group(self) -> str:
        """The primary of its replica group (``MULTIDB_REPLICA_GROUPS``)."""
        return groups.primary_of(self.alias) or DEFAULT_DB_ALIAS

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if groups.active():
            data["group"] = self.group
        data["usable"] = self.usable
        if self.last_checked is not None:
            data["last_checked"] = self.last_checked.isoformat()
        return data


class _Connection:
    """A connection of the prober's own, never one a request uses."""

    def __init__(self, alias: str, timeout: float) -> None:
        settings_dict = copy.deepcopy(connections.settings[alias])
        options = settings_dict.setdefault("OPTIONS", {})
        # A pool would hand the probe a request's idle connection, or make it
        # wait behind requests for one.
        options.pop("pool", None)
        backend = load_backend(settings_dict["ENGINE"])
        self.wrapper = backend.DatabaseWrapper(settings_dict, alias)
        if self.wrapper.vendor == "postgresql":
            options["connect_timeout"] = max(1, math.ceil(timeout))
            # Positions belong to the server, not to a database.  A probe
            # connection to the test database would keep it from being
            # dropped at the end of the run: there, use the maintenance
            # database, as Django itself does to create and drop it.
            if under_test_runner():
                settings_dict["NAME"] = None
        self.wrapper.inc_thread_sharing()
        self.adapter = adapter(self.wrapper.vendor)

    def run(self, method: Callable[[Any], T]) -> T:
        with self.wrapper.cursor() as cursor:
            return method(cursor)

    def close(self) -> None:
        try:
            self.wrapper.close()
        except Exception:  # the server may be gone already
            logger.debug(
                "closing the probe connection to %s failed", self.wrapper.alias
            )

    def abandon(self) -> None:
        """In a child after ``fork``: close this process's copy of the socket,
        and nothing else.  ``close()`` would tell the server to end the
        session, which the parent goes on using."""
        # Not connected, no socket (SQLite), or a driver without fileno().
        with contextlib.suppress(Exception):
            os.close(self.wrapper.connection.fileno())


class Registry:
    """Per-process health state of the primary and the replicas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._connections: dict[str, _Connection] = {}
        self._in_flight: set[str] = set()
        #: ``default``'s positions, one a probe: ``(time.monotonic(), position)``.
        self._history: deque[tuple[float, int]] = deque(maxlen=HISTORY)
        #: Every primary's, ``default``'s included.
        self._histories: dict[str, deque[tuple[float, int]]] = {
            DEFAULT_DB_ALIAS: self._history
        }
        self._statuses: dict[str, DatabaseStatus] = {}
        #: When each status was recorded (``time.monotonic()``).
        self._set_at: dict[str, float] = {}
        #: Replaced, never changed, whenever ``_statuses`` changes.
        self._positions: dict[str, int] = {}
        #: Likewise: each reachable replica's measured lag (seconds, bytes).
        self._lags: dict[str, tuple[float | None, int | None]] = {}
        #: The groups (by primary) with replicas of which none is usable.
        self._none_usable: frozenset[str] = frozenset()
        #: Lagging replicas kept in rotation by MULTIDB_MIN_SERVING_REPLICAS
        #: or MULTIDB_NO_REPLICA = "least-lagged".
        self._kept: frozenset[str] = frozenset()

    # --- reading -----------------------------------------------------------

    def statuses(self) -> list[DatabaseStatus]:
        """The primary first, then each configured replica, as last probed."""
        with self._lock:
            known = dict(self._statuses)
        return [
            known.get(alias) or DatabaseStatus(alias, role, UNKNOWN)
            for alias, role, group in _databases()
        ]

    def history(self, primary: str) -> deque[tuple[float, int]]:
        """``primary``'s sampled positions (one a probe)."""
        try:
            return self._histories[primary]
        except KeyError:
            found = self._histories[primary] = deque(maxlen=HISTORY)
            return found

    # --- probing -----------------------------------------------------------

    def probe(self, apply: bool = True) -> list[DatabaseStatus]:
        """Probe every database once: the primary, then the replicas in
        parallel, each step bounded by ``MULTIDB_HEALTH_CHECK_TIMEOUT``.

        The primary goes first so that a replica that keeps up shows no lag.
        With ``apply`` (the default), the rotation follows the result.
        """
        with self._round_lock:
            return self._probe(apply)

    def recent(self, max_age: float, apply: bool = True) -> list[DatabaseStatus]:
        """The statuses, if every database was probed within ``max_age``
        seconds; else those of a probe round run now.

        Callers that find the statuses stale at the same time share one
        round: each looks again once it holds the round lock.
        """
        statuses = self.statuses()
        if _fresh(statuses, max_age):
            return statuses
        with self._round_lock:
            statuses = self.statuses()
            if _fresh(statuses, max_age):
                return statuses
            return self._probe(apply)

    def _probe(self, apply: bool) -> list[DatabaseStatus]:
        began = datetime.now(timezone.utc)
        statuses = self._probe_round(apply)
        if signals.probe_finished.receivers:
            # send_robust: an observer (tracing, metrics) must not fail a round.
            signals.probe_finished.send_robust(
                sender=None,
                statuses=statuses,
                started=began,
                finished=datetime.now(timezone.utc),
            )
        return statuses

    def _probe_round(self, apply: bool) -> list[DatabaseStatus]:
        timeout = conf.HEALTH_CHECK_TIMEOUT
        databases = _databases()
        started = time.monotonic()
        primaries = [alias for alias, role, _ in databases if role == "primary"]
        found = self._run(primaries, "primary", timeout)
        for primary in primaries:
            if isinstance(found.get(primary), int):
                self.history(primary).append((started, found[primary]))
        replicas = [alias for alias, role, _ in databases if role == "replica"]
        results = self._run(replicas, "replica", timeout)
        now = time.monotonic()
        as_of = {}
        for primary in primaries:
            history = self.history(primary)
            # The primary is out of sight, and nothing newer than what it
            # shipped can reach a replica: none falls further behind than
            # when it was last seen.  (Else, after MAX_LAG, every replica
            # would leave and reads would go to the primary that is down.)
            down = isinstance(found.get(primary), BaseException) and history
            as_of[primary] = history[-1][0] if down else now
        checked = datetime.now(timezone.utc)
        statuses = []
        for alias, role, group in databases:
            if role == "primary":
                result = found.get(alias)
                status = _primary_status(result, checked, alias)
            else:
                result = results.get(alias)
                status = self._replica_status(
                    alias, result, as_of[group], checked, group
                )
            statuses.append(self._unless_forbidden(status, result))
        return self._publish(statuses, apply, started)

    def _unless_forbidden(self, status: DatabaseStatus, result: Any) -> DatabaseStatus:
        """A test forbids database access (Django's ``databases``, pytest-django's
        blocker): that says nothing about the server, so the last status stands."""
        if not _forbidden(result):
            return status
        with self._lock:
            known = self._statuses.get(status.alias)
        return known or DatabaseStatus(status.alias, status.role, UNKNOWN)

    def _run(self, aliases: Iterable[str], role: str, timeout: float) -> dict[str, Any]:
        """Probe ``aliases`` in parallel; a probe still running at the deadline
        counts as a failure, and its alias is skipped until it returns."""
        results: dict[str, Any] = {}
        threads = []
        for alias in aliases:
            with self._lock:
                if alias in self._in_flight:
                    results[alias] = TimeoutError("the previous probe is still waiting")
                    continue
                self._in_flight.add(alias)
            thread = threading.Thread(
                target=self._probe_one,
                args=(alias, role, timeout, results),
                name=f"multidb-probe-{alias}",
                daemon=True,
            )
            thread.start()
            threads.append((alias, thread))
        deadline = time.monotonic() + timeout
        for alias, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                results.setdefault(
                    alias, TimeoutError(f"no answer within {timeout:g}s")
                )
        return dict(results)

    def _probe_one(
        self, alias: str, role: str, timeout: float, results: dict[str, Any]
    ) -> None:
        result: Any
        try:
            result = self._query(alias, role, timeout)
        except Exception as exc:  # any failure means "down"
            result = exc
        finally:
            with self._lock:
                self._in_flight.discard(alias)
        results.setdefault(alias, result)

    def _query(self, alias: str, role: str, timeout: float) -> Any:
        """Run the probe query on ``alias``'s probe connection.

        A connection kept from an earlier round that fails is replaced at
        once: it may only have outlived a restart of a server that is back.
        """

        def attempt(connection: _Connection) -> Any:
            try:
                return connection.run(
                    connection.adapter.primary_position
                    if role == "primary"
                    else connection.adapter.replica_state
                )
            except Exception:
                self._connections.pop(alias, None)
                connection.close()
                raise

        kept = self._connections.get(alias)
        if kept is not None:
            try:
                return attempt(kept)
            except Exception:  # retried on a new connection
                logger.debug("probe connection to %s failed; reconnecting", alias)
        connection = self._connections[alias] = _Connection(alias, timeout)
        return attempt(connection)

    def _replica_status(
        self,
        alias: str,
        result: Any,
        now: float,
        checked: datetime,
        group: str = DEFAULT_DB_ALIAS,
    ) -> DatabaseStatus:
        if not isinstance(result, ReplicaState):
            return DatabaseStatus(
                alias, "replica", DOWN, reachable=False, last_checked=checked,
                reason=describe(result),
            )  # fmt: skip
        if not result.is_replica:
            return DatabaseStatus(
                alias, "replica", PROMOTED, reachable=True, is_replica=False,
                last_checked=checked,
                reason="it is no longer in recovery: it was promoted",
            )  # fmt: skip
        replay_age = result.replay_age
        if replay_age is not None:
            # As of ``now``, which stays at the primary's last sample while
            # it is out of sight: the replica falls no further behind then.
            replay_age -= time.monotonic() - now
        lag_bytes, lag_seconds = self._lag(
            result.replay_position, now, replay_age, group
        )
        reason = _lag_reason(lag_bytes, lag_seconds)
        return DatabaseStatus(
            alias, "replica", LAGGING if reason else OK, reachable=True,
            is_replica=True, lag_bytes=lag_bytes, lag_seconds=lag_seconds,
            replay_position=_format(result.replay_position), last_checked=checked,
            reason=reason,
        )  # fmt: skip

    def _lag(
        self,
        replay: int | None,
        now: float,
        replay_age: float | None = None,
        primary: str = DEFAULT_DB_ALIAS,
    ) -> tuple[int | None, float | None]:
        """Bytes behind the newest primary position, and seconds since the
        primary was at a position this replica has replayed.

        A replica at or past the newest position is 0 behind, however long
        the primary has been idle.  Otherwise the seconds come from the
        primary positions this process has sampled (one a probe) when one of
        them is at or below the replay position: exact to a probe interval,
        or ``replay_age`` where that is less (but never less than the age of
        the newest sample, which the replica has not replayed).
        A replica that has not even replayed the oldest sample (always so in
        a fresh process, such as ``manage.py multidb_status``) is behind by at
        least the age of that sample, a lower bound that can be ~0; then the
        figure is ``replay_age`` (as of ``now``), the time since the last
        transaction it replayed was committed on the primary: an upper bound,
        never an under-report (but right after the primary's first write in
        a long idle spell, it counts the idle spell until the replica replays
        that write).  Without ``replay_age``, the lower bound it is.
        """
        history = self.history(primary)
        if replay is None or not history:
            return None, None
        newest_time, newest = history[-1]
        if replay >= newest:
            return 0, 0.0
        oldest_time, oldest = history[0]
        if replay < oldest:
            at_least = now - oldest_time
            seconds = at_least if replay_age is None else max(at_least, replay_age)
            return newest - replay, round(seconds, 3)
        caught_up_at = oldest_time
        # The oldest sample is at or below the replay position: this breaks.
        for sampled_at, position in reversed(history):  # pragma: no branch
            if position <= replay:
                caught_up_at = sampled_at
                break
        seconds = now - caught_up_at
        if replay_age is not None and replay_age < seconds:
            # A replica a few ms behind a busy primary is behind the newest
            # sample too, which alone would make it a whole interval late.
            seconds = max(now - newest_time, replay_age)
        return newest - replay, round(seconds, 3)

    # --- acting on the result ----------------------------------------------

    def _publish(
        self, statuses: list[DatabaseStatus], apply: bool, began: float
    ) -> list[DatabaseStatus]:
        """Record a round's ``statuses``, but none over a status set after
        the round ``began`` (a ``report_failure`` while it ran); then update
        the rotation, and only then tell anyone.  Returns what was recorded."""
        with self._lock:
            previous = dict(self._statuses)
            published = []
            for status in statuses:
                known = previous.get(status.alias)
                if known is not None and self._set_at.get(status.alias, 0) > began:
                    status = known
                else:
                    self._statuses[status.alias] = status
                    self._set_at[status.alias] = time.monotonic()
                published.append(status)
            self._positions = _positions(self._statuses)
            self._lags = _lags(self._statuses)
        log_usable = self._apply() if apply else _nothing
        for status in published:
            if status.role == "replica":
                _announce(previous.get(status.alias), status)
            elif previous.get(status.alias, status).state != status.state:
                # Threads' connections to it may have died with it.
                reconnect.recheck(status.alias, pool=bool(status.reachable))
                log = logger.info if status.state == OK else logger.error
                log(
                    "the primary%s is %s%s",
                    "" if status.alias == DEFAULT_DB_ALIAS else f" {status.alias}",
                    status.state,
                    f": {status.reason}" if status.reason else "",
                )
        log_usable()
        return published

    def _apply(self) -> Callable[[], None]:
        """Make the rotation follow the statuses.  Returns the logging of
        a change in "no replica is usable", for after the replicas' own."""
        with self._lock:
            statuses = dict(self._statuses)
        unusable = {
            alias
            for alias, status in statuses.items()
            if status.role == "replica" and not status.usable
        }
        kept: frozenset[str] = frozenset()
        none_usable = set()
        for primary, weights in groups.groups().items():
            configured = [alias for alias, weight in weights.items() if weight]
            kept |= _kept_serving(statuses, configured, unusable)
            if configured and set(configured) <= unusable - kept:
                none_usable.add(primary)
        unusable -= kept
        rotation.exclude(unusable)
        messages = [self._note_kept(kept, statuses)]
        before, self._none_usable = self._none_usable, frozenset(none_usable)
        for primary in sorted(none_usable - before):
            messages.append(partial(logger.warning, _none_usable_message(primary)))
        for primary in sorted(before - none_usable):
            messages.append(partial(logger.info, _usable_again_message(primary)))
        return _both(*messages)

    def _note_kept(
        self, kept: frozenset[str], statuses: dict[str, DatabaseStatus]
    ) -> Callable[[], None]:
        """Remember which lagging replicas are kept serving; the logging of
        each change (a replica kept, or no longer kept though still behind)."""
        before, self._kept = self._kept, kept
        messages: list[Callable[[], None]] = []
        for alias in sorted(kept - before):
            messages.append(
                partial(
                    logger.warning,
                    "replica %s keeps serving reads though it is lagging: %s (%s)",
                    alias,
                    statuses[alias].reason,
                    _floor_reason(),
                )
            )
        for alias in sorted(before - kept):
            status = statuses.get(alias)
            if status is not None and status.state == LAGGING:
                messages.append(
                    partial(
                        logger.info,
                        "replica %s no longer serves reads: %s",
                        alias,
                        status.reason,
                    )
                )
        return _both(*messages)

    def report_failure(self, alias: str, reason: str) -> None:
        """Take ``alias`` out of rotation now, and probe it again at once."""
        group = groups.primary_of(alias)
        if (
            group is None
            or group == alias
            or alias == DEFAULT_DB_ALIAS
            or conf.HEALTH_CHECK_INTERVAL is None
        ):
            return
        with self._lock:
            previous = self._statuses.get(alias)
            if previous is not None and previous.state == DOWN:
                return
            status = DatabaseStatus(
                alias, "replica", DOWN, reachable=False,
                last_checked=datetime.now(timezone.utc), reason=reason,
            )  # fmt: skip
            self._statuses[alias] = status
            self._set_at[alias] = time.monotonic()
            self._positions = _positions(self._statuses)
            self._lags = _lags(self._statuses)
        # The rotation first: a signal receiver must not be able to keep a
        # dead replica in it.
        log_usable = self._apply()
        _announce(previous, status)
        log_usable()
        _worker.wake()

    def replay_positions(self) -> dict[str, int]:
        """Each replica's last known replay position.

        Positions only grow, so a stale one still proves that a replica has
        replayed at least that far.
        """
        return self._positions

    def measured(self) -> bool:
        """Whether any probe round (or reported failure) has been recorded."""
        return bool(self._statuses)

    def lags(self) -> dict[str, tuple[float | None, int | None]]:
        """Each reachable replica's lag as last measured: ``(seconds, bytes)``.

        A replica whose lag was never measured (not probed yet, down, or no
        positions on its database) is absent.
        """
        return self._lags

    def forget(self) -> None:
        """Drop every status, and close every probe connection (for tests).

        Not for a forked child, which must leave the parent's connections
        alone: it gets a new ``Registry`` instead.
        """
        with self._lock:
            self._statuses.clear()
            self._set_at.clear()
            self._positions = {}
            self._lags = {}
            for history in self._histories.values():
                history.clear()
            self._in_flight.clear()
            self._none_usable = frozenset()
            self._kept = frozenset()
            stale, self._connections = self._connections, {}
        for connection in stale.values():
            connection.close()


def _positions(statuses: dict[str, DatabaseStatus]) -> dict[str, int]:
    return {
        status.alias: parse_lsn(status.replay_position)
        for status in statuses.values()
        if status.role == "replica" and status.replay_position is not None
    }


def _nothing() -> None:
    pass


def _both(*calls: Callable[[], None]) -> Callable[[], None]:
    """One call that makes ``calls`` in order."""
    if not calls:
        return _nothing
    if len(calls) == 1:
        return calls[0]

    def call_all() -> None:
        for call in calls:
            call()

    return call_all


def _lags(
    statuses: dict[str, DatabaseStatus],
) -> dict[str, tuple[float | None, int | None]]:
    return {
        status.alias: (status.lag_seconds, status.lag_bytes)
        for status in statuses.values()
        if status.role == "replica"
        and status.state in (OK, LAGGING)
        and (status.lag_seconds is not None or status.lag_bytes is not None)
    }


def _serving_floor() -> int:
    """How many reachable replicas keep serving however far behind."""
    floor = conf.MIN_SERVING_REPLICAS
    if conf.NO_REPLICA == "least-lagged":
        floor = max(floor, 1)
    return floor


def _floor_reason() -> str:
    floor = conf.MIN_SERVING_REPLICAS
    if floor >= 1:
        return f"MULTIDB_MIN_SERVING_REPLICAS = {floor}"
    return "MULTIDB_NO_REPLICA = 'least-lagged'"


def _kept_serving(
    statuses: dict[str, DatabaseStatus], configured: list[str], unusable: set[str]
) -> frozenset[str]:
    """The lagging replicas that keep serving so that at least the serving
    floor of reachable replicas does: the least behind first.  A replica
    that is down or promoted never serves."""
    floor = _serving_floor()
    missing = floor - sum(1 for alias in configured if alias not in unusable)
    if missing <= 0:
        return frozenset()
    lagging = [
        statuses[alias]
        for alias in configured
        if alias in unusable and statuses[alias].state == LAGGING
    ]
    lagging.sort(key=_behind)
    return frozenset(status.alias for status in lagging[:missing])


def _behind(status: DatabaseStatus) -> tuple[float, float, str]:
    seconds, size = status.lag_seconds, status.lag_bytes
    return (
        math.inf if seconds is None else seconds,
        math.inf if size is None else size,
        status.alias,
    )


def _fresh(statuses: list[DatabaseStatus], max_age: float) -> bool:
    now = datetime.now(timezone.utc)
    return all(
        status.last_checked is not None
        and (now - status.last_checked).total_seconds() <= max_age
        for status in statuses
    )


def _databases() -> list[tuple[str, str, str]]:
    """``(alias, role, group)`` of every database to probe: each group's
    primary, then its replicas, ``default``'s group first."""
    found = []
    for primary, weights in groups.groups().items():
        found.append((primary, "primary", primary))
        found += [(alias, "replica", primary) for alias in weights if alias != primary]
    return found


def _none_usable_message(primary: str) -> str:
    group = "" if primary == DEFAULT_DB_ALIAS else f" of {primary}"
    if conf.NO_REPLICA == "error":
        return (
            f"no replica{group} is usable; reads raise NoReplicaAvailable "
            "(MULTIDB_NO_REPLICA = 'error')"
        )
    return f"no replica{group} is usable; reads go to '{primary}'"


def _usable_again_message(primary: str) -> str:
    group = "" if primary == DEFAULT_DB_ALIAS else f" of {primary}"
    return f"replicas{group} are usable again"


def _forbidden(result: Any) -> bool:
    # DatabaseOperationForbidden is an AssertionError; pytest-django's blocker
    # raises a RuntimeError of its own.
    return isinstance(result, AssertionError) or (
        isinstance(result, RuntimeError)
        and "Database access not allowed" in str(result)
    )


def describe(error: Any) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _format(position: int | None) -> str | None:
    return None if position is None else format_lsn(position)


def _primary_status(
    result: Any, checked: datetime, alias: str = DEFAULT_DB_ALIAS
) -> DatabaseStatus:
    if isinstance(result, BaseException):
        return DatabaseStatus(
            alias, "primary", DOWN, reachable=False, last_checked=checked,
            reason=describe(result),
        )  # fmt: skip
    return DatabaseStatus(
        alias, "primary", OK, reachable=True, is_replica=False,
        replay_position=_format(result), last_checked=checked,
    )  # fmt: skip


def _lag_reason(lag_bytes: int | None, lag_seconds: float | None) -> str:
    max_lag, max_bytes = conf.REPLICA_MAX_LAG, conf.REPLICA_MAX_LAG_BYTES
    if max_lag is not None and lag_seconds is not None and lag_seconds > max_lag:
        return f"{lag_seconds:g}s behind the primary (limit {max_lag:g}s)"
    if max_bytes is not None and lag_bytes is not None and lag_bytes > max_bytes:
        return f"{lag_bytes} bytes behind the primary (limit {max_bytes})"
    return ""


def _announce(previous: DatabaseStatus | None, status: DatabaseStatus) -> None:
    """Log and signal a replica's change of state (not a repeat of it)."""
    before = previous.state if previous is not None else UNKNOWN
    if before == status.state:
        return
    alias, reason = status.alias, status.reason
    if status.state in (DOWN, PROMOTED) or before in (DOWN, PROMOTED):
        # Threads outside a request cycle keep a connection that died with
        # the server, or that reads a promoted one; the pool only when the
        # server answers (its check would wait on a frozen one).
        reconnect.recheck(alias, pool=bool(status.reachable))
    if status.state in (DOWN, PROMOTED):
        logger.warning("replica %s is %s: %s", alias, status.state, reason)
        _send(signals.replica_down, alias, reason)
    elif status.state == LAGGING:
        logger.warning("replica %s is lagging: %s", alias, reason)
        _send(signals.replica_lagging, alias, reason)
    elif before != UNKNOWN:
        logger.info("replica %s is back in rotation", alias)
        _send(signals.replica_up, alias, f"was {before}")


def _send(signal: Signal, alias: str, reason: str) -> None:
    # send_robust: a receiver that raises must fail neither the probe round
    # nor the request that reported a failure.  Django logs its error (on
    # the "django.dispatch" logger).
    signal.send_robust(sender=None, alias=alias, reason=reason)


#: Seconds between probe rounds when the interval is not a positive number
#: (``multidb.E007``): the prober must neither stop nor spin.
_FALLBACK_PAUSE = 1.0


def _pause(interval: Any) -> float:
    """How long to wait for the next round: ``interval``, at most as long as
    ``Event.wait`` can (it raises beyond).  Never raises itself."""
    try:
        if interval > 0:
            return float(min(interval, threading.TIMEOUT_MAX))
    except (TypeError, ValueError, OverflowError):
        pass
    return _FALLBACK_PAUSE


class _Worker:
    """The background prober: one daemon thread per process."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if conf.HEALTH_CHECK_INTERVAL is None or (
            self._thread is not None and self._thread.is_alive()
        ):
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="multidb-health", daemon=True
                )
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while (interval := conf.HEALTH_CHECK_INTERVAL) is not None:
            try:
                registry.probe()
            except Exception:  # keep probing whatever happens
                logger.exception("a health probe failed")
            self._wake.wait(_pause(interval))
            self._wake.clear()

    def after_fork(self) -> None:
        self._thread = None
        self._wake = threading.Event()
        self._lock = threading.Lock()


registry = Registry()
_worker = _Worker()

ensure_started = _worker.ensure_started
rotation.on_rebuild.append(ensure_started)


def probe_now() -> list[DatabaseStatus]:
    """Probe every database now, in this thread, and apply the result."""
    return registry.probe()


def replica_status() -> list[DatabaseStatus]:
    """The last known status of each configured replica."""
    return [status for status in registry.statuses() if status.role == "replica"]


#: Probe connections a child inherited from its parent, their sockets closed.
#: Kept, never finalised: a driver's finaliser may end the parent's session
#: (psycopg2 built without its fork check) or close a descriptor number this
#: process has reused since (psycopg 3's checks the pid and does neither, but
#: warns of a connection left open).
_inherited: list[_Connection] = []


def _after_fork_in_child() -> None:
    # Threads do not survive fork, and the parent's connections must not be
    # used by two processes: start over, lazily.
    global registry
    _worker.after_fork()
    parents, registry = registry, Registry()
    # No lock: the thread that may have held it did not survive fork.
    for connection in list(parents._connections.values()):
        connection.abandon()
        _inherited.append(connection)


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)
