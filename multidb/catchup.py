"""Waiting a bounded time for a replica to replay a position.

With ``MULTIDB_CATCH_UP_WAIT``, a read whose token no replica has replayed
waits up to that many milliseconds for one to replay it, before it reads the
primary (``multidb.routers.read_alias_after`` decides when).

One watcher thread per replica, in each process, asks its replica how far it
has replayed, over a connection of its own, while any request waits on it:
at once when a wait begins, then after 1, 2, 4 and every 8 ms.  However many
requests wait, a replica gets at most one such query per millisecond.  A
request waits on a condition with a monotonic deadline and never queries a
replica itself, so neither a stopped replica nor a frozen one (which would
hang a query until the operating system gives up) makes a wait outlast the
cap: a frozen replica holds up its own watcher, nothing else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

from . import health
from .conf import conf

logger = logging.getLogger("multidb")

#: The first pause between two questions to a replica, and the longest.
FIRST_PAUSE = 0.001
LONGEST_PAUSE = 0.008
#: The pause after a failed question (a replica down, or restarting).
PAUSE_AFTER_ERROR = 0.05


class _Watcher:
    """Follows one replica's replay position while requests wait on it."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        #: The replay position last seen; None if unknown or not a replica.
        self.position: int | None = None
        #: When the question that saw it was sent (``time.monotonic()``).
        self.asked = 0.0
        #: Requests waiting on this replica now.
        self.waiting = 0
        #: Set while any request waits: the thread asks, else it sleeps.
        self.wanted = threading.Event()
        #: A wait began since the last question: ask again without pausing.
        self.hurry = threading.Event()
        self.connection: health._Connection | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.run, name=f"multidb-catch-up-{self.alias}", daemon=True
        )
        self.thread.start()

    def run(self) -> None:
        pause = FIRST_PAUSE
        while True:
            self.wanted.wait()
            self.hurry.clear()
            asked = time.monotonic()
            position, failed = self.ask()
            with _changed:
                self.position, self.asked = position, asked
                _changed.notify_all()
            if failed:
                time.sleep(PAUSE_AFTER_ERROR)
                continue
            hurried = self.hurry.wait(pause)
            pause = FIRST_PAUSE if hurried else min(pause * 2, LONGEST_PAUSE)
            # At most one question a millisecond, however many waits begin.
            time.sleep(max(0.0, asked + FIRST_PAUSE - time.monotonic()))

    def ask(self) -> tuple[int | None, bool]:
        """The replica's replay position now, and whether asking failed."""
        if self.connection is None:
            self.connection = health._Connection(self.alias, conf.HEALTH_CHECK_TIMEOUT)
        connection = self.connection
        try:
            state = connection.run(connection.adapter.replica_state)
        except Exception:  # down, restarting, or forbidden in a test
            logger.debug("catch-up: asking %s failed", self.alias, exc_info=True)
            connection.close()
            self.connection = None
            return None, True
        return (state.replay_position if state.is_replica else None), False


_changed = threading.Condition()
_watchers: dict[str, _Watcher] = {}


def wait_for(position: int, aliases: Iterable[str], seconds: float) -> str | None:
    """The first of ``aliases`` seen at or past ``position`` within
    ``seconds``, or None; for a thread that may block (never an event loop's)."""
    began = time.monotonic()
    deadline = began + seconds
    with _changed:
        watchers = [_watcher(alias) for alias in aliases]
        for watcher in watchers:
            watcher.waiting += 1
            watcher.wanted.set()
            watcher.hurry.set()
        try:
            while True:
                for watcher in watchers:
                    # Only an answer to a question sent since the wait
                    # began: a replica seen earlier may be down by now.
                    seen = watcher.position
                    if watcher.asked >= began and seen is not None and seen >= position:
                        return watcher.alias
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                _changed.wait(remaining)
        finally:
            for watcher in watchers:
                watcher.waiting -= 1
                if not watcher.waiting:
                    watcher.wanted.clear()


def _watcher(alias: str) -> _Watcher:
    """``alias``'s watcher, started on first use (with ``_changed`` held)."""
    watcher = _watchers.get(alias)
    if watcher is None:
        watcher = _watchers[alias] = _Watcher(alias)
        watcher.start()
    return watcher


#: Connections a child inherited, their sockets closed; kept, never
#: finalised (see ``multidb.health._inherited``).
_inherited: list[health._Connection] = []


def _after_fork_in_child() -> None:
    # The watchers' threads did not survive fork, and their connections are
    # the parent's: start over, lazily.
    global _changed, _watchers
    for watcher in _watchers.values():
        if watcher.connection is not None:
            watcher.connection.abandon()
            _inherited.append(watcher.connection)
    _changed, _watchers = threading.Condition(), {}


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)
