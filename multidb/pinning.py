"""The per-context pin state, and the blocks that override it.

``multidb.routers`` reads this state to decide where each query goes.

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

import math
import warnings
from collections.abc import Callable
from contextvars import ContextVar, Token
from functools import partial, wraps
from typing import Any, Final, TypeAlias, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.db.backends.signals import connection_created

from . import groups, rotation, statements
from .conf import DEFAULT_DB_ALIAS
from .tallies import TokenCheck

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


class TimePin:
    """The pin that sends reads to the primary: a write in the request, an
    unsafe method, ``use_primary_db`` at the top of a request, or a value
    that is not a valid token (for ``MULTIDB_PINNING_SECONDS``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TIME_PIN"


#: No pin: reads go wherever the rotation sends them.
NO_PIN: Final = None
TIME_PIN: Final = TimePin()
#: What a request's reads wait for: nothing, the primary, or a replica that
#: has replayed a position (an ``int``).  Never a bool: ``True == 1``.
Pin: TypeAlias = "TimePin | int | None"


def stricter(a: Pin, b: Pin) -> Pin:
    """The pin that keeps reads at least as fresh as both ``a`` and ``b``."""
    if isinstance(a, TimePin) or isinstance(b, TimePin):
        return TIME_PIN
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class RequestState(rotation.Sticky):
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
        "moved",
        "token_check",
        "position_queries",
        "group_pins",
        "atomic_groups",
        "_groups",
    )

    #: What the request came with for the other primaries' groups: a time
    #: pin for all, or ``{primary: pin}``.  Set only where groups are
    #: configured (``getattr``), as ``atomic_groups`` (the other primaries
    #: whose ``ATOMIC_REQUESTS`` wraps the view).
    group_pins: TimePin | dict[str, Pin]
    atomic_groups: frozenset[str]

    #: The request read a replica, then moved to another (its first left the
    #: rotation).  Set by the router; unset until then (``getattr``), so that
    #: it costs a request that never moves nothing.
    moved: bool

    def __init__(
        self,
        pinned: Pin = NO_PIN,
        incoming: str | None = None,
        outer: RequestState | None = None,
    ) -> None:
        #: True: reads go to the primary for the rest of the request.  A
        #: position (int): reads wait for a replica that has replayed it.
        self.pinned = pinned
        #: A statement that writes ran on the primary (so the response sets
        #: the cookie).
        self.wrote = False
        # The replica this request reads from: ``Sticky.__init__``, inline
        # (a request's start is on the hot path).
        self.alias = DEFAULT_DB_ALIAS
        self.rotation = rotation.STALE
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
        #: A statement ran on the primary before the request wrote (after,
        #: ``wrote`` says more).
        self.reached_primary = False
        #: ``{primary: GroupState}`` for the other primaries it used.
        self._groups: dict[str, GroupState] | None = None
        # Set, not left unset as ``moved``: the metrics read both at every
        # request's end, and reading an unset slot raises inside.
        #: How the router settled the request's token, for ``multidb.explain``
        #: and the metrics: ``"cached"`` (a replica the prober had seen past
        #: it), ``"queried"`` (a replica asked had replayed it) or ``"behind"``
        #: (none had).
        self.token_check: TokenCheck | None = None
        #: How many primary-position queries the middleware ran for the
        #: response's cookie.
        self.position_queries = 0

    def group(self, primary: str) -> GroupState:
        """This request's state for another primary's group, made on first use."""
        found = self._groups
        if found is None:
            found = self._groups = {}
        elif primary in found:
            return found[primary]
        pins = getattr(self, "group_pins", None)
        pin: Pin = pins if isinstance(pins, TimePin) else (pins or {}).get(primary)
        outer = self.outer
        if outer is not None:
            # Never less fresh than the request this one is nested in.
            around = outer.group(primary)
            pin = stricter(stricter(pin, around.pinned), around.settled)
        state = found[primary] = GroupState(primary, pin, self)
        return state

    def groups_written(self) -> list[str]:
        """The other primaries this request wrote to."""
        found = self._groups
        if found is None:
            return []
        return [primary for primary, state in found.items() if state.wrote]


class GroupState(rotation.GroupSticky):
    """A request's pins and replica for one primary other than ``default``."""

    __slots__ = ("pinned", "wrote", "checked", "settled", "view_block", "owner")

    def __init__(
        self, primary: str, pinned: Pin = NO_PIN, owner: RequestState | None = None
    ) -> None:
        super().__init__(primary)
        self.pinned = pinned
        self.wrote = False
        self.checked = False
        self.settled: int | None = None
        #: The block Django opened around the view on this primary
        #: (``ATOMIC_REQUESTS``), once seen.
        self.view_block: Any = None
        self.owner = owner

    @property
    def atomic_view(self) -> bool:
        """Whether Django runs the request's view in ``atomic()`` on this
        primary (``ATOMIC_REQUESTS``; the middleware notes it)."""
        return self.primary in getattr(self.owner, "atomic_groups", ())


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
        replica: rotation.Sticky | _Fixed | None = None,
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

    #: The staleness bound of a ``use_replica(max_lag=...)`` block; a class
    #: attribute, so that a scope without one costs nothing more to build.
    bound: Bound | None = None
    #: Blocks for one group: ``{primary: PRIMARY or a replica holder}`` for
    #: the other primaries' groups (``GroupScope``), and whether the block
    #: is for ``default``'s group alone (``use_primary_db("default")``).
    group_overrides: dict[str, Any] | None = None
    default_only = False


#: In ``group_overrides``: that group's reads go to its primary.
PRIMARY: Final = "primary"


class GroupScope(Scope):
    """A block for other primaries' groups only: ``default``'s reads route as
    in the scope it is in."""

    __slots__ = ("group_overrides", "default_only")

    def __init__(self, parent: Scope, overrides: dict[str, Any]) -> None:
        super().__init__(
            parent.primary, parent.replica, parent.request, parent, parent.unpinned
        )
        self.free = parent.free
        self.group_overrides = overrides
        self.default_only = parent.default_only

    def pinned(self) -> Scope:
        return Scope(True, None, self.request, self.parent)

    def unpinned_copy(self) -> Scope:
        copy = GroupScope(self, self.group_overrides)  # type: ignore[arg-type]
        copy.unpinned = True
        copy.parent = self.parent
        copy.free = not copy.primary and copy.replica is None
        return copy


class _DefaultOnly(Scope):
    """A block for ``default``'s group alone; other groups route as outside it."""

    __slots__ = ()
    default_only = True


class Bound:
    """How stale a bounded block's reads may be, as the prober measures lag."""

    __slots__ = ("max_lag", "max_lag_bytes")

    def __init__(self, max_lag: float | None, max_lag_bytes: int | None) -> None:
        self.max_lag = max_lag
        self.max_lag_bytes = max_lag_bytes

    def stricter(self, other: Bound | None) -> Bound:
        """The bound both this one and ``other`` allow."""
        if other is None:
            return self
        return Bound(
            _smaller(self.max_lag, other.max_lag),
            _smaller(self.max_lag_bytes, other.max_lag_bytes),
        )

    def allows(self, lag_seconds: float | None, lag_bytes: int | None) -> bool:
        """Whether a replica measured this far behind is fresh enough."""
        if self.max_lag is not None and (
            lag_seconds is None or lag_seconds > self.max_lag
        ):
            return False
        return self.max_lag_bytes is None or (
            lag_bytes is not None and lag_bytes <= self.max_lag_bytes
        )

    def __repr__(self) -> str:
        return f"Bound(max_lag={self.max_lag!r}, max_lag_bytes={self.max_lag_bytes!r})"


N = TypeVar("N", int, float)


def _smaller(a: N | None, b: N | None) -> N | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class BoundedScope(Scope):
    """A ``use_replica(max_lag=...)`` block: reads go to a replica within
    ``bound`` (and past the request's token), else to the primary."""

    __slots__ = ("bound", "holder")
    bound: Bound

    def __init__(
        self,
        bound: Bound,
        holder: rotation.Sticky | _Fixed,
        request: RequestState | None,
        parent: Scope | None,
        unpinned: bool = False,
    ) -> None:
        super().__init__(False, None, request, parent, unpinned)
        self.bound = bound
        #: The replica the block prefers, when it is within the bound.
        self.holder = holder
        self.free = False

    def unpinned_copy(self) -> Scope:
        return BoundedScope(self.bound, self.holder, self.request, self.parent, True)


def keep_bound(scope: Scope, child: Scope) -> Scope:
    """``child`` of ``scope``, still under ``scope``'s staleness bound unless
    it reads the primary: a block inside a bounded one never reads staler."""
    bound = scope.bound
    if bound is None or child.primary or child.replica is not None:
        return child
    holder = scope.holder  # type: ignore[attr-defined]
    if holder is scope.request and child.request is not None:
        holder = child.request
    return BoundedScope(bound, holder, child.request, child.parent, child.unpinned)


_ROOT = Scope()
_scope: ContextVar[Scope] = ContextVar("multidb_scope", default=_ROOT)
#: The current context's scope (the routers read it on every query).
current_scope = _get_scope = _scope.get


# --- what the request wrote ----------------------------------------------------
#
# A request pins itself when a statement that writes runs on the primary, not
# when Django routes a query through ``db_for_write`` (``get_or_create`` that
# finds its row writes nothing), and whichever way the write was sent (raw SQL
# on ``connection`` included).  Every connection to the primary, in every
# thread, shows each statement to ``_note_primary_use``.


def note_write(request: RequestState | None) -> None:
    """``request`` (and the requests it is nested in) wrote: pin the rest."""
    while request is not None:
        request.wrote = True
        request.pinned = TIME_PIN
        request = request.outer


def note_group_write(request: RequestState | None, primary: str) -> None:
    """``request`` wrote on ``primary`` (not ``default``): pin that group."""
    while request is not None:
        state = request.group(primary)
        state.wrote = True
        state.pinned = TIME_PIN
        request = request.outer


def _note_group_use(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
) -> Any:
    """``_note_primary_use`` for the other primaries."""
    request = _get_scope().request
    if request is not None:
        connection = context["connection"]
        state = request.group(connection.alias)
        if not (state.wrote and state.pinned is TIME_PIN):
            done = statements.kind(sql)
            note = partial(note_group_write, request, connection.alias)
            if done == statements.WRITE:
                note()
            elif done == statements.LOCK:
                if connection.in_atomic_block:
                    connection.on_commit(note)
                else:
                    note()
    return execute(sql, params, many, context)


def _note_primary_use(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
) -> Any:
    request = _get_scope().request
    # Once a request has written and is pinned, nothing a statement says
    # changes that: a pinned request's reads (all on the primary) cost no look.
    if request is not None and not (request.wrote and request.pinned is TIME_PIN):
        outer: RequestState | None = request
        while outer is not None:
            outer.reached_primary = True
            outer = outer.outer
        done = statements.kind(sql)
        if done == statements.WRITE:
            note_write(request)
        elif done == statements.LOCK:
            connection = context["connection"]
            if connection.in_atomic_block:
                # The lock is a promise to write before this commits.
                connection.on_commit(partial(note_write, request))
            else:
                note_write(request)
    return execute(sql, params, many, context)


def watch_primary(
    connection: Any, watcher: Callable[..., Any] = _note_primary_use
) -> None:
    """Show every statement on ``connection`` to ``_note_primary_use``."""
    if watcher not in connection.execute_wrappers:
        # First, not last: ``connection.execute_wrapper()`` pops the last
        # wrapper when its block ends, and this connection may have been
        # opened inside one.
        connection.execute_wrappers.insert(0, watcher)


def watch_group_primary(connection: Any) -> None:
    """``watch_primary`` for another primary than ``default``."""
    watch_primary(connection, _note_group_use)


def _watch_primary(sender: Any, connection: Any, **kwargs: Any) -> None:
    alias = connection.alias
    if alias == DEFAULT_DB_ALIAS:
        watch_primary(connection)
    elif _other_primary(alias):
        watch_group_primary(connection)


def _other_primary(alias: str) -> bool:
    """Whether ``alias`` is another group's primary than ``default``."""
    try:
        return groups.active() and groups.is_primary(alias)
    except (TypeError, ValueError, ImportError):
        # A bad setting must not fail a connection: the checks report it.
        return False


# At import, as the routers and the middleware load before any request.
connection_created.connect(_watch_primary, dispatch_uid="multidb.pinning")


# --- request scope, used by the middleware ---------------------------------


def begin_request(
    pinned: Pin,
    incoming: str | None = None,
    group_pins: TimePin | dict[str, Pin] | None = None,
) -> Token[Scope]:
    """Start a fresh scope for one request; pass the token to ``end_request``.

    ``group_pins`` are the other primaries' pins (see ``RequestState.group``).
    """
    return start_request(pinned, incoming, group_pins)[0]


def start_request(
    pinned: Pin,
    incoming: str | None = None,
    group_pins: TimePin | dict[str, Pin] | None = None,
) -> tuple[Token[Scope], RequestState]:
    """``begin_request``, also returning the request's state."""
    state = RequestState(pinned, incoming)
    if group_pins is not None:
        state.group_pins = group_pins
    return _scope.set(Scope(False, None, state, _scope.get())), state


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
        and request.pinned is TIME_PIN
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
        request.pinned = NO_PIN
    _scope.set(scope.unpinned_copy())


# --- blocks and decorators -------------------------------------------------


class Override:
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


class UsePrimaryDB(Override):
    """Send reads to the primary: ``with use_primary_db:`` or ``@use_primary_db``.

    With replica groups, every group's reads go to its primary;
    ``use_primary_db("billing")`` sends only the ``billing`` group's.
    """

    def __init__(self, primary: str | None = None) -> None:
        self.only = primary

    def __call__(self, func: Any = None) -> Any:
        if func is None:
            return self
        if isinstance(func, str):
            if not groups.is_primary(func):
                raise ValueError(
                    f"use_primary_db({func!r}): {func!r} is not a primary. "
                    "Name one of MULTIDB_REPLICA_GROUPS, or 'default'."
                )
            return type(self)(func)
        return self._decorate(func)

    def _child(self, scope: Scope) -> Scope:
        if self.only is None:
            return Scope(True, None, scope.request, scope)
        if self.only == DEFAULT_DB_ALIAS:
            return _DefaultOnly(True, None, scope.request, scope)
        return GroupScope(scope, {self.only: PRIMARY})


class DeprecatedUseMaster(UsePrimaryDB):
    def __enter__(self) -> None:
        warnings.warn(
            "[multidb] @use_master has been deprecated, please switch to "
            "@use_primary_db",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__enter__()


class UseReplica(Override):
    """Send reads to a replica, even in a pinned context.

    ``with use_replica:``, ``with use_replica("alias"):``, ``@use_replica``
    and ``@use_replica("alias")`` all work.  Writes still go to ``default``.

    With ``max_lag`` (seconds) or ``max_lag_bytes``, reads go only to a
    replica the health prober measured within that bound, and that has
    replayed the request's token; else to the primary (see
    ``MULTIDB_NO_REPLICA``).  Such a block keeps the request's pins: the
    stricter wins.
    """

    def __init__(
        self,
        alias: str | None = None,
        *,
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
    ) -> None:
        self.alias = alias
        self.bound = _bound(max_lag, max_lag_bytes)

    def __call__(
        self,
        arg: Any = None,
        *,
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
    ) -> Any:
        if callable(arg):
            return self._decorate(arg)
        return UseReplica(arg, max_lag=max_lag, max_lag_bytes=max_lag_bytes)

    def _child(self, scope: Scope) -> Scope:
        holder: rotation.Sticky | _Fixed
        if self.alias is not None:
            primary = groups.primary_of(self.alias)
            if primary is None or primary == self.alias:
                raise ValueError(
                    f"use_replica({self.alias!r}): {self.alias!r} is not in "
                    "REPLICA_DATABASES (nor in MULTIDB_REPLICA_GROUPS). Add it "
                    "there, or call use_replica() to let the router choose."
                )
            if primary != DEFAULT_DB_ALIAS:
                return GroupScope(scope, {primary: _Fixed(self.alias)})
            holder = _Fixed(self.alias)
        elif scope.request is not None:
            holder = scope.request
        else:
            holder = rotation.Sticky()
        if self.bound is not None:
            bound = self.bound.stricter(scope.bound)
            return BoundedScope(bound, holder, scope.request, scope, scope.unpinned)
        if self.alias is not None and groups.active():
            return _DefaultOnly(False, holder, scope.request, scope)
        return Scope(False, holder, scope.request, scope)


def _bound(max_lag: Any, max_lag_bytes: Any) -> Bound | None:
    """The bound of ``use_replica(max_lag=, max_lag_bytes=)``; raises at once
    for a value that could never be compared with a measured lag."""
    if max_lag is None and max_lag_bytes is None:
        return None
    if max_lag is not None and (
        isinstance(max_lag, bool)
        or not isinstance(max_lag, (int, float))
        or not 0 <= max_lag < math.inf
    ):
        raise ValueError(
            f"use_replica(max_lag={max_lag!r}): max_lag is a finite number of "
            "seconds >= 0, or None."
        )
    if max_lag_bytes is not None and (
        isinstance(max_lag_bytes, bool)
        or not isinstance(max_lag_bytes, int)
        or max_lag_bytes < 0
    ):
        raise ValueError(
            f"use_replica(max_lag_bytes={max_lag_bytes!r}): max_lag_bytes is a "
            "whole number of bytes >= 0, or None."
        )
    return Bound(max_lag, max_lag_bytes)


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
