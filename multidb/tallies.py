"""How requests were routed, counted for the metrics without a lock.

``PinningRouterMiddleware`` adds each ending request's key (its outcome,
token check, position queries and group) while something counts
(``start()``, as ``multidb.contrib.prometheus`` does), and
``totals()`` sums them when the metrics are scraped.

A request's end is on the hot path of every request: a lock, or a signal's
dispatch, would cost it more than the rest of the middleware's end.  So
each thread adds to a dict of its own, which no other thread writes: no
lock, and no count lost.  ``totals()`` copies each dict under the GIL (or,
free-threaded, the dict's own lock).  A thread's dict is folded into one of
ended threads when its thread-locals are cleared (the thread ended), so a
server that starts a thread per request keeps a dict per live thread only.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter, defaultdict

__all__ = ["Key", "add", "counting", "start", "stop", "totals"]

#: ``(outcome, token_check, position_queries, group)``.
Key = tuple[str, "str | None", int, str]

#: How many counters have ``start()``-ed and not ``stop()``-ped: the
#: middleware counts while it is above 0.
counting = 0

_local = threading.local()
_lock = threading.Lock()
#: The dict of each thread that has counted and not ended, by ``id``.
_live: dict[int, defaultdict[Key, int]] = {}
#: What the ended threads counted.
_ended: Counter[Key] = Counter()


class _Owner:
    """Lives as long as its thread's locals: its end folds the counts."""

    __slots__ = ("__weakref__",)


def add(key: Key) -> None:
    """Count one request that ended with ``key``, in this thread's dict."""
    try:
        _local.counts[key] += 1
    except AttributeError:
        _own_counts()[key] += 1


def _own_counts() -> defaultdict[Key, int]:
    counts: defaultdict[Key, int] = defaultdict(int)
    owner = _Owner()
    weakref.finalize(owner, _fold, counts)
    with _lock:
        _live[id(counts)] = counts
    _local.counts, _local.owner = counts, owner
    return counts


def _fold(counts: defaultdict[Key, int]) -> None:
    """``counts``' thread ended: nothing adds to them any more."""
    with _lock:
        del _live[id(counts)]
        _ended.update(counts)


def totals() -> Counter[Key]:
    """Every request counted so far in this process, by key."""
    with _lock:
        total = Counter(_ended)
        for counts in _live.values():
            # A copy: its thread may add a key while this one iterates.
            total.update(counts.copy())
    return total


def start() -> None:
    """Count from now on (until as many ``stop()``)."""
    global counting
    with _lock:
        counting += 1


def stop() -> None:
    global counting
    with _lock:
        counting = max(0, counting - 1)
