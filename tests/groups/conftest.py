"""Two replica groups, each on its own PostgreSQL cluster, behind
``tests.groups.settings``: ``default`` with ``replica1`` and ``replica2``,
``billing`` with ``billing_r1``.

Every test here is marked ``postgres``, as in tests/postgres: deselect them
with ``-m "not postgres"``.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from multidb.testing.control import SiteCluster

SETTINGS_MODULE = "tests.groups.settings"


def pytest_configure(config: pytest.Config) -> None:
    """These tests run on the pytest plugin's clusters (``--multidb-cluster``,
    implied here), on the ports the settings name, every primary then its
    replicas."""
    from tests.groups.settings import PG_PORTS

    config.option.multidb_cluster = True
    config.option.multidb_ports = ",".join(map(str, PG_PORTS))


@pytest.fixture
def groups_cluster(multidb_cluster: SiteCluster) -> SiteCluster:
    """The plugin's ``SiteCluster`` over both groups' servers; every fault
    made through it is undone when the test ends."""
    if settings.SETTINGS_MODULE != SETTINGS_MODULE:
        pytest.fail(
            f"tests/groups needs its own session: run ./run.sh test tests/groups, "
            f"or python -m pytest --ds={SETTINGS_MODULE} tests/groups "
            f"(the settings are {settings.SETTINGS_MODULE})",
            pytrace=False,
        )
    return multidb_cluster
