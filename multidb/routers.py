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
import threading
import warnings
from typing import Any, cast

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import Model

from . import catchup, health, mirrors, rotation
from .conf import DEFAULT_DB_ALIAS, conf
from .pinning import NO_PIN, TIME_PIN, RequestState
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


_primary_storage: Any = _NotFound()


class _Unknown:
    """Stands in for a connection not found on the fast path: let
    ``app_in_atomic()`` find the real one."""

    in_atomic_block = True
    #: Never a request's view block.
    atomic_blocks = [object()]


_UNKNOWN = _Unknown()


def primary_connection() -> Any:
    """This context's connection to the primary, or None if it has none yet."""
    global _primary_storage
    local = connections._connections  # type: ignore[attr-defined]
    storage = getattr(local, "_storage", None)
    if type(storage) is threading.local:
        _primary_storage = storage
    if asyncio._get_running_loop() is not None:
        # On an event loop's thread, ``connections[...]`` would create a
        # connection in a context variable of a new thread-local: under WSGI
        # (a new loop thread per async view) both leak into the worker
        # thread's context at every request.  One that does not exist yet is
        # in no transaction.
        return getattr(local, DEFAULT_DB_ALIAS, None)
    return connections[DEFAULT_DB_ALIAS]


def in_app_atomic(connection: Any, request: RequestState | None) -> bool:
    """Whether ``connection`` is inside an ``atomic()`` the application opened.

    The blocks Django opens itself do not count: those of a ``TestCase``
    (marked ``_from_testcase``) and the one around an ``ATOMIC_REQUESTS``
    view, which is the first other block once the middleware has seen that
    the view is atomic.  Reads in them route as without them, as in
    django-multidb-router; a write in them still pins the request.
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
            mirrors.share(connection)
            continue
        if block is view_block:
            continue
        if view_block is None and request is not None and request.atomic_view:
            request.view_block = view_block = block
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
            connection = _primary_storage.default
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
    if scope.replica is not None:
        return scope.replica.pick()
    if scope.primary or request.pinned is TIME_PIN:  # type: ignore[union-attr]
        return DEFAULT_DB_ALIAS
    return read_alias_after(request)  # type: ignore[arg-type]


def app_in_atomic(request: RequestState | None = None) -> bool:
    """Whether this context's connection to the primary is inside an
    ``atomic()`` the application opened (see ``in_app_atomic``)."""
    try:
        connection = _primary_storage.default
    except AttributeError:
        connection = None
    # Through Django on an event loop's thread: the thread may hold a sync
    # connection in atomic() that is not the one Django uses there.
    if connection is None or asyncio._get_running_loop() is not None:
        connection = primary_connection()
        if connection is None:
            return False
    return in_app_atomic(connection, request)


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
    if scope.replica is None and app_in_atomic(scope.request):
        return DEFAULT_DB_ALIAS
    return replica_alias()


def route_write(router: object, model: object, **hints: object) -> str:
    """``db_for_write``: always the primary; a write pins the rest of the request."""
    request = _get_scope().request
    while request is not None:
        request.wrote = True
        request.pinned = TIME_PIN
        request = request.outer
    return DEFAULT_DB_ALIAS


def replica_alias() -> str:
    """A replica for the current context, ignoring pins and transactions."""
    scope = _get_scope()
    if scope.replica is not None:
        return scope.replica.pick()
    if scope.request is not None:
        return scope.request.pick()
    return rotation.next_replica()


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
        return _settle(request, alias, current, position)
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
        return DEFAULT_DB_ALIAS
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


# --- the routers -------------------------------------------------------------------


class ReplicaRouter:
    """Send reads to replicas and writes to ``default``.

    Pins (``use_primary_db``, the pin cookie) are ignored, as in
    django-multidb-router; reads inside a transaction on ``default`` still
    go to ``default``.
    """

    # The routing functions are the methods themselves: one call less per
    # query.
    db_for_read = route_read_ignoring_pins
    db_for_write = route_write

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        """Allow all relations, so FK validation stays quiet."""
        return True

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        return db == DEFAULT_DB_ALIAS

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
