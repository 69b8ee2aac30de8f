"""The plugin's options on a site with replica groups, as a user meets them:
a suite run by pytest in a subprocess (``pytester``) on
``tests.groups.settings``.  Each run here stops before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[2]


@pytest.fixture
def site(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    pytester.makepyfile(test_site="def test_uses_it(multidb_cluster):\n    pass\n")
    return pytester


def run(site: pytest.Pytester, *args: str) -> pytest.RunResult:
    return site.runpytest_subprocess(
        "--ds=tests.groups.settings", "--multidb-cluster", *args, "test_site.py"
    )


def test_ports_for_groups_are_counted_primary_then_replicas_group_by_group(
    site: pytest.Pytester,
) -> None:
    result = run(site, "--multidb-ports", "5441,5442,5443")

    result.stdout.fnmatch_lines(
        [
            "*--multidb-ports needs 5 ports (default, 2 of its replicas, "
            "billing, 1 of its replicas), got 3*"
        ]
    )
    assert result.ret != 0


def test_fewer_replicas_than_a_groups_aliases_is_refused(
    site: pytest.Pytester,
) -> None:
    result = run(site, "--multidb-replicas", "1")

    result.stdout.fnmatch_lines(
        [
            "*--multidb-replicas 1 is fewer than the 2 aliases of default's group "
            "in MULTIDB_REPLICA_GROUPS (replica1, replica2)*"
        ]
    )
    assert result.ret != 0
