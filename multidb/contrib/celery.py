"""Celery tasks that read what the code queueing them wrote.

``multidb.contrib.celery.install()``, once, where the Celery app is made
(the module both the site and the workers import), is all it takes:

* publishing a task attaches the publisher's ``write_token()`` to the
  message's headers (``multidb_token``), when there is one to carry;
* a worker runs the task inside ``read_after(token)``: its reads go to a
  replica that has replayed the publisher's writes, else to the primary;
* a retry, or a task queued by a task that wrote nothing, carries the same
  token on; a task that wrote carries the primary's position after it.

Celery's signals are process-wide, so one call covers every app.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final

from celery import Task, signals

from ..tokens import ReadAfter, read_after
from ._carry import publisher_token

__all__ = ["HEADER", "install", "uninstall"]

#: The message header that carries the token.
HEADER: Final = "multidb_token"
#: Where a running task keeps its ``read_after`` block (on ``task.request``).
_BLOCK: Final = "_multidb_read_after"
_UID: Final = "multidb.contrib.celery"

#: The token the task running in this context carries (for the tasks it queues).
_carried: ContextVar[str | None] = ContextVar("multidb_celery_token", default=None)


def attach_token(headers: dict[str, Any], **kwargs: Any) -> None:
    """``before_task_publish``: put the publisher's token in the headers."""
    # A retry arrives with its original token in the headers; the task's own
    # write, if any, is newer than it.
    token = publisher_token() or headers.get(HEADER) or _carried.get()
    if token is not None:
        headers[HEADER] = token


def enter(task: Task, **kwargs: Any) -> None:
    """``task_prerun``: read after the task's token for the whole run."""
    request = task.request
    # A worker sees the message's headers as the request's attributes;
    # ``apply(headers=...)`` leaves them in ``request.headers``.
    token = getattr(request, HEADER, None) or (request.headers or {}).get(HEADER)
    if not isinstance(token, str):
        return
    block = read_after(token)
    block.__enter__()
    setattr(request, _BLOCK, (block, _carried.set(token)))


def leave(task: Task, **kwargs: Any) -> None:
    """``task_postrun``: end the block ``enter`` began."""
    request = task.request
    entered: tuple[ReadAfter, Any] | None = getattr(request, _BLOCK, None)
    if entered is None:
        return
    delattr(request, _BLOCK)
    block, carried = entered
    block.__exit__(None, None, None)
    _carried.reset(carried)


def install() -> None:
    """Carry tokens through every Celery task of this process."""
    signals.before_task_publish.connect(attach_token, dispatch_uid=_UID, weak=False)
    signals.task_prerun.connect(enter, dispatch_uid=_UID, weak=False)
    signals.task_postrun.connect(leave, dispatch_uid=_UID, weak=False)


def uninstall() -> None:
    """Undo ``install()``."""
    signals.before_task_publish.disconnect(attach_token, dispatch_uid=_UID)
    signals.task_prerun.disconnect(enter, dispatch_uid=_UID)
    signals.task_postrun.disconnect(leave, dispatch_uid=_UID)
