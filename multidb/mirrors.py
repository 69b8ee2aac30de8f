"""Test mirrors see what a ``TestCase`` wrote: they share the primary's connection.

A ``TestCase`` runs each test inside a transaction on the primary and rolls
it back.  A replica that is a test mirror of the primary
(``TEST={"MIRROR": "default"}``) reads the same database over a connection
of its own, which cannot see those uncommitted rows (PostgreSQL) or is
locked out by them (SQLite).  So, as Django's live-server tests share
connections, a mirror's alias uses the primary's connection while a
``TestCase``'s block is open on it, and its own connection otherwise.
Routing is unchanged: the router still names the replica.

A mirror the test case does not list in ``databases`` is left alone: a
query there fails as Django makes it fail, with its remedy in the message.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from .conf import DEFAULT_DB_ALIAS

#: What a mirror takes from the primary's connection: its queries.  The rest
#: (transactions included: a ``TestCase`` opens one on each listed mirror
#: too) stays the mirror's own.
_SHARED = frozenset({"cursor", "chunked_cursor"})


def in_testcase(connection: Any) -> bool:
    """Whether a ``TestCase`` (or pytest-django's ``django_db``) has a block
    open on ``connection``."""
    return any(block._from_testcase for block in connection.atomic_blocks)


class SharedMirror:
    """Stands in, in one thread, for a test mirror's connection.

    Queries go to the primary's connection while a ``TestCase`` block is
    open on it, and to the mirror's own connection otherwise; everything
    else is always the mirror's own.
    """

    __slots__ = ("own", "primary")

    def __init__(self, own: Any, primary: Any) -> None:
        object.__setattr__(self, "own", own)
        object.__setattr__(self, "primary", primary)

    def target(self) -> Any:
        own = self.own
        if hasattr(own.cursor, "wrapped"):
            # Django wrapped the method: the test case does not list this
            # alias in ``databases``, and a query here must fail.
            return own
        primary = self.primary
        if primary.in_atomic_block and in_testcase(primary):
            return primary
        return own

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target() if name in _SHARED else self.own, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.own, name, value)


def share(primary: Any) -> None:
    """In this thread, let every test mirror of the primary use ``primary``
    (this thread's connection to it) while a ``TestCase`` block is open."""
    for alias, settings_dict in connections.settings.items():
        mirror = (settings_dict.get("TEST") or {}).get("MIRROR")
        if alias == DEFAULT_DB_ALIAS or mirror != DEFAULT_DB_ALIAS:
            continue
        own = connections[alias]
        if not isinstance(own, SharedMirror):
            connections[alias] = SharedMirror(own, primary)  # type: ignore[assignment]
