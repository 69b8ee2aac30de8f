"""A real PostgreSQL primary and streaming replicas for a site's own pytest
suite (with pytest-django).

Registered through the ``pytest11`` entry point, so installing the package
is enough; it does nothing unless asked, with ``--multidb-cluster`` on the
command line or ``multidb_cluster = true`` in the ini file.  Then:

- before pytest-django creates the test databases, a primary and one
  streaming replica per alias in ``REPLICA_DATABASES`` start on loopback
  (``--multidb-replicas N`` for another number), and the site's
  ``DATABASES`` aliases are pointed at them: ``default`` at the primary,
  which holds the test database, the replica aliases at the replicas, as
  test mirrors of ``default`` that receive it by streaming replication;
- a site with replica groups (``MULTIDB_REPLICA_GROUPS`` naming more than
  one primary) gets one independent cluster per primary, started in
  parallel, each with its own ``initdb`` and one replica per alias of its
  group; each replica alias is a test mirror of its own primary;
- once the test database exists, and after each test that committed
  (``transaction=True``, ``TransactionTestCase``, ``live_server``), the
  replicas are waited for until they have replayed everything;
- the ``multidb_cluster`` fixture (a :class:`~multidb.testing.control.SiteCluster`)
  pauses, resumes, delays, stops, starts and promotes servers by alias, all
  undone when the test ends, and ``record()`` tells which server answered
  each query.

This module imports only pytest until the cluster is asked for.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from multidb.testing.cluster import Cluster
    from multidb.testing.control import SiteCluster

_ENABLE = "--multidb-cluster"
_session_cluster = pytest.StashKey["SiteCluster"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("multidb", "django-replica-router")
    group.addoption(
        _ENABLE,
        action="store_true",
        default=None,
        help="run the test databases on a PostgreSQL primary with streaming "
        "replicas started for the session (django-replica-router)",
    )
    group.addoption(
        "--multidb-replicas",
        type=int,
        default=None,
        metavar="N",
        help="how many replicas to start (default: one per alias in "
        "REPLICA_DATABASES); with replica groups, for each primary (default: one "
        "per alias of its group)",
    )
    group.addoption(
        "--multidb-ports",
        default=None,
        metavar="PORTS",
        help="the servers' ports, primary first, e.g. 5441,5442,5443 "
        "(default: free ones); with replica groups, group after group (default "
        "first, then in the order of MULTIDB_REPLICA_GROUPS), each primary's "
        "port then its replicas'",
    )
    parser.addini(
        "multidb_cluster",
        type="bool",
        default=False,
        help="as --multidb-cluster",
    )


def enabled(config: pytest.Config) -> bool:
    flag = config.getoption(_ENABLE)
    return bool(flag) if flag is not None else bool(config.getini("multidb_cluster"))


_NOT_ENABLED = (
    f"the multidb_cluster fixture needs a cluster: run pytest with {_ENABLE}, "
    "or set multidb_cluster = true in the ini file"
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Say what is missing before pytest-django tries the site's own servers."""
    uses = {"multidb_cluster", "multidb_cluster_session"}
    if uses & set(getattr(item, "fixturenames", ())) and not enabled(item.config):
        pytest.fail(_NOT_ENABLED, pytrace=False)


@pytest.fixture(scope="session")
def multidb_cluster_session(request: pytest.FixtureRequest) -> Iterator[SiteCluster]:
    """The session's cluster, with the site's aliases pointed at it."""
    config = request.config
    if not enabled(config):
        pytest.fail(_NOT_ENABLED, pytrace=False)
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS

    from multidb.groups import groups
    from multidb.testing.cluster import Cluster
    from multidb.testing.control import SiteCluster

    if not settings.configured:
        pytest.fail(
            f"{_ENABLE} needs Django settings (pytest-django's --ds or "
            "DJANGO_SETTINGS_MODULE)",
            pytrace=False,
        )
    layout = {primary: list(weights) for primary, weights in groups().items()}
    counts = _replica_counts(config, layout)
    ports = _ports(config)
    if len(layout) == 1:
        clusters = {DEFAULT_DB_ALIAS: Cluster(replicas=counts[0], ports=ports)}
    else:
        clusters = _group_clusters(layout, counts, ports)
    _start(list(clusters.values()))
    try:
        site = SiteCluster.for_groups(clusters, layout)
        site.point_settings()
        config.stash[_session_cluster] = site
        yield site
    finally:
        if _session_cluster in config.stash:
            del config.stash[_session_cluster]
        _close_connections()
        for cluster in clusters.values():
            cluster.stop()


def _replica_counts(config: pytest.Config, layout: dict[str, list[str]]) -> list[int]:
    """How many replicas each group's cluster starts."""
    count = config.getoption("--multidb-replicas")
    if count is None:
        return [len(aliases) for aliases in layout.values()]
    for primary, aliases in layout.items():
        if count < len(aliases):
            where = (
                "in REPLICA_DATABASES"
                if len(layout) == 1
                else f"of {primary}'s group in MULTIDB_REPLICA_GROUPS"
            )
            pytest.fail(
                f"--multidb-replicas {count} is fewer than the {len(aliases)} "
                f"aliases {where} ({', '.join(aliases)})",
                pytrace=False,
            )
    return [count] * len(layout)


def _group_clusters(
    layout: dict[str, list[str]], counts: list[int], ports: list[int] | None
) -> dict[str, Cluster]:
    """One cluster per primary, each initialised on its own: independent
    servers, as the primaries of replica groups are."""
    from multidb.testing.cluster import Cluster

    wanted = sum(count + 1 for count in counts)
    if ports is not None and len(ports) != wanted:
        order = ", ".join(
            f"{primary}, {count} of its replicas"
            for primary, count in zip(layout, counts, strict=True)
        )
        pytest.fail(
            f"--multidb-ports needs {wanted} ports ({order}), got {len(ports)}",
            pytrace=False,
        )
    clusters = {}
    start = 0
    for primary, count in zip(layout, counts, strict=True):
        own = None if ports is None else ports[start : start + count + 1]
        start += count + 1
        clusters[primary] = Cluster(replicas=count, ports=own, own_initdb=True)
    return clusters


def _start(clusters: list[Cluster]) -> None:
    """Start the clusters together; if one fails, stop the others."""
    if len(clusters) == 1:
        clusters[0].start()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
        futures = [pool.submit(cluster.start) for cluster in clusters]
    errors = [exc for exc in (f.exception() for f in futures) if exc is not None]
    if errors:
        for cluster in clusters:
            cluster.stop()
        raise errors[0]


def _ports(config: pytest.Config) -> list[int] | None:
    raw = config.getoption("--multidb-ports")
    if not raw:
        return None
    try:
        return [int(port) for port in str(raw).replace(",", " ").split()]
    except ValueError:
        raise pytest.UsageError(
            f"--multidb-ports takes port numbers, primary first, not {raw!r}"
        ) from None


def _close_connections() -> None:
    """Close this thread's connections and Django's pools (5.1+), so that no
    pool reconnects to servers that are gone."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


@pytest.fixture(scope="session", autouse=True)
def _multidb_cluster_first(request: pytest.FixtureRequest) -> None:
    """With the cluster asked for, it starts before anything else of the
    session (pytest-django's ``django_db_setup`` included) and stops after."""
    if enabled(request.config):
        request.getfixturevalue("multidb_cluster_session")


# An old-style wrapper: new-style ones (wrapper=True) need pytest 8 and
# pluggy 1.2, and this module is loaded by every run where the package is
# installed.
@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Generator[None, Any, None]:
    """Once pytest-django's ``django_db_setup`` has created the test
    database, wait until the replicas have it too."""
    outcome = yield
    if fixturedef.argname == "django_db_setup" and outcome.excinfo is None:
        site = request.config.stash.get(_session_cluster, None)
        if site is not None:
            site.wait_caught_up()


@pytest.fixture
def multidb_cluster(
    request: pytest.FixtureRequest, multidb_cluster_session: SiteCluster
) -> Iterator[SiteCluster]:
    """The cluster's servers by alias (every group's, with replica groups):
    ``pause``, ``resume``, ``delay``, ``stop``, ``start``, ``promote``,
    ``wait_caught_up`` and ``record``.  Every fault is undone when the test
    ends."""
    yield multidb_cluster_session
    multidb_cluster_session.restore()


_replay_pending = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _multidb_replicas_caught_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """Before a test that follows one that committed, wait until the replicas
    have replayed it (its rows, then the flush that removed them), so that
    the test does not read them there."""
    config = request.config
    site = config.stash.get(_session_cluster, None)
    if site is not None and config.stash.get(_replay_pending, False):
        site.wait_caught_up()
        config.stash[_replay_pending] = False
    yield
    if site is not None and _commits(request):
        config.stash[_replay_pending] = True


def _commits(request: pytest.FixtureRequest) -> bool:
    """Whether the test's database changes were committed rather than rolled
    back."""
    names = set(request.fixturenames)
    if names & {"transactional_db", "live_server", "django_db_reset_sequences"}:
        return True
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and (
        marker.kwargs.get("transaction") or (marker.args and marker.args[0])
    ):
        return True
    cls = getattr(request.node, "cls", None)
    if cls is None:
        return False
    from django.test import TestCase, TransactionTestCase

    return issubclass(cls, TransactionTestCase) and not issubclass(cls, TestCase)
