"""Every routing decision: where each read goes, and each write.

The routers named in ``DATABASE_ROUTERS`` hold no state.  Their methods are
the routing functions below, which read the per-context state of
``multidb.pinning`` (pins, blocks, the request's replica), the rotation of
``multidb.rotation`` and the positions ``multidb.health`` has seen:

* a write goes to ``default``, and pins the rest of the request;
* a read goes to ``default`` when the context is pinned, inside an
  ``atomic()`` the application opened on ``default``, or when no replica is
  usable; to the replica a block forces; to a replica that has replayed the
  position the request waits for (``read_alias_after``); else to the
  request's replica, chosen once per request in rotation.

The package's modules import one way only, lowest first (``./run.sh check``
enforces it with import-linter): ``conf``, ``positions``, ``signals``,
``mirrors``, ``reconnect``; ``rotation``; ``health``; ``pinning``;
``tokens``; ``routers``; ``middleware``; then ``checks``, ``views``,
``apps``, ``management`` and the package itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from typing import Any, cast

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import Model

from . import catchup, groups, health, mirrors, pinning, rotation
from .conf import DEFAULT_DB_ALIAS, conf
from .pinning import (
    NO_PIN,
    PRIMARY,
    TIME_PIN,
    Bound,
    BoundedScope,
    GroupState,
    RequestState,
    Scope,
)
from .pinning import current_scope as _get_scope
from .positions import adapter

# --- reads: the hot path ------------------------------------------------------
#
# ``connections["default"]`` costs about a microsecond (asgiref's Local takes
# a lock), more than the rest of a routing decision together.  So the
# transaction check reads the thread-local storage behind it directly, once
# ``primary_connection`` has found that storage.  In a thread running an event
# loop that storage holds no connections (asgiref keeps them in a context
# variable there), and no transaction can be open there anyway.


class _NotFound:
    """Stands in for the storage until it is found; has no connections."""


#: That storage, once found: ``primary_storage.default`` is this thread's
#: connection to the primary, as last seen (AttributeError before).  Read
#: directly on the hot paths, here and at a request's end in the middleware.
primary_storage: Any = _NotFound()


class _Unknown:
    """Stands in for a connection not found on the fast path: let
    ``app_in_atomic()`` find the real one."""

    in_atomic_block = True
    #: Never a request's view block.
    atomic_blocks = [object()]


_UNKNOWN = _Unknown()


def primary_connection(alias: str = DEFAULT_DB_ALIAS) -> Any:
    """This context's connection to the primary, or None if it has none yet."""
    global primary_storage
    local = connections._connections  # type: ignore[attr-defined]
    storage = getattr(local, "_storage", None)
    if type(storage) is threading.local:
        primary_storage = storage
    if asyncio._get_running_loop() is not None:
        # On an event loop's thread, ``connections[...]`` would create a
        # connection in a context variable of a new thread-local: under WSGI
        # (a new loop thread per async view) both leak into the worker
        # thread's context at every request.  One that does not exist yet is
        # in no transaction.
        return getattr(local, alias, None)
    return connections[alias]


def in_app_atomic(
    connection: Any, request: RequestState | GroupState | None, note: bool = True
) -> bool:
    """Whether ``connection`` is inside an ``atomic()`` the application opened.

    The blocks Django opens itself do not count: those of a ``TestCase``
    (marked ``_from_testcase``) and the one around an ``ATOMIC_REQUESTS``
    view, which is the first other block once the middleware has seen that
    the view is atomic.  Reads in them route as without them, as in
    django-multidb-router; a write in them still pins the request.

    ``note=False`` only looks (``multidb.explain``): it remembers neither the
    view's block on ``request`` nor a ``TestCase`` mirror's connection.
    """
    if not connection.in_atomic_block:
        return False
    blocks = connection.atomic_blocks
    view_block = request.view_block if request is not None else None
    if view_block is not None and blocks[-1] is view_block:
        # The common case under ATOMIC_REQUESTS.  Every block below the
        # view's is a TestCase's: the view's block is the first other one.
        return False
    for block in blocks:
        if block._from_testcase:
            if note:
                mirrors.share(connection)
            continue
        if block is view_block:
            continue
        if view_block is None and request is not None and request.atomic_view:
            view_block = block
            if note:
                request.view_block = block
            continue
        return True
    return False


def route_read(router: object, model: object, **hints: object) -> str:
    """``PinningReplicaRouter.db_for_read``: the alias a read goes to.

    It is the router method itself, not called by it, and inlines the
    common case (free to read a replica, no transaction), because Django
    calls it for every query.
    """
    scope = _get_scope()
    request = scope.request
    if scope.free and (request is None or not request.pinned or scope.unpinned):
        try:
            connection = primary_storage.default
        except AttributeError:  # storage not found yet, or no connection yet
            connection = _UNKNOWN
        if request is None:
            if connection.in_atomic_block and app_in_atomic(None):
                return DEFAULT_DB_ALIAS
            return rotation.next_replica()
        if (
            connection.in_atomic_block
            and connection.atomic_blocks[-1] is not request.view_block
            and app_in_atomic(request)
        ):
            return DEFAULT_DB_ALIAS
        if request.rotation.current:
            return request.alias
        return _repick(request)
    if scope.bound is not None:
        return read_within_bound(scope)  # type: ignore[arg-type]
    if scope.replica is not None:
        return scope.replica.pick()
    if scope.primary or request.pinned is TIME_PIN:  # type: ignore[union-attr]
        return DEFAULT_DB_ALIAS
    return read_alias_after(request)  # type: ignore[arg-type]


def app_in_atomic(request: RequestState | None = None, note: bool = True) -> bool:
    """Whether this context's connection to the primary is inside an
    ``atomic()`` the application opened (see ``in_app_atomic``, and its
    ``note``)."""
    try:
        connection = primary_storage.default
    except AttributeError:
        connection = None
    # Through Django on an event loop's thread: the thread may hold a sync
    # connection in atomic() that is not the one Django uses there.
    if connection is None or asyncio._get_running_loop() is not None:
        connection = primary_connection()
        if connection is None:
            return False
    return in_app_atomic(connection, request, note)


def _repick(request: RequestState) -> str:
    """The request's replica after the rotation changed."""
    before = request.alias
    alias = request.pick()
    if before != DEFAULT_DB_ALIAS and alias != before:
        # It read ``before``, which may be ahead of ``alias``: what the
        # request saw is bounded by the primary's position alone (read by
        # the middleware under ``MULTIDB_MONOTONIC_READS``).  Not a slot
        # set in ``__init__``: unset costs no request anything.
        request.moved = True
    if alias != before and request.settled is not None and request.pinned is NO_PIN:
        # The replica that had replayed the request's token is gone: the
        # next one must prove it has too.
        request.pinned, request.settled = request.settled, None
        request.checked = False
        return read_alias_after(request)
    return alias


def route_read_ignoring_pins(router: object, model: object, **hints: object) -> str:
    """``ReplicaRouter.db_for_read``: like ``route_read`` but ignores pins."""
    scope = _get_scope()
    if scope.bound is not None:
        return read_within_bound(scope, pins=False)  # type: ignore[arg-type]
    if scope.replica is None and app_in_atomic(scope.request):
        return DEFAULT_DB_ALIAS
    return replica_alias()


def route_write(router: object, model: object, **hints: object) -> str:
    """``db_for_write``: always the primary.

    Routing pins nothing: the statements that then write pin the rest of the
    request (``multidb.pinning``), and ``get_or_create`` that finds its row
    writes none.  Their watcher is made sure of here, for a connection opened
    before this package was imported.
    """
    if _get_scope().request is not None:
        connection = primary_connection()
        if connection is not None:  # none yet on an event loop's thread
            pinning.watch_primary(connection)
    return DEFAULT_DB_ALIAS


def replica_alias() -> str:
    """A replica for the current context, ignoring pins and transactions."""
    scope = _get_scope()
    if scope.bound is not None:
        return read_within_bound(scope, pins=False)  # type: ignore[arg-type]
    if scope.replica is not None:
        return scope.replica.pick()
    if scope.request is not None:
        return scope.request.pick()
    return rotation.next_replica()


# --- when no replica will do ---------------------------------------------------

logger = logging.getLogger("multidb")


class NoReplicaAvailable(Exception):
    """No replica may take a read, and ``MULTIDB_NO_REPLICA = "error"``.

    Raised by the router where the read is made.  Catch it in a view (or a
    middleware) and answer 503: the primary is kept from taking every read.
    """


def _when_none_usable(primary: str = DEFAULT_DB_ALIAS) -> str:
    """Where a read of ``primary``'s group goes when it has replicas and
    none is usable."""
    if conf.NO_REPLICA == "error":
        raise NoReplicaAvailable(
            "No replica is usable (down, promoted or past the lag limits) and "
            "MULTIDB_NO_REPLICA is 'error'. Catch multidb.NoReplicaAvailable "
            "and answer 503, or set MULTIDB_NO_REPLICA to 'primary'."
        )
    return primary


rotation.when_none_usable = _when_none_usable


# --- reads within a staleness bound: use_replica(max_lag=...) --------------------

#: Whether "health checks are off, so bounded reads go to the primary" was
#: logged (once per process).
_unmeasured_logged = False


def read_within_bound(scope: BoundedScope, pins: bool = True) -> str:
    """Where a read in a ``use_replica(max_lag=...)`` block goes.

    To a replica the prober last measured within the bound that has also
    replayed the request's token, if any (with ``pins``, the request's time
    pin sends it to the primary); else to the primary.  When the prober has
    measured no lag at all (health checks off, or before the first probe)
    no replica can be shown to be within the bound, and the read goes to the
    primary.  When it has, and none is within the bound, the read follows
    ``MULTIDB_NO_REPLICA``: a bound is never relaxed, so ``"least-lagged"``
    reads the primary too, and ``"error"`` raises.
    """
    request = scope.request
    position: int | None = None
    if pins and request is not None and not scope.unpinned:
        pinned = request.pinned
        if pinned is TIME_PIN:
            return DEFAULT_DB_ALIAS
        position = pinned if type(pinned) is int else request.settled
    if app_in_atomic(request):
        return DEFAULT_DB_ALIAS
    if conf.HEALTH_CHECK_INTERVAL is None:
        _log_unmeasured()
        return DEFAULT_DB_ALIAS
    if not health.registry.measured():
        return DEFAULT_DB_ALIAS
    holder = scope.holder
    current = rotation.rotation()
    candidates = (
        current.usable if isinstance(holder, rotation.Sticky) else {holder.pick()}
    )
    lags = health.registry.lags()
    within = [a for a in candidates if a in lags and scope.bound.allows(*lags[a])]
    if not within:
        return _none_within(scope.bound)
    # The replica this request already proved has replayed its token.
    settled = (
        request.alias
        if request is not None and position is not None and request.settled == position
        else None
    )
    preferred = holder.pick() if isinstance(holder, rotation.Sticky) else within[0]
    if position is None:
        if preferred in within:
            return preferred
        return min(within, key=lambda a: (_lag_key(lags[a]), a))
    known = _known_positions()
    replayed = [a for a in within if known.get(a, -1) >= position]
    if replayed:
        return (
            preferred if preferred in replayed else max(replayed, key=known.__getitem__)
        )
    if settled == preferred and preferred in within:
        return preferred
    if request is None or request.checked or _on_event_loop():
        return DEFAULT_DB_ALIAS
    request.checked = True
    alias = max(within, key=lambda a: (known.get(a, -1), a))
    replay = replay_position(alias)
    if replay is None or replay < position:
        # Within the bound but behind the token: the token's own rule.
        request.token_check = "behind"
        return DEFAULT_DB_ALIAS
    request.token_check = "queried"
    if holder is request and type(request.pinned) is int:
        return _settle(request, alias, current, position)
    return alias


def _lag_key(lag: tuple[float | None, int | None]) -> tuple[float, float]:
    seconds, size = lag
    return (
        float("inf") if seconds is None else seconds,
        float("inf") if size is None else size,
    )


def _none_within(bound: Bound, primary: str = DEFAULT_DB_ALIAS) -> str:
    if conf.NO_REPLICA == "error":
        raise NoReplicaAvailable(
            f"No replica is within the staleness bound ({_describe(bound)}) and "
            "MULTIDB_NO_REPLICA is 'error'. Catch multidb.NoReplicaAvailable "
            "and answer 503, loosen the bound, or set MULTIDB_NO_REPLICA to "
            "'primary'."
        )
    return primary


def _describe(bound: Bound) -> str:
    parts = []
    if bound.max_lag is not None:
        parts.append(f"max_lag={bound.max_lag!r}")
    if bound.max_lag_bytes is not None:
        parts.append(f"max_lag_bytes={bound.max_lag_bytes!r}")
    return ", ".join(parts)


def _log_unmeasured() -> None:
    global _unmeasured_logged
    if not _unmeasured_logged:
        _unmeasured_logged = True
        logger.warning(
            "use_replica(max_lag=...) reads go to '%s': health checks are off "
            "(MULTIDB_HEALTH_CHECK_INTERVAL = None), so no replica's lag is "
            "measured",
            DEFAULT_DB_ALIAS,
        )


# --- reads that wait for a position ----------------------------------------------


def replay_position(alias: str) -> int | None:
    """How far replica ``alias`` has replayed, asked over its connection."""
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            state = adapter(connection.vendor).replica_state(cursor)
    except DatabaseError as error:
        if isinstance(error, (OperationalError, InterfaceError)):
            health.registry.report_failure(alias, health.describe(error))
        return None
    return state.replay_position if state.is_replica else None


def _known_positions() -> dict[str, int]:
    # Through the module: a forked child gets a registry of its own.
    return health.registry.replay_positions()


def read_alias_after(request: RequestState) -> str:
    """Where a read goes when ``request`` waits for a position.

    A replica the health prober has already seen past the position is used
    without a query; otherwise one replica is asked, once per request (the
    one the prober last saw furthest ahead, else the request's own), and the
    read goes to the primary if it has not caught up.

    With ``MULTIDB_CATCH_UP_WAIT``, the check waits up to that long for any
    usable replica to replay the position (``multidb.catchup``), except on
    an event loop's thread, which never blocks.
    """
    position = cast(int, request.pinned)  # route_read calls this for a position only
    if app_in_atomic(request):
        return DEFAULT_DB_ALIAS
    current = rotation.rotation()
    known = _known_positions()
    # The request's own replica first (picked in rotation, as any request
    # picks one), so that token reads spread over the replicas that have
    # replayed the token instead of all going to one; then the one seen
    # furthest ahead, which has it if any has.
    own = request.pick()
    furthest = _furthest_ahead(current, known)
    for alias in (own, furthest):
        if alias in current.usable and known.get(alias, -1) >= position:
            request.token_check = "cached"
            return _settle(request, alias, current, position)
    if request.checked or _on_event_loop():
        # Django forbids queries on an event loop's thread (``QuerySet.db``
        # in an async view): read the primary, and leave the one check to a
        # read in a worker thread.
        return DEFAULT_DB_ALIAS
    request.checked = True
    if own == DEFAULT_DB_ALIAS:
        return own
    wait = conf.CATCH_UP_WAIT
    if wait:
        return _catch_up(request, position, own, furthest, wait / 1000)
    # A paused or delayed replica is behind in the prober's last view too:
    # ask the one most likely to have the write.
    alias = own
    if furthest is not None and known.get(furthest, -1) > known.get(own, -1):
        alias = furthest
    replayed = replay_position(alias)
    if replayed is not None and replayed >= position:
        request.token_check = "queried"
        return _settle(request, alias, current, position)
    request.token_check = "behind"
    return DEFAULT_DB_ALIAS


def _catch_up(
    request: RequestState, position: int, own: str, furthest: str | None, wait: float
) -> str:
    """Wait up to ``wait`` seconds for a usable replica to replay
    ``position`` (``multidb.catchup``); the primary if none has by then."""
    usable = rotation.rotation().usable
    # The request's own replica first, as above.
    ordered = dict.fromkeys(a for a in (own, furthest, *usable) if a in usable)
    alias = catchup.wait_for(position, ordered, wait)
    current = rotation.rotation()
    if alias is None or alias not in current.usable:
        request.token_check = "behind"
        return DEFAULT_DB_ALIAS
    request.token_check = "queried"
    return _settle(request, alias, current, position)


#: The usable replica the prober saw furthest ahead, for one rotation and one
#: map of positions: both are replaced, never changed, so it is computed
#: once per change, not per read.
_furthest: tuple[object, object, str | None] = (None, None, None)


def _furthest_ahead(current: rotation.Rotation, known: dict[str, int]) -> str | None:
    global _furthest
    seen_rotation, seen_known, alias = _furthest
    if seen_rotation is current and seen_known is known:
        return alias
    alias = max(current.usable, key=lambda a: (known.get(a, -1), a), default=None)
    _furthest = (current, known, alias)
    return alias


def _on_event_loop() -> bool:
    return asyncio._get_running_loop() is not None


def _settle(
    request: RequestState, alias: str, current: rotation.Rotation, position: int
) -> str:
    """Let ``request`` read ``alias``, which has replayed ``position``."""
    pinned = request.pinned
    if type(pinned) is not int or pinned != position:
        # The pin changed while the replica was being asked: another thread
        # of the same request wrote, and that write pins the rest of it.
        return DEFAULT_DB_ALIAS
    request.settled = position
    request.pinned = NO_PIN
    request.alias = alias
    request.rotation = current
    return alias


# --- the other primaries' groups (MULTIDB_REPLICA_GROUPS) ------------------------
#
# A site with one primary never comes here: the routers' methods are the
# single-group functions above until ``MULTIDB_REPLICA_GROUPS`` or
# ``MULTIDB_PRIMARY_FOR`` names another primary (``_install``).  Then each
# query's model picks its primary first; ``default``'s reads route exactly
# as above, and another primary's by the same rules, over its own replicas
# and with the request's pins for that group (``RequestState.group``).

#: How a block decides another group's reads (``_group_rule``).
_ANY_REPLICA, _FREE, _PINS = "any replica", "free", "pins"


def _group_rule(scope: Scope, primary: str) -> Any:
    """What the innermost block that says anything about ``primary``'s group
    says: ``PRIMARY``, a replica holder, ``_ANY_REPLICA``, a bounded scope,
    ``_FREE`` (no pins) or ``_PINS`` (the request's pins)."""
    at: Scope | None = scope
    while at is not None:
        overrides = at.group_overrides
        if overrides is not None and primary in overrides:
            return overrides[primary]
        if not at.default_only:
            if at.primary:
                return PRIMARY
            if at.replica is not None:
                return _ANY_REPLICA
            if at.bound is not None:
                return at
            if at.unpinned:
                return _FREE
        request = at.request
        parent = at.parent
        if request is not None and (parent is None or parent.request is not request):
            return _PINS
        at = parent
    return _FREE


def route_group_read(primary: str, pins: bool = True) -> str:
    """Where a read of a model that lives on ``primary`` (not ``default``) goes."""
    scope = _get_scope()
    request = scope.request
    rule = _group_rule(scope, primary)
    if rule is PRIMARY:
        if pins:
            return primary
        rule = _FREE
    elif isinstance(rule, BoundedScope):
        return _group_within_bound(rule, primary, pins)
    elif rule is _ANY_REPLICA:
        holder = request.group(primary) if request else rotation.GroupSticky(primary)
        return holder.pick()
    elif rule is not _FREE and rule is not _PINS:
        return cast(str, rule.pick())  # a replica use_replica(alias) forces
    state = request.group(primary) if request is not None else None
    if _in_group_atomic(primary, state):
        return primary
    if state is None:
        return rotation.group_rotation(primary).next()
    if rule is _PINS and pins and not scope.unpinned:
        pinned = state.pinned
        if pinned is TIME_PIN:
            return primary
        if pinned is not NO_PIN:
            return _group_read_after(state, cast(int, pinned))
    return state.pick()


def _in_group_atomic(primary: str, state: GroupState | None) -> bool:
    connection = primary_connection(primary)
    return (
        connection is not None
        and connection.in_atomic_block
        and in_app_atomic(connection, state)
    )


def _group_read_after(state: GroupState, position: int) -> str:
    """``read_alias_after`` for another primary's group (no catch-up wait)."""
    primary = state.primary
    known = _known_positions()
    own = state.pick()
    current = state.rotation
    for alias in (own, *sorted(current.usable)):
        if alias in current.usable and known.get(alias, -1) >= position:
            return _settle_group(state, alias, current, position)
    if state.checked or _on_event_loop() or own == primary:
        return primary
    state.checked = True
    replayed = replay_position(own)
    if replayed is not None and replayed >= position:
        return _settle_group(state, own, current, position)
    return primary


def _settle_group(
    state: GroupState, alias: str, current: rotation.Rotation, position: int
) -> str:
    if state.pinned != position:
        # Another thread of the request wrote meanwhile.
        return state.primary
    state.settled = position
    state.pinned = NO_PIN
    state.alias = alias
    state.rotation = current
    return alias


def _group_within_bound(scope: BoundedScope, primary: str, pins: bool) -> str:
    """``read_within_bound`` for another primary's group."""
    request = scope.request
    state = request.group(primary) if request is not None else None
    position: int | None = None
    if pins and state is not None and not scope.unpinned:
        pinned = state.pinned
        if pinned is TIME_PIN:
            return primary
        position = pinned if type(pinned) is int else state.settled
    if _in_group_atomic(primary, state):
        return primary
    if conf.HEALTH_CHECK_INTERVAL is None:
        _log_unmeasured()
        return primary
    if not health.registry.measured():
        return primary
    lags = health.registry.lags()
    current = rotation.group_rotation(primary)
    within = sorted(
        a for a in current.usable if a in lags and scope.bound.allows(*lags[a])
    )
    if not within:
        return _none_within(scope.bound, primary)
    if position is not None:
        known = _known_positions()
        within = [a for a in within if known.get(a, -1) >= position]
        if not within:
            return primary
    # The request's own replica if it is within the bound, else the freshest.
    preferred = state.pick() if state is not None else None
    return min(within, key=lambda a: (a != preferred, _lag_key(lags[a]), a))


#: ``{model: primary}`` as ``MULTIDB_PRIMARY_FOR``'s mapping places them.
_known_primaries = groups.KNOWN_PRIMARIES


def route_read_grouped(router: object, model: object, **hints: object) -> str:
    """``PinningReplicaRouter.db_for_read`` with replica groups.

    ``route_read``'s common case is repeated here, not called: a call (and
    passing ``**hints`` on) would cost more than the rest of the decision.
    """
    try:
        primary = _known_primaries[model]
    except KeyError:
        primary = groups.primary_for(model, **hints)
    if primary is not DEFAULT_DB_ALIAS and primary != DEFAULT_DB_ALIAS:
        return route_group_read(primary)
    scope = _get_scope()
    request = scope.request
    if scope.free and (request is None or not request.pinned or scope.unpinned):
        try:
            connection = primary_storage.default
        except AttributeError:
            connection = _UNKNOWN
        if request is None:
            if connection.in_atomic_block and app_in_atomic(None):
                return DEFAULT_DB_ALIAS
            return rotation.next_replica()
        if (
            connection.in_atomic_block
            and connection.atomic_blocks[-1] is not request.view_block
            and app_in_atomic(request)
        ):
            return DEFAULT_DB_ALIAS
        if request.rotation.current:
            return request.alias
        return _repick(request)
    # In a block, or a pinned request: a call more costs little next to it.
    return route_read(router, model)


def route_read_ignoring_pins_grouped(
    router: object, model: object, **hints: object
) -> str:
    """``ReplicaRouter.db_for_read`` with replica groups."""
    primary = groups.primary_for(model, **hints)
    if primary == DEFAULT_DB_ALIAS:
        return route_read_ignoring_pins(router, model)
    return route_group_read(primary, pins=False)


def route_write_grouped(router: object, model: object, **hints: object) -> str:
    """``db_for_write`` with replica groups: the model's primary."""
    try:
        primary = _known_primaries[model]
    except KeyError:
        primary = groups.primary_for(model, **hints)
    if primary == DEFAULT_DB_ALIAS:
        return route_write(router, model)
    if _get_scope().request is not None:
        connection = primary_connection(primary)
        if connection is not None:
            pinning.watch_group_primary(connection)
    return primary


def _primary_of_instance(obj: Model) -> str:
    db = obj._state.db
    found = groups.primary_of(db) if db is not None else None
    return found or groups.primary_for(type(obj))


def allow_relation_grouped(
    router: object, obj1: Model, obj2: Model, **hints: Any
) -> bool:
    """Relations only within one primary's group."""
    return _primary_of_instance(obj1) == _primary_of_instance(obj2)


def allow_migrate_grouped(
    router: object, db: str, app_label: str, model_name: str | None = None, **hints: Any
) -> bool:
    """Migrations only on the primary the app (or model) lives on."""
    return db == groups.primary_for_app(app_label, model_name, **hints)


def _install() -> None:
    """The routers' methods for the groups as configured now."""
    try:
        grouped = groups.active()
    except (TypeError, ValueError, ImportError):
        # A bad setting: the system checks say which; routing raises it.
        grouped = False
    ReplicaRouter.db_for_read = (
        route_read_ignoring_pins_grouped if grouped else route_read_ignoring_pins
    )
    PinningReplicaRouter.db_for_read = route_read_grouped if grouped else route_read
    ReplicaRouter.db_for_write = route_write_grouped if grouped else route_write
    ReplicaRouter.allow_relation = (
        allow_relation_grouped if grouped else _allow_any_relation
    )
    ReplicaRouter.allow_migrate = (
        allow_migrate_grouped if grouped else _allow_migrate_on_default
    )


groups.on_change.append(_install)


def _allow_any_relation(router: object, obj1: Model, obj2: Model, **hints: Any) -> bool:
    """Allow all relations, so FK validation stays quiet."""
    return True


def _allow_migrate_on_default(
    router: object, db: str, app_label: str, model_name: str | None = None, **hints: Any
) -> bool:
    return db == DEFAULT_DB_ALIAS


# --- the routers -------------------------------------------------------------------


class ReplicaRouter:
    """Send reads to replicas and writes to ``default``.

    Pins (``use_primary_db``, the pin cookie) are ignored, as in
    django-multidb-router; reads inside a transaction on ``default`` still
    go to ``default``.
    """

    # The routing functions are the methods themselves: one call less per
    # query.  With replica groups, ``_install`` swaps in the grouped ones.
    db_for_read = route_read_ignoring_pins
    db_for_write = route_write
    allow_relation = _allow_any_relation
    allow_migrate = _allow_migrate_on_default

    def __init__(self) -> None:
        # Django makes its routers once settings are loaded: the first
        # moment the groups can be read.
        _install()

    def allow_syncdb(self, db: str, model: type[Model] | None) -> bool:
        """Only allow syncdb on the primary (Django < 1.7 name of allow_migrate)."""
        return db == DEFAULT_DB_ALIAS


class PinningReplicaRouter(ReplicaRouter):
    """Like ``ReplicaRouter``, but a pinned context reads from ``default``.

    A context is pinned by ``use_primary_db``, ``pin_this_thread()``, a write
    earlier in the same request, or ``PinningRouterMiddleware``.
    """

    db_for_read = route_read


class DeprecationMixin:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "[multidb] The MasterSlaveRouter and PinningMasterSlaveRouter "
            "classes have been deprecated. Please switch to the ReplicaRouter "
            "and PinningReplicaRouter classes respectively.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


class MasterSlaveRouter(DeprecationMixin, ReplicaRouter):
    pass


class PinningMasterSlaveRouter(DeprecationMixin, PinningReplicaRouter):
    pass
