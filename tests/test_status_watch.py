"""``manage.py multidb_status --watch`` on SQLite: the lag line and the sample
window (pure functions), the marks of state changes, the option's checks,
and the command's loop with and without rich.  The screen of a real
terminal, against real replicas, is tested in tests/postgres/test_status_watch.py.
"""

from __future__ import annotations

import math
import re
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from multidb import health
from multidb.health import DatabaseStatus
from multidb.management.commands._watch import (
    BLOCKS,
    NO_FIGURE,
    WIDTH,
    WINDOW,
    History,
    buckets,
    seconds,
    sparkline,
)

db = pytest.mark.django_db(transaction=True, databases="__all__")

LOW, HIGH = BLOCKS[0], BLOCKS[-1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def screen_text(output: str) -> str:
    """``output`` without escape codes; a redraw (a carriage return, then the
    cursor moved up) starts on a line of its own."""
    return ANSI.sub("", output.replace("\r", "\n"))


# --- the lag line ------------------------------------------------------------------


def test_a_sparkline_draws_no_lag_as_the_lowest_block():
    assert sparkline([0.0, 0.0, 0.0]) == LOW * 3


def test_a_sparkline_is_scaled_to_its_largest_lag():
    assert sparkline([0.0, 5.0, 10.0, 20.0]) == LOW + BLOCKS[2] + BLOCKS[4] + HIGH


def test_a_sparkline_of_lags_under_a_second_is_scaled_to_one_second():
    assert sparkline([0.001, 0.5, 1.0]) == LOW + BLOCKS[4] + HIGH
    assert sparkline([0.002, 0.004]) == LOW * 2


def test_a_sparkline_leaves_unsampled_cells_blank_and_dots_those_without_a_figure():
    assert sparkline([None, math.nan, 2.0, None]) == f" {NO_FIGURE}{HIGH} "


def test_buckets_keep_each_cells_largest_lag_and_drop_samples_outside_the_window():
    samples = [(39.0, 5.0), (100.0, 1.0), (101.0, 3.0), (101.5, 2.0), (161.0, 9.0)]

    cells = buckets(samples, now=160.0, window=60.0, width=30)

    assert len(cells) == 30
    assert cells[0] == 3.0  # 100 to 102: the largest of 1, 3 and 2
    assert cells[1:] == [3.0] * 29  # held: none later within the window


def test_buckets_are_none_before_the_first_sample_and_hold_each_sample_until_the_next():
    samples = [(2.5, 1.0), (4.5, 3.0)]

    assert buckets(samples, now=6.0, window=6.0, width=6) == [
        None, None, 1.0, 1.0, 3.0, 3.0,
    ]  # fmt: skip


def test_buckets_put_a_sample_taken_now_in_the_last_cell():
    assert buckets([(60.0, 4.0)], now=60.0, window=60.0, width=3) == [None, None, 4.0]


def test_a_sample_without_a_figure_is_nan_unless_its_cell_has_one():
    cells = buckets(
        [(0.5, None), (1.5, None), (1.6, 2.0), (2.5, 3.0), (2.6, None)],
        now=3.0,
        window=3.0,
        width=3,
    )

    assert math.isnan(cells[0])
    assert cells[1:] == [2.0, 3.0]


@pytest.mark.parametrize("interval", [0.2, 1.0, 2.0, 5.0])
def test_the_line_covers_a_minute_whatever_the_interval(interval):
    history = History()
    steps = int(10 * WINDOW / interval)  # ten minutes of refreshes
    for step in range(steps + 1):
        at = step * interval
        lag = 1.0 if at >= 10 * WINDOW - WINDOW / 2 else 0.0  # the last half minute
        history.add([replica("replica1", lag=lag)], at, "12:00:00")

    line = history.line("replica1", now=steps * interval)

    assert len(line) == WIDTH
    assert line.strip(" ") == line  # every cell sampled: no gap
    half = WIDTH // 2
    assert set(line[: half - 1]) == {LOW} and set(line[half + 1 :]) == {HIGH}
    # No more samples kept than the minute holds.
    assert len(history._lags["replica1"]) <= WINDOW / interval + 1


# --- state changes ---------------------------------------------------------------


def replica(alias: str, state: str = "ok", lag: float | None = 0.0) -> DatabaseStatus:
    return DatabaseStatus(alias, "replica", state, lag_seconds=lag)


def test_a_state_change_is_marked_with_the_state_before_and_when_for_a_minute():
    history = History(marked=60.0)
    history.add([replica("replica1")], 0.0, "12:00:00")
    assert history.change("replica1", 0.0) is None  # the first state is no change

    history.add([replica("replica1", "lagging", 31.0)], 2.0, "12:00:02")
    history.add([replica("replica1", "lagging", 33.0)], 4.0, "12:00:04")

    change = history.change("replica1", 62.0)
    assert change is not None
    assert (change.before, change.clock) == ("ok", "12:00:02")
    assert history.change("replica1", 62.5) is None


def test_the_watched_table_marks_the_changed_state_and_adds_the_lag_line():
    history = History()
    primary = DatabaseStatus("default", "primary", "ok", replay_position="0/3000")
    history.add([primary, replica("replica1"), replica("replica2")], 0.0, "12:00:00")
    statuses = [
        primary,
        replica("replica1", "lagging", 31.0),
        DatabaseStatus("replica2", "replica", "ok", lag_bytes=0, lag_seconds=0.0),
    ]
    history.add(statuses, 4.0, "12:00:04")

    header, *rows = history.rows(statuses, 4.0)

    assert header == (
        "ALIAS", "ROLE", "STATE", "LAG BYTES", "LAG SECONDS", "LAG, LAST MINUTE",
        "POSITION", "REASON",
    )  # fmt: skip
    assert rows[0][:6] == ("default", "primary", "ok", "-", "-", "")
    assert rows[1][2] == "lagging (was ok, since 12:00:04)"
    assert rows[1][5] == " " * 28 + LOW + HIGH
    assert rows[2][2:6] == ("ok", "0", "0", " " * 28 + LOW * 2)


@override_settings(
    REPLICA_DATABASES=None,
    MULTIDB_REPLICA_GROUPS={"default": ["replica1"], "billing": ["replica2"]},
)
def test_the_watched_table_keeps_the_group_column_with_replica_groups():
    statuses = [replica("replica1"), replica("replica2")]
    history = History()
    history.add(statuses, 0.0, "12:00:00")

    header, *rows = history.rows(statuses, 0.0)

    assert header[:3] == ("GROUP", "ALIAS", "ROLE")
    assert header[6] == "LAG, LAST MINUTE"
    assert [row[:2] for row in rows] == [
        ("default", "replica1"),
        ("billing", "replica2"),
    ]


# --- the option ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"), [("2", 2.0), ("0.2", 0.2), ("1e1", 10.0)]
)
def test_watch_seconds_are_a_positive_number(given, expected):
    assert seconds(given) == expected


@pytest.mark.parametrize("given", ["0", "-1", "abc", "nan", "inf", ""])
def test_multidb_status_watch_refuses_anything_but_a_positive_number_of_seconds(given):
    with pytest.raises(CommandError) as raised:
        call_command("multidb_status", "--watch", given, stdout=StringIO())

    assert str(raised.value) == (
        f"--watch takes a positive number of seconds, not {given!r}."
    )


@pytest.mark.parametrize("option", ["--json", "--strict"])
def test_multidb_status_watch_refuses_options_for_a_single_probe(option):
    with pytest.raises(CommandError, match=f"^--watch shows the table; {option} is"):
        call_command("multidb_status", "--watch", option, stdout=StringIO())


def test_multidb_status_watch_defaults_to_every_two_seconds():
    parser = _command_parser()

    assert parser.parse_args(["--watch"]).watch == "2"
    assert parser.parse_args([]).watch is None


def _command_parser():
    from multidb.management.commands.multidb_status import Command

    return Command().create_parser("manage.py", "multidb_status")


# --- the loop, in this process ---------------------------------------------------


@pytest.fixture
def interrupted_after(monkeypatch):
    """Ctrl-C during the n-th probe (each one real) of the command's loop."""

    def setup(n: int) -> None:
        probe = health.registry.probe
        calls = 0

        def probe_then_interrupt(apply: bool = True) -> list[DatabaseStatus]:
            nonlocal calls
            calls += 1
            if calls == n:
                raise KeyboardInterrupt
            return probe(apply)

        monkeypatch.setattr(health.registry, "probe", probe_then_interrupt)

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "xterm")
    return setup


def watch_output() -> str:
    out = StringIO()
    call_command("multidb_status", "--watch", "0.01", stdout=out)
    return screen_text(out.getvalue())


TITLE = re.compile(r"^--- \d\d:\d\d:\d\d, every 0\.01s \(Ctrl-C to stop\) --- *$", re.M)


@db
def test_multidb_status_watch_prints_the_plain_table_per_refresh_when_not_a_terminal(
    interrupted_after,
):
    interrupted_after(3)

    output = watch_output()

    tables = TITLE.split(output)
    assert len(tables) == 3 and tables[0] == ""
    for table in tables[1:]:
        lines = table.strip("\n").splitlines()
        assert re.split(r"\s{2,}", lines[0])[:3] == ["ALIAS", "ROLE", "STATE"]
        aliases = [line.split()[0] for line in lines[1:]]
        assert aliases == ["default", "replica1", "replica2"]
        # SQLite has no lag figure: a sampled cell is a dot.
        assert [line.split()[5] for line in lines[2:]] == [NO_FIGURE, NO_FIGURE]


@db
def test_multidb_status_watch_without_rich_prints_the_plain_table(
    interrupted_after, monkeypatch
):
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setenv("FORCE_COLOR", "1")
    interrupted_after(2)

    output = watch_output()

    assert len(TITLE.findall(output)) == 1
    assert "replica2" in output


@db
def test_multidb_status_watch_prints_the_plain_table_on_a_dumb_terminal(
    interrupted_after, monkeypatch
):
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    interrupted_after(3)

    assert len(TITLE.findall(watch_output())) == 2


@db
def test_multidb_status_watch_redraws_a_rich_table_on_a_terminal(
    interrupted_after, monkeypatch
):
    monkeypatch.setenv("FORCE_COLOR", "1")
    interrupted_after(4)

    output = watch_output()

    # rich redraws in place: the title and each alias once per refresh (3),
    # and the last once more as the display stops.
    assert len(TITLE.findall(output)) == 4
    assert output.count("replica2") == 4
    last = output[output.rindex("---") :]
    assert "LAG, LAST MINUTE" in last
    assert re.search(rf"replica1 +replica +ok +- +- +{NO_FIGURE}", last)
