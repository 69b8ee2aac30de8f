"""``manage.py multidb_status --watch`` in a real pseudo-terminal, in a
process of its own that probes the session's cluster: what the screen shows
at each refresh, a replica that falls behind, Ctrl-C, and the plain tables
when rich cannot be imported.

The screen is read as text: escape codes stripped, each redraw on lines of
its own (see ``screen_text``), split into one table per refresh on the
title line that each begins with.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.postgres.test_status import fresh_process_env
from tests.test_status_watch import screen_text

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ALIASES = ("default", "replica1", "replica2")
INTERVAL = "0.2"
#: replica1's lag limit in the watching process: a paused replica passes it
#: within seconds, one that keeps up never comes near it.
MAX_LAG = 1.0
TITLE = re.compile(r"^--- \d\d:\d\d:\d\d, every 0\.2s \(Ctrl-C to stop\) --- *$", re.M)
SPARK = re.compile("[▁▂▃▄▅▆▇█]+")
COLUMNS, LINES = 200, 40

#: Runs the command as ``python -m django`` does, with ``rich`` unimportable.
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(sys.argv)"
)


class Screen:
    """``multidb_status --watch`` running on a pseudo-terminal, with what it
    has written so far."""

    def __init__(self, directory: Path, rich: bool = True) -> None:
        main = ["-m", "django"] if rich else ["-c", WITHOUT_RICH]
        controller, terminal = pty.openpty()
        fcntl.ioctl(
            terminal, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0)
        )
        env = fresh_process_env(directory, MAX_LAG)
        env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES))
        for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, *main, "multidb_status", "--watch", INTERVAL],
            cwd=directory,
            env=env,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
        os.close(terminal)
        self._controller = controller
        self._raw = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._controller, 65536)
            except OSError:  # EIO: the process has gone and closed its end
                return
            if not chunk:
                return
            self._raw += chunk

    @property
    def raw(self) -> str:
        return bytes(self._raw).decode("utf-8", "replace")

    def tables(self) -> list[list[str]]:
        """Each refresh's table drawn in full so far (the last one drawn may
        still be coming): its non-blank lines, header first."""
        drawn = TITLE.split(screen_text(self.raw))[1:-1]
        return [[line for line in t.splitlines() if line.strip()] for t in drawn]

    def row(self, table: list[str], alias: str) -> str:
        (line,) = [line for line in table if line.split()[:1] == [alias]]
        return line

    def wait_for_tables(self, count: int) -> list[list[str]]:
        return wait_until(
            lambda: len(self.tables()) >= count and self.tables(),
            timeout=60,
            what=f"{count} tables on the screen",
        )

    def interrupt(self) -> int:
        """Ctrl-C; the exit status."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=30)
        self._reader.join(10)
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        os.close(self._controller)


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[type[Screen]]:
    """Starts ``Screen``s in ``tmp_path``; none outlives the test (nor the
    faults it leaves to undo)."""
    started: list[Screen] = []

    def start(rich: bool = True) -> Screen:
        started.append(Screen(tmp_path, rich))
        return started[-1]

    yield start  # type: ignore[misc]
    for each in started:
        each.close()


def test_watch_redraws_every_alias_with_a_lag_line_until_ctrl_c(screen):
    watching = screen()

    tables = watching.wait_for_tables(2)
    status = watching.interrupt()

    assert status == 0, watching.raw[-3000:]
    assert "Traceback" not in watching.raw and "KeyboardInterrupt" not in watching.raw
    for table in tables[:2]:
        assert re.split(r"\s{2,}", table[0].strip())[:6] == [
            "ALIAS", "ROLE", "STATE", "LAG BYTES", "LAG SECONDS", "LAG, LAST MINUTE",
        ]  # fmt: skip
        assert [line.split()[0] for line in table[1:]] == list(ALIASES)
        for alias in ALIASES[1:]:
            assert SPARK.search(watching.row(table, alias)), table
        assert not SPARK.search(watching.row(table, "default"))
    # In place: cursor moves and erased lines, not a scrolling log.
    assert "\x1b[2K" in watching.raw


def test_watch_marks_a_paused_replica_lagging_and_draws_its_lag_growing(
    screen, faults, pg_cluster
):
    watching = screen()

    def kept_up_line() -> str | None:
        tables = watching.tables()
        line = tables and SPARK.search(watching.row(tables[-1], "replica1"))
        return line and line.group()

    # A line of three cells (two seconds each) of replica1 keeping up.
    wait_until(lambda: kept_up_line() == "▁▁▁", timeout=60, what="three cells")
    faults.pause("replica1")
    pg_cluster.primary.query("SELECT txid_current()")  # a commit it will not replay

    def marked() -> list[list[str]]:
        return [
            table
            for table in watching.tables()
            if "lagging (was ok, since" in watching.row(table, "replica1")
        ]

    tables = wait_until(
        lambda: len(marked()) >= 2 and marked(),
        timeout=60,
        what="replica1 marked lagging in two tables",
    )
    assert watching.interrupt() == 0
    first, last = (
        re.split(r"\s{2,}", watching.row(table, "replica1"))
        for table in (tables[0], tables[-1])
    )
    assert re.fullmatch(r"lagging \(was ok, since \d\d:\d\d:\d\d\)", last[2])
    assert float(last[4]) > float(first[4]) > MAX_LAG
    # Its line rises from the lowest block (while it kept up) to the top.
    (line,) = SPARK.findall(last[5])
    assert line[0] == "▁" and line[-1] == "█"
    assert re.split(r"\s{2,}", watching.row(tables[-1], "replica2"))[2] == "ok"


def test_watch_without_rich_prints_a_plain_table_per_refresh(screen):
    watching = screen(rich=False)

    tables = watching.wait_for_tables(2)
    status = watching.interrupt()

    assert status == 0, watching.raw[-3000:]
    # No escape codes after the system checks' warnings: plain text.
    assert "\x1b" not in watching.raw[watching.raw.index("--- ") :]
    assert "Traceback" not in watching.raw
    for table in tables[:2]:
        assert table[0].split()[:2] == ["ALIAS", "ROLE"]
        assert [line.split()[0] for line in table[1:]] == list(ALIASES)
        for alias in ALIASES[1:]:
            assert SPARK.search(watching.row(table, alias)), table
