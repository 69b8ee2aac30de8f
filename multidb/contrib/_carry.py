"""The token a background task takes from the code that queues it."""

from __future__ import annotations

import asyncio

from ..pinning import current_request
from ..tokens import has_positions, sign_time, write_token


def publisher_token() -> str | None:
    """``write_token()`` for the code queueing a task, wherever it runs.

    On an event loop's thread Django forbids the position query that a
    write needs: a context that wrote (or that may have, outside a request)
    gets a signed time pin instead, so the task reads the primary for
    ``MULTIDB_PINNING_SECONDS``.  Never stale, only less precise; queue from
    a worker thread (``sync_to_async``) to carry the exact position.
    """
    if asyncio._get_running_loop() is None:
        return write_token()
    request = current_request()
    if request is not None and not request.wrote:
        return request.incoming
    return sign_time() if has_positions() else None
