"""``PinningRouterMiddleware``: carries "this user just wrote" across requests.

One class serves both WSGI and ASGI, so an async stack makes no thread hops
for it.  Each request runs in a fresh routing scope that is reset in
``finally``; a write anywhere in the request pins the rest of it and sets
the pin cookie on the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from .conf import conf
from .pinning import begin_request, current_request, end_request

READ_ONLY_METHODS = frozenset(["GET", "TRACE", "HEAD", "OPTIONS"])


def pinning_cookie() -> str:
    """The name of the cookie that directs a request's reads to the primary."""
    return conf.PINNING_COOKIE


def pinning_cookie_httponly() -> bool:
    return conf.PINNING_COOKIE_HTTPONLY


def pinning_cookie_samesite() -> str | None:
    return conf.PINNING_COOKIE_SAMESITE


def pinning_cookie_secure() -> bool:
    return conf.PINNING_COOKIE_SECURE


def pinning_seconds() -> int:
    """How long reads stay on the primary after a write, in seconds."""
    return conf.PINNING_SECONDS


def _pins(request: HttpRequest) -> bool:
    # Any value pins, whatever it holds: a cookie we cannot read is treated
    # as a recent write, never as permission to read a stale replica.
    return (
        request.method not in READ_ONLY_METHODS
        or conf.PINNING_COOKIE in request.COOKIES
    )


class PinningRouterMiddleware:
    """Pin a user agent that just wrote to the primary for a while.

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
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        token = begin_request(_pins(request))
        try:
            response = self.get_response(request)
            return self.process_response(request, response)  # type: ignore[arg-type]
        finally:
            end_request(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = begin_request(_pins(request))
        try:
            response = await self.get_response(request)  # type: ignore[misc]
            return self.process_response(request, response)
        finally:
            end_request(token)

    def process_request(self, request: HttpRequest) -> None:
        """Pin the current context if the request carries the cookie or may write.

        Kept for code that drives the middleware by hand, as with
        django-multidb-router; ``__call__`` does this and also resets the
        state when the request ends.
        """
        begin_request(_pins(request))

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Set the pin cookie if the request wrote, or may have written.

        Even if it was already set, reset its expiration time.
        """
        state = current_request()
        if (
            request.method not in READ_ONLY_METHODS
            or getattr(response, "_db_write", False)
            or (state is not None and state.wrote)
        ):
            response.set_cookie(
                conf.PINNING_COOKIE,
                value="y",
                max_age=conf.PINNING_SECONDS,
                secure=conf.PINNING_COOKIE_SECURE,
                httponly=conf.PINNING_COOKIE_HTTPONLY,
                samesite=conf.PINNING_COOKIE_SAMESITE,  # type: ignore[arg-type]
            )
        return response
