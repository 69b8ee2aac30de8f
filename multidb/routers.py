"""The database routers named in ``DATABASE_ROUTERS``.

They hold no state: the routing decision lives in ``multidb.pinning`` (pin
state per context) and ``multidb.replicas`` (the rotation).
"""

from __future__ import annotations

import warnings
from typing import Any

from django.db.models import Model

from .conf import DEFAULT_DB_ALIAS
from .pinning import route_read, route_read_ignoring_pins, route_write


class ReplicaRouter:
    """Send reads to replicas and writes to ``default``.

    Pins (``use_primary_db``, the pin cookie) are ignored, as in
    django-multidb-router; reads inside a transaction on ``default`` still
    go to ``default``.
    """

    # The routing functions are the methods themselves: one call less per
    # query (see multidb.pinning).
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
