"""Settings for the replica-group tests: two independent PostgreSQL
primaries, ``default`` (replicas ``replica1``, ``replica2``) and ``billing``
(replica ``billing_r1``), the ``billing`` app living on ``billing``.

In the test session the package's pytest plugin starts one cluster per
primary on the ports chosen here (``--multidb-cluster --multidb-ports ...``,
which tests/groups/conftest.py implies), in alias order: every primary, then
its replicas.
"""

from multidb.testing.cluster import Cluster, free_ports
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

# The default group is named here, so REPLICA_DATABASES (its shorthand) must
# not be set too.
del REPLICA_DATABASES  # noqa: F821
MULTIDB_REPLICA_GROUPS = {
    "default": ["replica1", "replica2"],
    "billing": ["billing_r1"],
}
MULTIDB_PRIMARY_FOR = {"billing": "billing"}

#: Every alias, in the order of the ports: each primary, then its replicas.
PG_ALIASES = [
    alias
    for primary, replicas in MULTIDB_REPLICA_GROUPS.items()
    for alias in (primary, *replicas)
]
PG_PORTS: list[int] = free_ports(len(PG_ALIASES))
PG_NODE_PORTS: dict[str, int] = dict(zip(PG_ALIASES, PG_PORTS, strict=True))

# Only describes the servers.
_main = Cluster(2, ports=PG_PORTS[:3]).nodes
_billing = Cluster(1, ports=PG_PORTS[3:]).nodes
DATABASES = {
    "default": _main[0].django_settings(),
    "replica1": _main[1].django_settings(test_mirror="default"),
    "replica2": _main[2].django_settings(test_mirror="default"),
    "billing": _billing[0].django_settings(),
    "billing_r1": _billing[1].django_settings(test_mirror="billing"),
}

DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
INSTALLED_APPS = [*INSTALLED_APPS, "tests.billing"]
ROOT_URLCONF = "tests.groups.urls"
