"""``manage.py multidb_status --watch``: the table, probed again and redrawn
every few seconds until Ctrl-C, with each replica's lag over the last minute
and a mark on a state that has just changed.

The command keeps its own samples, one per refresh, so the lag line covers a
minute whatever the interval.  With ``rich`` (the ``watch`` extra) and a
terminal, the table is redrawn in place; otherwise each refresh prints the
plain table again under a line with the time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING

from multidb import health
from multidb.management.commands.multidb_status import layout, rows

if TYPE_CHECKING:
    from rich.console import Console

#: Seconds of lag the line shows, and its width in characters.
WINDOW = 60.0
WIDTH = 30
#: The line's scale tops out at the minute's largest lag, or this many
#: seconds if larger: a replica a few milliseconds behind draws a flat line.
FLOOR = 1.0
#: Seconds a state change stays marked in the STATE cell.
MARKED = 60.0

BLOCKS = "▁▂▃▄▅▆▇█"
#: A refresh that found no lag figure (the replica down, or no positions).
NO_FIGURE = "·"

LINE_HEADER = "LAG, LAST MINUTE"


def seconds(value: str) -> float:
    """``value`` as a positive, finite number of seconds; ValueError if not."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(value)
    return number


def buckets(
    samples: Iterable[tuple[float, float | None]],
    now: float,
    window: float = WINDOW,
    width: int = WIDTH,
) -> list[float | None]:
    """``samples`` ((time, lag) pairs) of the ``window`` seconds up to ``now``
    in ``width`` cells, oldest first: each cell the largest lag sampled in
    its span, NaN if it was sampled without a figure.  A cell with no sample
    holds the one before it (refreshes slower than a cell's span), or None
    before the first sample."""
    cells: list[float | None] = [None] * width
    start = now - window
    for at, lag in samples:
        if not start <= at <= now:
            continue
        i = min(int((at - start) / window * width), width - 1)
        cell = cells[i]
        if lag is None:
            if cell is None:
                cells[i] = math.nan
        elif cell is None or math.isnan(cell) or lag > cell:
            cells[i] = lag
    for i in range(1, width):
        if cells[i] is None:
            cells[i] = cells[i - 1]
    return cells


def sparkline(cells: Iterable[float | None], floor: float = FLOOR) -> str:
    """``cells`` (see ``buckets``) as block characters, lowest for 0, scaled
    to the largest figure or ``floor``: a blank for a cell not sampled,
    ``NO_FIGURE`` for one sampled without a figure."""
    cells = list(cells)
    top = max([floor, *(c for c in cells if c is not None and not math.isnan(c))])
    line = []
    for cell in cells:
        if cell is None:
            line.append(" ")
        elif math.isnan(cell):
            line.append(NO_FIGURE)
        else:
            line.append(BLOCKS[round(cell / top * (len(BLOCKS) - 1))])
    return "".join(line)


@dataclass(frozen=True)
class Change:
    before: str
    at: float
    clock: str


class History:
    """What the command remembers between refreshes: each replica's lag
    samples of the last ``window`` seconds, and each database's last state
    change."""

    def __init__(self, window: float = WINDOW, marked: float = MARKED) -> None:
        self.window = window
        self.marked = marked
        self._lags: dict[str, deque[tuple[float, float | None]]] = {}
        self._states: dict[str, str] = {}
        self._changes: dict[str, Change] = {}

    def add(
        self, statuses: Iterable[health.DatabaseStatus], at: float, clock: str
    ) -> None:
        """Record a refresh's ``statuses``, found at ``at`` (monotonic seconds;
        ``clock`` is that time as shown)."""
        for status in statuses:
            if status.role == "replica":
                lags = self._lags.setdefault(status.alias, deque())
                lags.append((at, status.lag_seconds))
                while lags[0][0] < at - self.window:
                    lags.popleft()
            before = self._states.get(status.alias, status.state)
            if before != status.state:
                self._changes[status.alias] = Change(before, at, clock)
            self._states[status.alias] = status.state

    def line(self, alias: str, now: float) -> str:
        """``alias``'s lag over the window, empty for a primary."""
        if alias not in self._lags:
            return ""
        return sparkline(buckets(self._lags[alias], now, self.window))

    def change(self, alias: str, now: float) -> Change | None:
        """``alias``'s last state change, if within ``marked`` seconds."""
        change = self._changes.get(alias)
        if change is None or now - change.at > self.marked:
            return None
        return change

    def rows(
        self, statuses: list[health.DatabaseStatus], now: float
    ) -> list[tuple[str, ...]]:
        """The status table's rows, with a changed state marked and the lag
        line after the lag figures."""
        header, *body = rows(statuses)
        state = header.index("STATE")
        after = header.index("LAG SECONDS") + 1
        watched = [(*header[:after], LINE_HEADER, *header[after:])]
        for status, row in zip(statuses, body, strict=True):
            cells = list(row)
            change = self.change(status.alias, now)
            if change is not None:
                cells[state] = (
                    f"{status.state} (was {change.before}, since {change.clock})"
                )
            cells.insert(after, self.line(status.alias, now))
            watched.append(tuple(cells))
        return watched


def title(clock: str, interval: float) -> str:
    return f"--- {clock}, every {interval:g}s (Ctrl-C to stop) ---"


def watch(
    out: IO[str],
    interval: float,
    probe: Callable[[], list[health.DatabaseStatus]],
) -> None:
    """Probe and show the table every ``interval`` seconds until Ctrl-C."""
    history = History()
    console = _terminal(out)

    def refresh() -> tuple[list[tuple[str, ...]], str]:
        statuses = probe()
        now, clock = time.monotonic(), datetime.now().strftime("%H:%M:%S")
        history.add(statuses, now, clock)
        return history.rows(statuses, now), clock

    try:
        if console is None:
            while True:
                table, clock = refresh()
                out.write(f"{title(clock, interval)}\n{layout(table)}\n")
                out.flush()
                time.sleep(interval)
        else:
            _live(console, refresh, interval)
    except KeyboardInterrupt:
        return


def _terminal(out: IO[str]) -> Console | None:
    """A rich console on ``out`` if rich is installed and ``out`` is a
    terminal that can move its cursor (a pipe, a file or a dumb terminal
    gets the plain tables, one per refresh)."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console(file=out)
    return console if console.is_terminal and not console.is_dumb_terminal else None


STYLES = {"ok": "green", "lagging": "yellow", "down": "red", "promoted": "magenta"}


def _live(
    console: Console,
    refresh: Callable[[], tuple[list[tuple[str, ...]], str]],
    interval: float,
) -> None:
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def render() -> Table:
        (header, *body), clock = refresh()
        table = Table(
            title=title(clock, interval), title_justify="left", box=None, pad_edge=False
        )
        for name in header:
            table.add_column(name, no_wrap=True)
        state = header.index("STATE")
        for row in body:
            cells: list[str | Text] = list(row)
            word = row[state].split(" ", 1)[0]
            changed = " bold" if word != row[state] else ""
            cells[state] = Text(row[state], style=STYLES.get(word, "") + changed)
            table.add_row(*cells)
        return table

    with Live(render(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(render(), refresh=True)
