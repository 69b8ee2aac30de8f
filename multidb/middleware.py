"""``PinningRouterMiddleware``: carries "this user just wrote" across requests.

One class serves both WSGI and ASGI, so an async stack makes no thread hops
for it (but one, for the position query, after a write).  Each request runs
in a fresh routing scope that is reset in ``finally``; a write anywhere in
the request pins the rest of it, and the response carries the pin cookie: a
signed token of the primary's position (see ``multidb.tokens``), or the
legacy ``y`` where the primary has no positions.  A request that dies on a
connection error takes the replica it read from out of rotation.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

from . import explanation, groups, health, rotation, routers, tallies, tokens
from .conf import DEFAULT_DB_ALIAS, SameSite, conf
from .pinning import (
    NO_PIN,
    TIME_PIN,
    Pin,
    RequestState,
    TimePin,
    current_request,
    end_request,
    start_request,
    stricter,
)
from .signals import request_routed

READ_ONLY_METHODS = frozenset(["GET", "TRACE", "HEAD", "OPTIONS"])


def pinning_cookie() -> str:
    """The name of the cookie that directs a request's reads to the primary."""
    return conf.PINNING_COOKIE


def pinning_cookie_httponly() -> bool:
    return conf.PINNING_COOKIE_HTTPONLY


def pinning_cookie_samesite() -> SameSite:
    return conf.PINNING_COOKIE_SAMESITE


def pinning_cookie_secure() -> bool:
    return conf.PINNING_COOKIE_SECURE


def pinning_seconds() -> int:
    """How long reads stay on the primary after a write, in seconds."""
    return conf.PINNING_SECONDS


#: Django's request classes whose ``COOKIES`` parses the ``Cookie`` header
#: when first read (a ``cached_property``).
_PARSED_WHEN_READ = frozenset({WSGIRequest, ASGIRequest})


def _pin_values(request: HttpRequest) -> tuple[str | None, str | None]:
    """The pin cookie and the token header the request carries (an empty
    header is none; the header only if ``MULTIDB_PINNING_HEADER`` names one)."""
    header_name = conf.PINNING_HEADER
    header = (request.headers.get(header_name) or None) if header_name else None
    name = conf.PINNING_COOKIE
    if (
        type(request) in _PARSED_WHEN_READ
        and "COOKIES" not in request.__dict__
        and name not in request.META.get("HTTP_COOKIE", "")
    ):
        # Most requests carry no pin cookie: parsing their Cookie header
        # would cost a cookie-less request more than the rest of its start.
        return None, header
    return request.COOKIES.get(name), header


def _incoming(request: HttpRequest) -> tuple[Pin, str | None]:
    """The request's pin, and the valid token it carries (to pass on)."""
    cookie, header = _pin_values(request)
    unsafe = request.method not in READ_ONLY_METHODS
    if cookie is None and header is None:
        if unsafe and (conf.PIN_UNSAFE_METHODS or conf.PINNING_MODE == "time"):
            return TIME_PIN, None
        return NO_PIN, None
    if conf.PINNING_MODE == "time" or (unsafe and conf.PIN_UNSAFE_METHODS):
        return TIME_PIN, None
    invalid = tokens.invalid_pin()
    pins = [
        (tokens.pin_for(value, invalid), value)
        for value in (cookie, header)
        if value is not None
    ]
    # A cookie and a header: follow the stricter of the two.
    pin = functools.reduce(stricter, (found for found, _ in pins), NO_PIN)
    if type(pin) is not int:
        return pin, None
    return pin, next(value for found, value in pins if found == pin)


#: The attribute of an ``HttpRequest`` that holds its routing state (read
#: as ``request._multidb_state`` at the request's end, where a ``getattr``
#: call would cost every request more).
_STATE = "_multidb_state"


def _incoming_grouped(
    request: HttpRequest,
) -> tuple[Pin, str | None, TimePin | dict[str, Pin]]:
    """``_incoming`` with replica groups: also the other primaries' pins."""
    cookie, header = _pin_values(request)
    unsafe = request.method not in READ_ONLY_METHODS
    if (cookie is None and header is None) or (
        conf.PINNING_MODE == "time" or (unsafe and conf.PIN_UNSAFE_METHODS)
    ):
        # No token, or one that does not count: the method pins every group
        # by time, or none.
        method_pin, carried = _incoming(request)
        return method_pin, carried, TIME_PIN if method_pin is TIME_PIN else {}
    invalid = tokens.invalid_pin()
    pin: Pin = NO_PIN
    others: TimePin | dict[str, Pin] = {}
    valid: list[tuple[Pin, str]] = []
    for value in (cookie, header):
        if value is None:
            continue
        found = tokens.read(value, invalid)
        if found is None:
            pin = stricter(pin, invalid)
            if invalid is TIME_PIN:
                others = TIME_PIN
            continue
        first, rest = found
        pin = stricter(pin, first)
        valid.append((first, value))
        if not isinstance(others, TimePin):
            for primary, group_pin in rest.items():
                others[primary] = stricter(others.get(primary), group_pin)
    # As ``_incoming``: the value that holds the position read first; with
    # none, the token is passed on whole, whichever groups it holds.
    incoming = next((v for first, v in valid if first == pin), None)
    if incoming is None and valid:
        incoming = valid[0][1]
    return pin, incoming, others


def _begin(request: HttpRequest, grouped: bool | None = None) -> Token[Any]:
    """Start ``request``'s routing scope, and remember its state on it.

    ``grouped``: whether replica groups are configured, if the caller knows.
    """
    if grouped is None:
        grouped = groups.active()
    if grouped:
        token, state = start_request(*_incoming_grouped(request))
    else:
        token, state = start_request(*_incoming(request))
    setattr(request, _STATE, state)
    return token


def _state_of(request: HttpRequest) -> RequestState | None:
    """``request``'s own routing state: not one left in this context by
    another request (``process_request`` called by hand never ends it)."""
    return getattr(request, _STATE, None)


def _note_atomic_view(
    request: HttpRequest, view_func: Callable[..., Any], default_atomic: bool = True
) -> None:
    """Tell ``request``'s state whether Django's handler runs ``view_func``
    in ``atomic()`` on the primary (``ATOMIC_REQUESTS`` is on there)."""
    state = _state_of(request)
    non_atomic = getattr(view_func, "_non_atomic_requests", ())
    if state is not None and default_atomic and DEFAULT_DB_ALIAS not in non_atomic:
        state.atomic_view = True
    if state is not None and groups.active():
        state.atomic_groups = frozenset(
            primary
            for primary in groups.groups()
            if primary != DEFAULT_DB_ALIAS
            and primary not in non_atomic
            and _atomic_requests(primary)
        )


def _atomic_requests(alias: str) -> bool:
    return bool(connections.settings[alias].get("ATOMIC_REQUESTS"))


def _wants_cookie(
    request: HttpRequest, response: HttpResponseBase, state: RequestState | None
) -> bool:
    unsafe = request.method not in READ_ONLY_METHODS
    return (
        (unsafe and (conf.PIN_UNSAFE_METHODS or conf.PINNING_MODE == "time"))
        or getattr(response, "_db_write", False)
        or (
            state is not None
            and (
                state.wrote
                or (state._groups is not None and bool(state.groups_written()))
            )
        )
    )


def _cookie_value(
    request: HttpRequest, response: HttpResponseBase, state: RequestState | None
) -> str | None:
    """The pin cookie's value; None when it is the primary's position now,
    which only a query tells (``tokens.position_token``)."""
    if conf.PINNING_MODE != "auto" or not tokens.has_positions():
        return tokens.LEGACY_VALUE
    if state is None or state.wrote or getattr(response, "_db_write", False):
        return None
    if groups.active():
        # The positions of the groups it wrote to, with those it came with.
        return None
    # Nothing was written (a 404, a CSRF failure, a form error, a
    # get_or_create that found its row): it costs no round trip.  The valid
    # token the request came with still holds; without one, pin by time, as
    # django-multidb-router did.
    return _carried_token(request) or tokens.sign_time()


def _position_token(
    request: HttpRequest, response: HttpResponseBase, state: RequestState | None
) -> str:
    """The cookie after a write: the primary's position now (one query);
    with replica groups, that of each primary the request wrote to, with
    the positions it came with for the others."""
    if not groups.active():
        _note_queries(state, 1)
        return tokens.position_token()
    carried = [v for v in _pin_values(request) if v is not None]
    written = []
    if state is None or state.wrote or getattr(response, "_db_write", False):
        written.append(DEFAULT_DB_ALIAS)
    if state is not None:
        written += state.groups_written()
    _note_queries(state, len(written))
    return tokens.groups_token(carried, written) or tokens.sign_time()


def _note_queries(state: RequestState | None, count: int) -> None:
    """Tell ``request_routed`` how many position queries the cookie costs."""
    if state is not None:
        state.position_queries = count


def _carried_token(request: HttpRequest) -> str | None:
    """The request's valid position token (the later, of cookie and header)."""
    positions = [
        (pin, value)
        for value in _pin_values(request)
        if value is not None and type(pin := tokens.pin_for(value, NO_PIN)) is int
    ]
    return max(positions)[1] if positions else None


def _saw_data(state: RequestState | None) -> bool:
    """Whether ``MULTIDB_MONOTONIC_READS`` wants a bound of what ``state``'s
    request (which wrote nothing) saw in the cookie: it read a replica or
    the primary."""
    return (
        state is not None
        # Attribute tests first: this runs on every request.
        and (state.alias != DEFAULT_DB_ALIAS or state.reached_primary)
        and conf.MONOTONIC_READS
    )


def _seen_token(state: RequestState) -> str | None:
    """A token for an upper bound of what the request saw, or None when the
    token it came with already bounds that (or nothing can: no positions,
    or the server did not answer).  One query:

    * a request that read only its replica: that replica's replay position
      now, over the request's own connection; replay only moves forward, so
      it is at or past every snapshot the request's reads saw there;
    * one that read the primary (its replicas had not replayed its token,
      or it was pinned by time), or read a replica and then moved to
      another (its first left the rotation): the primary's position now,
      at or past everything any server has shown.
    """
    if conf.PINNING_MODE != "auto" or not tokens.has_positions():
        return None
    if state.reached_primary or getattr(state, "moved", False):
        state.position_queries = 1
        seen = tokens.primary_position()
    else:
        seen = routers.replay_position(state.alias)
    pinned = state.pinned
    floor = state.settled if type(pinned) is not int else pinned
    if seen is None or (floor is not None and seen <= floor):
        return None
    return tokens.sign(seen)


def _set_cookie(response: HttpResponseBase, value: str) -> None:
    legacy = value == tokens.LEGACY_VALUE
    response.set_cookie(
        conf.PINNING_COOKIE,
        value=value,
        max_age=(
            min(conf.PINNING_SECONDS, tokens.MAX_COOKIE_SECONDS)
            if legacy
            else tokens.cookie_seconds()
        ),
        secure=conf.PINNING_COOKIE_SECURE,
        httponly=conf.PINNING_COOKIE_HTTPONLY,
        samesite=conf.PINNING_COOKIE_SAMESITE,
    )


class PinningRouterMiddleware:
    """Keep a user agent that just wrote reading what it wrote.

    Must come before any middleware that writes to the database (sessions,
    authentication), so that their writes are seen.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        # Called as the one or the other, as async_mode says.
        self.get_response: Callable[[HttpRequest], Any] = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        self.default_atomic = _atomic_requests(DEFAULT_DB_ALIAS)
        #: ``process_response`` is this class's, not a subclass's (which
        #: ``__call__`` then calls instead, as 0.11's middleware did).
        self.own_response = (
            type(self).process_response is PinningRouterMiddleware.process_response
        )
        # Read once, as Django makes its middleware once: a call to ask on
        # every request is a good part of what the middleware costs.
        self.grouped = groups.active()
        if any(map(_atomic_requests, groups.groups())):
            # Only then does the view matter, and Django calls (under ASGI:
            # awaits) a process_view on every request once there is one.  A
            # coroutine under ASGI: Django would run a sync one in a thread.
            self.process_view = (
                self._aprocess_view if self.async_mode else self._process_view
            )

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        token = _begin(request, self.grouped)
        try:
            response = self.get_response(request)
            state = request._multidb_state  # type: ignore[attr-defined]
            if self.own_response:
                _respond(request, response, state)
            else:
                response = self.process_response(request, response)
            if tallies.counting or request_routed.receivers:
                _send_routed(state, response)
            return response
        finally:
            end_request(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = _begin(request, self.grouped)
        try:
            response: HttpResponseBase = await self.get_response(request)
            state = _state_of(request)
            if _wants_cookie(request, response, state):
                value = _cookie_value(request, response, state)
                if value is None:
                    # The position query is database work: it runs where
                    # the request's sync code ran, not on the event loop.
                    value = await sync_to_async(_position_token)(
                        request, response, state
                    )
                _set_cookie(response, value)
            elif _saw_data(state):
                seen = await sync_to_async(_seen_token)(state)  # type: ignore[arg-type]
                if seen is not None:
                    _set_cookie(response, seen)
            if tallies.counting or request_routed.receivers:
                _send_routed(request._multidb_state, response)  # type: ignore[attr-defined]
            return response
        finally:
            end_request(token)

    def _process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], *args: Any
    ) -> None:
        """``process_view`` with ``ATOMIC_REQUESTS`` on the primary: note
        whether Django runs the view in ``atomic()`` there, so that reads in
        that block route as outside it."""
        _note_atomic_view(request, view_func, self.default_atomic)

    async def _aprocess_view(
        self, request: HttpRequest, view_func: Callable[..., Any], *args: Any
    ) -> None:
        _note_atomic_view(request, view_func, self.default_atomic)

    def process_request(self, request: HttpRequest) -> None:
        """Pin the current context if the request carries the cookie or may write.

        Kept for code that drives the middleware by hand, as with
        django-multidb-router; ``__call__`` does this and also resets the
        state when the request ends.
        """
        _begin(request)

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Set the pin cookie if the request wrote, or may have written.

        Even if it was already set, reset its expiration time.
        """
        _respond(request, response, _state_of(request))
        return response


def _respond(
    request: HttpRequest, response: HttpResponseBase, state: RequestState | None
) -> None:
    """Set the pin cookie on ``response`` if ``request`` wrote, or may have."""
    if _wants_cookie(request, response, state):
        value = _cookie_value(request, response, state)
        _set_cookie(response, value or _position_token(request, response, state))
    elif _saw_data(state):
        seen = _seen_token(state)  # type: ignore[arg-type]
        if seen is not None:
            _set_cookie(response, seen)


def _send_routed(state: RequestState, response: HttpResponseBase) -> None:
    """Count the request of ``state``, which is ending, in ``multidb.tallies``
    (while something counts), and send ``request_routed`` (while it has
    receivers).

    Its outcome is ``explanation.at_request_end(state)``'s, found by the same
    checks in the same order without building the record, and inline: every
    request pays for it while something counts, and a call is about a tenth
    of its cost.
    """
    pinned = state.pinned
    read_alias: str | None = DEFAULT_DB_ALIAS
    if getattr(response, "_db_write", False):
        # A ``db_write`` view: its block, over now, sent its reads to the
        # primary.
        outcome: explanation.Outcome = "primary_forced"
    elif pinned is TIME_PIN:
        outcome = "primary_pinned_time"
    else:
        try:
            # routers.app_in_atomic()'s answer is most often that this
            # thread's primary connection, as last seen, is in no block.
            maybe_atomic = routers.primary_storage.default.in_atomic_block
        except AttributeError:  # storage not found yet, or no connection yet
            maybe_atomic = True
        if maybe_atomic and routers.app_in_atomic(state, note=False):
            outcome = "primary_atomic"
        else:
            # The state's rotation while it is current: rotation.rotation()
            # without the call.
            replicas = state.rotation
            current = replicas.current
            usable = (replicas if current else rotation.rotation()).usable
            # A state whose rotation is current (with replicas usable) holds
            # a replica.
            replica = state.alias if current else None
            if not usable:
                outcome = "primary_no_replica"
            elif type(pinned) is not int:
                outcome, read_alias = "replica", replica
            else:
                outcome, read_alias = explanation.token_outcome(
                    state, pinned, usable, replica
                )
    if tallies.counting:
        next(tallies.outcomes[outcome])
        checked = state.token_check
        if checked is not None:
            next(tallies.token_checks[checked])
        if state.position_queries:
            tallies.count_position_queries(state.position_queries)
    if request_routed.receivers:
        request_routed.send(
            sender=PinningRouterMiddleware,
            outcome=outcome,
            read_alias=read_alias or "",
            token_check=state.token_check,
            position_queries=state.position_queries,
            group=DEFAULT_DB_ALIAS,
        )


# --- blaming a replica for a failed request ------------------------------------


def _connection_error(error: BaseException | None) -> bool:
    """Whether ``error`` says a server could not be reached or went away.

    A deadlock or a lock timeout on the primary is an ``OperationalError``
    too; SQLSTATE tells them apart where the driver gives one.
    """
    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


@receiver(got_request_exception, dispatch_uid="multidb.middleware")
def _request_failed(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """A request died on a database error: suspect the replica it read from."""
    error = sys.exc_info()[1]
    state = current_request()
    if state is None or not _connection_error(error):
        return
    alias = state.alias
    if state._groups is not None:
        # It may have read several groups' replicas: blame the one whose
        # connection raised, if the traceback says.
        alias = _failed_alias(error) or alias
    if alias != DEFAULT_DB_ALIAS:
        health.registry.report_failure(alias, health.describe(error))


def _failed_alias(error: BaseException | None) -> str | None:
    """The alias of the connection (or cursor) ``error`` was raised in."""
    found = None
    traceback = error.__traceback__ if error is not None else None
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        for candidate in (owner, getattr(owner, "db", None)):
            if isinstance(candidate, BaseDatabaseWrapper):
                found = candidate.alias
        traceback = traceback.tb_next
    return found
