"""How requests were routed, counted for the metrics without a lock.

``PinningRouterMiddleware`` counts each ending request (its outcome, token
check and position queries, for ``default``'s group) while something counts
(``start()``, as ``multidb.contrib.prometheus`` does), and ``totals()``
reads them when the metrics are scraped.

A request's end is on the hot path of every request: a lock, a signal's
dispatch, a thread-local dict, even a call to a function here would cost it
a good part of the rest of the middleware's end.  So each count is an
``itertools.count`` made at import, one per name, that the middleware
advances itself (``next(outcomes[outcome])``), as the standard library
counts (``asyncio``'s task names): ``next()`` is one call into C that the
GIL does not leave halfway (and that free-threaded builds make atomic, since
3.13), so threads counting at once lose no count; and it allocates nothing
that lasts, where a tuple key per request would also cost the garbage
collector.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Literal, TypeAlias, get_args

__all__ = [
    "Key",
    "Outcome",
    "TokenCheck",
    "count_position_queries",
    "counting",
    "outcomes",
    "start",
    "stop",
    "token_checks",
    "totals",
]

#: Where a request's reads went at its end, and why (``multidb.explain``'s
#: ``outcome``).
Outcome: TypeAlias = Literal[
    "replica",
    "primary_pinned_time",
    "primary_token_waiting",
    "primary_forced",
    "primary_atomic",
    "primary_no_replica",
]
#: How the router settled a request's token.
TokenCheck: TypeAlias = Literal["cached", "queried", "behind"]

#: What a count counts: ``("outcome", outcome)``, ``("token_check",
#: result)`` or ``("position_queries", "")``.
Key = tuple[str, str]

#: How many counters have ``start()``-ed and not ``stop()``-ped: the
#: middleware counts while it is above 0.
counting = 0

#: The requests that ended with each outcome, and that settled their token
#: each way.  Fixed at import: no count is ever added, so none is lost to
#: two threads adding it at once, and reading needs no lock.
outcomes: dict[str, itertools.count[int]] = {
    name: itertools.count() for name in get_args(Outcome)
}
token_checks: dict[str, itertools.count[int]] = {
    name: itertools.count() for name in get_args(TokenCheck)
}
_position_queries = itertools.count()

_lock = threading.Lock()


def count_position_queries(queries: int) -> None:
    """Count ``queries`` queries of the primary's position, for a request's
    cookie (rarely any: a loop's set-up costs the middleware more than its
    test)."""
    for _ in range(queries):
        next(_position_queries)


def _read(count: itertools.count[int]) -> int:
    """How many times ``count`` was advanced: the next number it gives,
    read from its repr (``count(5)``), as it has no other reader that
    leaves it be."""
    return int(repr(count)[6:-1])


def totals() -> Counter[Key]:
    """Every request counted so far in this process, by ``Key``."""
    total: Counter[Key] = Counter(
        {("outcome", name): _read(count) for name, count in outcomes.items()}
    )
    total.update(
        {("token_check", name): _read(count) for name, count in token_checks.items()}
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
