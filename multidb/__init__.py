"""Database routers for a primary and its read replicas.

``multidb.ReplicaRouter`` sends reads to the replicas in ``REPLICA_DATABASES``
and writes to ``default``; ``multidb.PinningReplicaRouter`` also keeps a
context that wrote (or asked for it) reading from ``default``.  See README.rst.
"""

from __future__ import annotations

import warnings

from .conf import DEFAULT_DB_ALIAS
from .explanation import Explanation, aexplain, explain
from .health import DatabaseStatus, replica_status
from .pinning import (
    db_write,
    this_thread_is_pinned,
    use_primary_db,
    use_replica,
)
from .routers import (
    DeprecationMixin,
    MasterSlaveRouter,
    NoReplicaAvailable,
    PinningMasterSlaveRouter,
    PinningReplicaRouter,
    ReplicaRouter,
    replica_alias,
)
from .tokens import awrite_token, read_after, write_token

#: 0.11 cached its replica cycle here, and test suites reset it with
#: ``multidb.replicas = None``: the name stays, unused, so that still works
#: (which is why the rotation's module is ``multidb.rotation``).
replicas: None = None

VERSION = (1, 0, 0, "a1")
__version__ = "1.0.0a1"

__all__ = [
    "DEFAULT_DB_ALIAS",
    "DatabaseStatus",
    "Explanation",
    "DeprecationMixin",
    "MasterSlaveRouter",
    "NoReplicaAvailable",
    "PinningMasterSlaveRouter",
    "PinningReplicaRouter",
    "ReplicaRouter",
    "aexplain",
    "db_write",
    "explain",
    "get_replica",
    "awrite_token",
    "get_slave",
    "read_after",
    "replica_status",
    "this_thread_is_pinned",
    "use_primary_db",
    "use_replica",
    "write_token",
]


def get_replica() -> str:
    """The alias of a replica for the current context.

    Within a request (or a ``use_replica`` block) this is the replica that
    the request reads from; elsewhere, the next one in rotation.
    """
    return replica_alias()


def get_slave() -> str:
    warnings.warn(
        "[multidb] The get_slave() method has been deprecated. "
        "Please switch to the get_replica() method.",
        DeprecationWarning,
        stacklevel=2,
    )
    return get_replica()
