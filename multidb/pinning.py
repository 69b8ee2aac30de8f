"""Where reads go: the per-context pin state, and the blocks that override it.

State lives in one ``ContextVar`` holding an immutable :class:`Scope`.  A
``ContextVar`` (not a thread-local) is what makes the state follow a request
into async views, into ``sync_to_async`` worker threads (the async ORM), and
keeps concurrent requests on one event loop apart.

Blocks (``use_primary_db``, ``use_replica``) push a child scope and restore
its parent on exit, so nesting restores the outer state exactly.  The one
mutable part is the :class:`RequestState` shared by everything a request
runs: a write anywhere in the request must pin the rest of it.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable
from contextvars import ContextVar, Token
from functools import wraps
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.db import connections
from django.db.backends.signals import connection_created

from . import mirrors, replicas
from .conf import DEFAULT_DB_ALIAS

__all__ = [
    "this_thread_is_pinned",
    "pin_this_thread",
    "unpin_this_thread",
    "use_primary_db",
    "use_master",
    "use_replica",
    "db_write",
    "mark_as_write",
]

F = TypeVar("F", bound=Callable[..., Any])


class RequestState(replicas.Sticky):
    """What one request has done so far; shared by all the code it runs.

    It is also the holder of the replica the request reads from (a
    ``Sticky``): one attribute less to follow on every read.
    """

    __slots__ = (
        "pinned",
        "wrote",
        "checked",
        "incoming",
        "outer",
        "settled",
        "atomic_view",
        "view_block",
        "reached_primary",
    )

    def __init__(
        self,
        pinned: bool | int = False,
        incoming: str | None = None,
        outer: RequestState | None = None,
    ) -> None:
        #: True: reads go to the primary for the rest of the request.  A
        #: position (int): reads wait for a replica that has replayed it.
        self.pinned = pinned
        #: The request wrote to the primary (so the response sets the cookie).
        self.wrote = False
        super().__init__()  # the replica this request reads from
        #: A replica was already asked for its position (once per request).
        self.checked = False
        #: The valid token the request came with.
        self.incoming = incoming
        #: The request this state is nested in (``read_after`` in a request).
        self.outer = outer
        #: The position a replica was chosen for (its replica has replayed it).
        self.settled: int | None = None
        #: Django runs the view in ``atomic()`` on the primary (ATOMIC_REQUESTS).
        self.atomic_view: bool = outer.atomic_view if outer is not None else False
        #: That block, once seen.
        self.view_block: Any = outer.view_block if outer is not None else None
        #: A statement ran on this context's connection to the primary.
        self.reached_primary = False


class _Fixed:
    """A replica chosen by alias, used as-is."""

    __slots__ = ("alias",)

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def pick(self) -> str:
        return self.alias


class Scope:
    """An immutable node of routing state; blocks push children of it."""

    __slots__ = ("primary", "replica", "request", "parent", "free", "unpinned")

    def __init__(
        self,
        primary: bool = False,
        replica: replicas.Sticky | _Fixed | None = None,
        request: RequestState | None = None,
        parent: Scope | None = None,
        unpinned: bool = False,
    ) -> None:
        #: Reads are forced to the primary.
        self.primary = primary
        #: Reads are forced to this replica holder.
        self.replica = replica
        self.request = request
        self.parent = parent
        #: Neither forced to the primary nor to a replica.
        self.free = not primary and replica is None
        #: ``unpin_this_thread()`` was called in a block: ignore the request's pin.
        self.unpinned = unpinned

    def pinned(self) -> Scope:
        """This scope, with reads forced to the primary (the innermost wins)."""
        return Scope(True, None, self.request, self.parent)

    def unpinned_copy(self) -> Scope:
        """This scope, free to read replicas despite the request's pin."""
        return Scope(False, self.replica, self.request, self.parent, True)


_ROOT = Scope()
_scope: ContextVar[Scope] = ContextVar("multidb_scope", default=_ROOT)
_get_scope = _scope.get


# --- the routing decision (the hot path) -----------------------------------
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
            return replicas.next_replica()
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
    if scope.primary or request.pinned is True:  # type: ignore[union-attr]
        return DEFAULT_DB_ALIAS
    return _read_alias_after(request)  # type: ignore[arg-type]


_after: Callable[[RequestState], str] | None = None


def _read_alias_after(request: RequestState) -> str:
    """Where a read waiting for a position goes: ``multidb.tokens`` decides."""
    global _after
    after = _after
    if after is None:
        from .tokens import read_alias_after

        after = _after = read_alias_after
    return after(request)


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
    if alias != before and request.settled is not None and request.pinned is False:
        # The replica that had replayed the request's token is gone: the
        # next one must prove it has too.
        request.pinned, request.settled = request.settled, None
        request.checked = False
        return _read_alias_after(request)
    return alias


def route_read_ignoring_pins(router: object, model: object, **hints: object) -> str:
    """``ReplicaRouter.db_for_read``: like ``route_read`` but ignores pins."""
    scope = _scope.get()
    if scope.replica is None and app_in_atomic(scope.request):
        return DEFAULT_DB_ALIAS
    return replica_alias()


def route_write(router: object, model: object, **hints: object) -> str:
    """``db_for_write``: always the primary; a write pins the rest of the request."""
    request = _scope.get().request
    while request is not None:
        request.wrote = True
        request.pinned = True
        request = request.outer
    return DEFAULT_DB_ALIAS


def replica_alias() -> str:
    """A replica for the current context, ignoring pins and transactions."""
    scope = _scope.get()
    if scope.replica is not None:
        return scope.replica.pick()
    if scope.request is not None:
        return scope.request.pick()
    return replicas.next_replica()


# --- what reached the primary ------------------------------------------------
#
# A write the router never saw (raw SQL on ``connection``) must still give the
# user a token; a request that sent nothing at all to the primary needs no
# position query.  Every connection to the primary, in every thread, notes
# each statement in the state of the request that runs it.


def _note_primary_use(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
) -> Any:
    request = _get_scope().request
    while request is not None:
        request.reached_primary = True
        request = request.outer
    return execute(sql, params, many, context)


def _watch_primary(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.alias == DEFAULT_DB_ALIAS and (
        _note_primary_use not in connection.execute_wrappers
    ):
        # First, not last: ``connection.execute_wrapper()`` pops the last
        # wrapper when its block ends, and this connection may have been
        # opened inside one.
        connection.execute_wrappers.insert(0, _note_primary_use)


# At import, as the routers and the middleware load before any request.
connection_created.connect(_watch_primary, dispatch_uid="multidb.pinning")


# --- request scope, used by the middleware ---------------------------------


def begin_request(pinned: bool | int, incoming: str | None = None) -> Token[Scope]:
    """Start a fresh scope for one request; pass the token to ``end_request``."""
    state = RequestState(pinned, incoming)
    return _scope.set(Scope(request=state, parent=_scope.get()))


def end_request(token: Token[Scope]) -> None:
    _scope.reset(token)


def current_request() -> RequestState | None:
    return _scope.get().request


# --- the 0.11 thread API, now per context ----------------------------------


def this_thread_is_pinned() -> bool:
    """Whether reads in the current context go to the primary."""
    scope = _scope.get()
    request = scope.request
    return scope.primary or (
        scope.replica is None
        and request is not None
        and request.pinned is True
        and not scope.unpinned
    )


def pin_this_thread() -> None:
    """Send the current context's reads to the primary until unpinned."""
    _scope.set(_scope.get().pinned())


def unpin_this_thread() -> None:
    """Let the current context's reads go to replicas again.

    At the top level of a request this unpins the rest of the request; in a
    block, only the rest of the block.
    """
    scope = _scope.get()
    request = scope.request
    parent = scope.parent
    if request is not None and (parent is None or parent.request is not request):
        request.pinned = False
    _scope.set(scope.unpinned_copy())


# --- blocks and decorators -------------------------------------------------


class _Override:
    """A context manager that is also a sync-or-async decorator.

    The instance holds no state: entering pushes a child scope and exiting
    restores its parent, so one instance can be nested and shared freely.
    """

    def _child(self, scope: Scope) -> Scope:
        raise NotImplementedError

    def __enter__(self) -> None:
        scope = _scope.get()
        _scope.set(self._child(scope))

    def __exit__(self, *exc_info: object) -> None:
        _scope.set(_scope.get().parent or _ROOT)

    def _decorate(self, func: F) -> F:
        # A @contextmanager would exit before an async function's body runs,
        # so coroutine functions get a coroutine wrapper.
        if iscoroutinefunction(func):

            @wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return cast(F, async_inner)

        @wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, inner)


class UsePrimaryDB(_Override):
    """Send reads to the primary: ``with use_primary_db:`` or ``@use_primary_db``."""

    def __call__(self, func: F | None = None) -> Any:
        if func is None:
            return self
        return self._decorate(func)

    def _child(self, scope: Scope) -> Scope:
        return Scope(True, None, scope.request, scope)


class DeprecatedUseMaster(UsePrimaryDB):
    def __enter__(self) -> None:
        warnings.warn(
            "[multidb] @use_master has been deprecated, please switch to "
            "@use_primary_db",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__enter__()


class UseReplica(_Override):
    """Send reads to a replica, even in a pinned context.

    ``with use_replica:``, ``with use_replica("alias"):``, ``@use_replica``
    and ``@use_replica("alias")`` all work.  Writes still go to ``default``.
    """

    def __init__(self, alias: str | None = None) -> None:
        self.alias = alias

    def __call__(self, arg: Any = None) -> Any:
        if callable(arg):
            return self._decorate(arg)
        return UseReplica(arg)

    def _child(self, scope: Scope) -> Scope:
        holder: replicas.Sticky | _Fixed
        if self.alias is not None:
            if self.alias not in replicas.configured():
                raise ValueError(
                    f"use_replica({self.alias!r}): {self.alias!r} is not in "
                    "REPLICA_DATABASES. Add it there, or call use_replica() "
                    "to let the router choose."
                )
            holder = _Fixed(self.alias)
        elif scope.request is not None:
            holder = scope.request
        else:
            holder = replicas.Sticky()
        return Scope(False, holder, scope.request, scope)


use_primary_db = UsePrimaryDB()
use_master = DeprecatedUseMaster()
use_replica = UseReplica()


def mark_as_write(response: Any) -> Any:
    """Mark a response as having done a DB write."""
    response._db_write = True
    return response


def db_write(fn: F) -> F:
    """Run a view on the primary and mark its response as a write."""
    if iscoroutinefunction(fn):

        @wraps(fn)
        async def async_wrapped(*args: Any, **kwargs: Any) -> Any:
            with use_primary_db:
                response = await fn(*args, **kwargs)
            return mark_as_write(response)

        return cast(F, async_wrapped)

    @wraps(fn)
    def _wrapped(*args: Any, **kwargs: Any) -> Any:
        with use_primary_db:
            response = fn(*args, **kwargs)
        return mark_as_write(response)

    return cast(F, _wrapped)
