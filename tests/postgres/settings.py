"""Settings for the real-replication tests: a PostgreSQL primary and two
streaming replicas.

In the test session the package's pytest plugin starts them on the ports
chosen here (``--multidb-cluster --multidb-ports ...``, which
tests/postgres/conftest.py implies) and points these aliases at them, as it
does for any site's suite.  ``MULTIDB_TEST_PG_PORTS="5441,5442,5443"``
(primary first) fixes the ports: a process of its own (``manage.py`` run by
a test) reaches the session's servers that way.
"""

import os

import django

from multidb.testing.cluster import Cluster, free_ports
from tests.settings import *  # noqa: F403

PG_REPLICAS = 2


def _ports() -> list[int]:
    env = os.environ.get("MULTIDB_TEST_PG_PORTS", "").strip()
    if not env:
        return free_ports(PG_REPLICAS + 1)
    ports = [int(p) for p in env.replace(",", " ").split()]
    if len(ports) != PG_REPLICAS + 1:
        raise ValueError(
            f"MULTIDB_TEST_PG_PORTS needs {PG_REPLICAS + 1} ports (primary first), "
            f"got {env!r}"
        )
    return ports


#: The primary's port first, then replica1's and replica2's.
PG_PORTS: list[int] = _ports()
# Only describes the servers.
_primary, _replica1, _replica2 = Cluster(PG_REPLICAS, ports=PG_PORTS).nodes
DATABASES = {
    "default": _primary.django_settings(),
    "replica1": _replica1.django_settings(test_mirror="default"),
    "replica2": _replica2.django_settings(test_mirror="default"),
}
# replica2 reads through Django's connection pool (Django 5.1+), replica1
# without one, so every test runs both paths.
POOLED_REPLICA = "replica2" if django.VERSION >= (5, 1) else None
if POOLED_REPLICA:
    DATABASES[POOLED_REPLICA]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 4}

#: The port of the server behind each alias; a test that runs through
#: PgBouncer (the ``route_via`` fixture) changes the aliases' PORT, not this.
PG_NODE_PORTS: dict[str, int] = {
    alias: int(entry["PORT"]) for alias, entry in DATABASES.items()
}

REPLICA_DATABASES = ["replica1", "replica2"]
DATABASE_ROUTERS = ["tests.app.routers.RecordingPinningRouter"]
ROOT_URLCONF = "tests.postgres.urls"
