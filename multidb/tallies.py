"""How requests were routed, counted for the metrics without a lock.

``PinningRouterMiddleware`` adds each ending request (its outcome, token
check and position queries, for ``default``'s group) while something counts
(``start()``, as ``multidb.contrib.prometheus`` does), and ``totals()``
reads them when the metrics are scraped.

A request's end is on the hot path of every request: a lock, a signal's
dispatch, or a thread-local dict would cost it more than the rest of the
middleware's end.  So each count is an ``itertools.count``, as the
standard library counts (``asyncio``'s task names): its ``next()`` is one
call into C that the GIL does not leave halfway (and that free-threaded
builds make atomic, since 3.13), so threads adding at once lose no count;
and it allocates nothing, where a tuple key per request would also cost the
garbage collector.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

__all__ = ["Key", "add", "counting", "start", "stop", "totals"]

#: What a count counts: ``("outcome", outcome)``, ``("token_check",
#: result)`` or ``("position_queries", "")``.
Key = tuple[str, str]

#: How many counters have ``start()``-ed and not ``stop()``-ped: the
#: middleware counts while it is above 0.
counting = 0

_lock = threading.Lock()
_outcomes: dict[str, itertools.count[int]] = {}
_token_checks: dict[str, itertools.count[int]] = {}
_position_queries = itertools.count()


def add(outcome: str, token_check: str | None, position_queries: int) -> None:
    """Count one request that ended with ``outcome``, having checked its
    token (``token_check``) and asked the primary's position
    ``position_queries`` times."""
    try:
        next(_outcomes[outcome])
    except KeyError:
        next(_new(_outcomes, outcome))
    if token_check is not None:
        try:
            next(_token_checks[token_check])
        except KeyError:
            next(_new(_token_checks, token_check))
    if position_queries:  # rarely: a loop's set-up costs more than the test
        for _ in range(position_queries):
            next(_position_queries)


def _new(counts: dict[str, itertools.count[int]], name: str) -> itertools.count[int]:
    with _lock:
        return counts.setdefault(name, itertools.count())


def _read(count: itertools.count[int]) -> int:
    """How many times ``count`` was advanced: the next number it gives,
    read from its repr (``count(5)``), as it has no other reader that
    leaves it be."""
    return int(repr(count)[6:-1])


def totals() -> Counter[Key]:
    """Every request counted so far in this process, by ``Key``."""
    with _lock:
        found = [("outcome", name, count) for name, count in _outcomes.items()]
        found += [("token_check", name, count) for name, count in _token_checks.items()]
    total: Counter[Key] = Counter(
        {(kind, name): _read(count) for kind, name, count in found}
    )
    total["position_queries", ""] = _read(_position_queries)
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
