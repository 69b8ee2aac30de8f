"""Django tasks that read what the code queueing them wrote.

Define tasks with this module's ``task`` instead of ``django.tasks.task``
(Django 6.0+; the ``django-tasks`` backport on older Django)::

    from multidb.contrib.tasks import task

    @task
    def send_receipt(order_id): ...

* ``enqueue()`` and ``aenqueue()`` add the publisher's ``write_token()`` to
  the task's keyword arguments (``multidb_token``), when there is one to
  carry: it is stored with the task by whatever backend runs it;
* the task runs inside ``read_after(token)``: its reads go to a replica that
  has replayed the publisher's writes, else to the primary.  A backend that
  runs a task again runs it with the arguments it stored: the same token.

The framework's signals cannot carry it: ``task_enqueued`` is sent after a
backend has stored the task.  The tasks made here are ``Task`` objects of
the framework itself (not of a backend's own ``task_class``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from functools import wraps
from typing import TYPE_CHECKING, Any, Final

from asgiref.sync import iscoroutinefunction, sync_to_async

from ..tokens import read_after
from ._carry import publisher_token

if TYPE_CHECKING:
    from django.tasks import Task as BaseTask
    from django.tasks import TaskResult
    from django.tasks import task as base_task
else:
    try:
        from django.tasks import base as framework
    except ImportError:  # Django < 6.0: the django-tasks backport
        from django_tasks import base as framework
    BaseTask, base_task = framework.Task, framework.task

__all__ = ["KWARG", "CarryingTask", "task"]

#: The keyword argument that carries the token with the task.
KWARG: Final = "multidb_token"


def _with_token(kwargs: dict[str, Any], token: str | None) -> dict[str, Any]:
    return kwargs if token is None else {**kwargs, KWARG: token}


class CarryingTask(BaseTask):  # type: ignore[type-arg]
    """A task whose enqueueing carries the publisher's token."""

    def enqueue(self, *args: Any, **kwargs: Any) -> TaskResult:  # type: ignore[type-arg]
        return BaseTask.enqueue(self, *args, **_with_token(kwargs, publisher_token()))

    async def aenqueue(self, *args: Any, **kwargs: Any) -> TaskResult:  # type: ignore[type-arg]
        # From a worker thread: the exact position, not the event loop's
        # fallback of a time pin.
        token = await sync_to_async(publisher_token)()
        return await BaseTask.aenqueue(self, *args, **_with_token(kwargs, token))


def _reading_after(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, run inside ``read_after`` the token its caller passed."""
    if iscoroutinefunction(func):

        @wraps(func)
        async def async_run(*args: Any, **kwargs: Any) -> Any:
            with read_after(kwargs.pop(KWARG, None)):
                return await func(*args, **kwargs)

        return async_run

    @wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        with read_after(kwargs.pop(KWARG, None)):
            return func(*args, **kwargs)

    return run


def task(function: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``django.tasks.task``, for a task that reads what its publisher wrote;
    it takes the same options (``priority``, ``queue_name``, ``backend``,
    ``takes_context``)."""

    def make(func: Callable[..., Any]) -> CarryingTask:
        made = base_task(_reading_after(func), **options)
        return CarryingTask(
            **{field.name: getattr(made, field.name) for field in fields(made)}
        )

    return make if function is None else make(function)
