"""``multidb.contrib.celery``'s hooks, in process and on SQLite (which has
no positions): which token a message carries and what a task runs inside.

That a task really reads its publisher's write, from the primary while the
replicas lag and from a replica once one has it, is tested with a real
worker process against the real cluster: tests/postgres/test_celery.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals

from multidb import this_thread_is_pinned, tokens
from multidb.contrib import celery as multidb_celery
from multidb.contrib.celery import HEADER, attach_token
from multidb.pinning import begin_request, current_scope, end_request


@pytest.fixture
def token() -> str:
    """A valid token; on SQLite it pins by time for ``MULTIDB_PINNING_SECONDS``
    after it is signed, so each test signs its own."""
    return tokens.sign(0x3000148)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("contrib_tests", set_as_current=False)
    multidb_celery.install()
    try:
        yield app
    finally:
        multidb_celery.uninstall()


def headers_published(**headers: Any) -> dict[str, Any]:
    attach_token(headers=headers)
    return headers


def test_install_connects_the_hooks_once_and_uninstall_removes_them():
    hooks = (signals.before_task_publish, signals.task_prerun, signals.task_postrun)
    before = [len(hook.receivers) for hook in hooks]
    multidb_celery.install()
    multidb_celery.install()
    assert [len(hook.receivers) for hook in hooks] == [n + 1 for n in before]
    multidb_celery.uninstall()
    assert [len(hook.receivers) for hook in hooks] == before


def test_a_publisher_with_nothing_to_carry_adds_no_header():
    # SQLite has no positions: outside a request there is no token.
    assert headers_published() == {}


def test_a_request_that_wrote_nothing_carries_the_token_it_came_with(token):
    scope = begin_request(None, incoming=token)
    try:
        assert headers_published() == {HEADER: token}
    finally:
        end_request(scope)


def test_a_retry_keeps_the_token_its_message_carries(token):
    assert headers_published(**{HEADER: token}) == {HEADER: token}


@pytest.mark.asyncio
async def test_on_the_event_loop_a_request_that_wrote_nothing_carries_its_token(
    token,
):
    scope = begin_request(None, incoming=token)
    try:
        assert headers_published() == {HEADER: token}
    finally:
        end_request(scope)


@pytest.mark.asyncio
async def test_on_the_event_loop_a_write_without_positions_carries_nothing():
    scope = begin_request(None)
    current_scope().request.wrote = True  # type: ignore[union-attr]
    try:
        assert headers_published() == {}
    finally:
        end_request(scope)


@pytest.mark.parametrize("carried", [True, False], ids=["with-a-token", "without"])
def test_a_task_runs_inside_read_after_its_token_and_restores_the_scope(
    app, token, carried
):
    # Without positions a valid token pins by time: the task reads the
    # primary, and a task it queues carries the same token.
    headers = {HEADER: token} if carried else None
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def job(self: Any) -> None:
        seen["pinned"] = this_thread_is_pinned()
        seen["child"] = headers_published()

    outer = current_scope()
    job.apply(headers=headers)
    assert seen == {"pinned": carried, "child": headers or {}}
    assert current_scope() is outer
