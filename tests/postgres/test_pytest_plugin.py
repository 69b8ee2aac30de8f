"""The pytest plugin (``multidb.testing.pytest_plugin``), as a user meets it:
the suite of a small site (``sample_site/``), whose settings name servers
that do not exist, run by pytest in a subprocess through ``pytester``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SAMPLE = Path(__file__).parent / "sample_site"


@pytest.fixture
def site(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    shutil.copytree(SAMPLE, pytester.path, dirs_exist_ok=True)
    # The site's pytest.ini names its settings; this session's must not leak.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    return pytester


def test_with_the_flag_the_sites_suite_runs_on_real_replication(
    site: pytest.Pytester,
) -> None:
    result = site.runpytest_subprocess(
        "--multidb-cluster", "test_notes.py", "test_helpers.py"
    )

    result.assert_outcomes(passed=9)


def test_the_ini_option_enables_it_too(site: pytest.Pytester) -> None:
    ini = site.path / "pytest.ini"
    ini.write_text(ini.read_text() + "multidb_cluster = true\n")

    result = site.runpytest_subprocess("test_notes.py")

    result.assert_outcomes(passed=2)


def test_without_it_the_plugin_is_inert_and_says_what_is_missing(
    site: pytest.Pytester,
) -> None:
    result = site.runpytest_subprocess("test_inert.py", "test_notes.py")

    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*multidb_cluster fixture needs a cluster*"])
    assert "db.invalid" not in result.stdout.str()


def test_fewer_replicas_than_aliases_is_refused(site: pytest.Pytester) -> None:
    result = site.runpytest_subprocess(
        "--multidb-cluster", "--multidb-replicas", "1", "test_notes.py"
    )

    result.stdout.fnmatch_lines(["*--multidb-replicas 1 is fewer than the 2 aliases*"])
    assert result.ret != 0
