"""The PostgreSQL cluster behind ``tests.postgres.settings``.

Every test here is marked ``postgres``.  A missing PostgreSQL makes them
error, never skip: deselect them with ``-m "not postgres"`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.cluster import Cluster

SETTINGS_MODULE = "tests.postgres.settings"
HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.postgres)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``-m "not postgres"`` deselects this whole session: that is a success,
    not pytest's "no tests collected" (exit 5), e.g. under tox."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and "not postgres" in (
        session.config.option.markexpr or ""
    ):
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A primary and two streaming replicas on the ports in the settings."""
    if settings.SETTINGS_MODULE != SETTINGS_MODULE:
        pytest.fail(
            f"tests/postgres needs its own session: run ./run.sh test, or "
            f"python -m pytest --ds={SETTINGS_MODULE} tests/postgres "
            f"(the settings are {settings.SETTINGS_MODULE})",
            pytrace=False,
        )
    cluster = Cluster(
        replicas=len(settings.PG_PORTS) - 1,
        base_dir=settings.PG_BASE_DIR,
        ports=settings.PG_PORTS,
    )
    cluster.start()  # raises (so the tests error) when PostgreSQL is missing
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def django_db_setup(
    pg_cluster: Cluster, django_db_setup: None, django_db_blocker: object
) -> Iterator[None]:
    """pytest-django's ``django_db_setup``, with the cluster running first.

    pytest sets the arguments up in order: ``pg_cluster``, then the original
    ``django_db_setup``, which creates ``test_postgres`` on the primary and
    makes the replica aliases mirrors (their NAME becomes ``test_postgres``
    too).  The replicas receive that database by streaming replication.
    """
    pg_cluster.wait_caught_up()
    yield
    # Before the original fixture drops the test database and pg_cluster
    # stops the servers: close connections and pools, so that no pool keeps
    # reconnecting to a database or server that is gone.
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        for conn in connections.all(initialized_only=True):
            conn.close()
            close_pool = getattr(conn, "close_pool", None)  # Django 5.1+
            if close_pool is not None:
                close_pool()


@pytest.fixture(autouse=True)
def _replicas_caught_up(pg_cluster: Cluster) -> None:
    """Each test starts with the replicas replaying everything (the previous
    test's flush included)."""
    for node in pg_cluster.replicas:
        if node.paused:
            pg_cluster.resume_replay(node)
    pg_cluster.wait_caught_up()
