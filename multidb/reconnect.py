"""Every thread reconnects to a database server that restarted.

A thread's connection to a server that died stays broken until something
closes it.  Django's request cycle does (``close_old_connections``), but
management commands, scripts, worker loops and the test ``Client`` have no
request cycle.  When the health prober sees a database change state,
``recheck`` arms a one-shot check on every connection to it: at its next
cursor, in its own thread, the connection runs ``is_usable()`` and closes
itself if the server no longer answers on it, so Django reconnects.

Routing pays nothing for this.  The check is an attribute on the connection
that removes itself when it runs.  It is not Django's health-check flags:
Django never checks a pooled connection (the PostgreSQL backend skips the
check when ``OPTIONS["pool"]`` is set), and raising ``health_check_enabled``
would leave a ``SELECT 1`` before every request's first query, for as long
as a persistent connection lives, whenever the check passes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created
from django.db.utils import load_backend

#: The method Django's connections call before every cursor (Django 4.1+).
HOOK = "close_if_health_check_failed"

_lock = threading.Lock()
_wrappers: dict[str, weakref.WeakSet[Any]] = {}


def _record(sender: Any, connection: Any, **kwargs: Any) -> None:
    with _lock:
        _wrappers.setdefault(connection.alias, weakref.WeakSet()).add(connection)


# At import, not in AppConfig.ready(): the routers work without the app in
# INSTALLED_APPS, and multidb.health imports this module.
connection_created.connect(_record, dispatch_uid="multidb.reconnect")


def recheck(alias: str, pool: bool = False) -> None:
    """Make every connection to ``alias`` check itself at its next cursor.

    With ``pool``, also drop the broken idle connections of Django's pool
    for ``alias`` now.  Only for a server that answers: the check runs in
    the calling thread, and waits on a frozen server.
    """
    for wrapper in recorded(alias):
        # One attribute write: the owning thread picks it up at its next cursor.
        setattr(wrapper, HOOK, _check_once(weakref.ref(wrapper), wrapper.connection))
    if pool:
        backend = load_backend(connections.settings[alias]["ENGINE"])
        pools = getattr(backend.DatabaseWrapper, "_connection_pools", {})
        existing = pools.get(alias)  # never create one
        if existing is not None:
            existing.check()


def _check_once(ref: weakref.ref[Any], suspect: Any) -> Callable[[], None]:
    """The check of the wrapper behind ``ref``, for its DB-API connection
    ``suspect`` (the one it had when the server changed state)."""

    def check() -> None:
        wrapper = ref()
        assert wrapper is not None  # it is calling its own attribute
        # Back to the class's method first: one check per recheck().
        vars(wrapper).pop(HOOK, None)
        # A connection made since is healthy, and may not be queried yet:
        # Django calls this from connect() itself, before autocommit is set.
        if (
            wrapper.connection is suspect
            and suspect is not None
            and not wrapper.is_usable()
        ):
            wrapper.close()
        # Django's own check, as configured (a no-op once closed).
        getattr(wrapper, HOOK)()

    return check


def recorded(alias: str) -> list[Any]:
    """The live connection wrappers to ``alias`` that have connected."""
    with _lock:
        return list(_wrappers.get(alias, ()))
