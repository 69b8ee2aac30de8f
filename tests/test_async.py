"""Routing under asyncio: the async ORM, async views, concurrent requests.

The async ORM runs its queries (and so its routing decisions) in a
``sync_to_async`` worker thread.  django-multidb-router 0.11 keeps its pin in
a ``threading.local``, which the worker thread does not see, and which all the
requests served by one event loop share: every test here fails on it.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, router
from django.test import AsyncClient

from multidb import pinning
from multidb.conf import conf
from multidb.pinning import (
    db_write,
    pin_this_thread,
    this_thread_is_pinned,
    use_primary_db,
)
from tests.app import views
from tests.app.models import Item

REPLICAS = {"replica1", "replica2"}
TIMEOUT = 5.0

db = pytest.mark.django_db(transaction=True, databases="__all__")


def reads(decisions: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
    return [(alias, thread) for kind, alias, thread in decisions if kind == "read"]


def pin_client() -> AsyncClient:
    client = AsyncClient()
    client.cookies[conf.PINNING_COOKIE] = "y"
    return client


# --- the async ORM inside and outside use_primary_db -------------------------


@db
@pytest.mark.asyncio
async def test_async_orm_reads_in_use_primary_db_go_to_default_in_the_worker_thread(
    decisions,
):
    await Item.objects.acreate(name="a")
    loop_thread = threading.get_ident()
    decisions.clear()
    with use_primary_db:
        assert await Item.objects.acount() == 1
        assert (await Item.objects.aget(name="a")).name == "a"
        assert [item.name async for item in Item.objects.all()] == ["a"]
    seen = reads(decisions)
    assert len(seen) == 3
    for alias, thread in seen:
        assert alias == "default"
        assert thread != loop_thread  # decided in the worker thread
    assert not this_thread_is_pinned()


@db
@pytest.mark.asyncio
async def test_async_orm_reads_outside_a_block_go_to_replicas(decisions):
    await Item.objects.acreate(name="a")
    loop_thread = threading.get_ident()
    decisions.clear()
    assert await Item.objects.acount() == 1
    assert (await Item.objects.aget(name="a")).name == "a"
    assert [item.name async for item in Item.objects.all()] == ["a"]
    seen = reads(decisions)
    assert len(seen) == 3
    assert {alias for alias, _ in seen} == REPLICAS  # free reads rotate
    assert all(thread != loop_thread for _, thread in seen)


@db
@pytest.mark.asyncio
async def test_use_primary_db_on_an_async_function_routes_its_orm_calls(decisions):
    @use_primary_db
    async def count_twice() -> list[int]:
        first = await Item.objects.acount()
        await asyncio.sleep(0)
        return [first, await Item.objects.acount()]

    assert await count_twice() == [0, 0]
    assert [alias for alias, _ in reads(decisions)] == ["default", "default"]
    decisions.clear()
    await Item.objects.acount()
    assert reads(decisions)[0][0] in REPLICAS


@db
@pytest.mark.asyncio
async def test_db_write_on_an_async_function_routes_its_orm_calls(decisions):
    @db_write
    async def view(request: object) -> object:
        await Item.objects.acount()
        return type("Response", (), {})()

    response = await view(None)
    assert response._db_write is True
    assert [alias for alias, _ in reads(decisions)] == ["default"]


@pytest.mark.asyncio
async def test_a_pin_set_in_a_worker_thread_comes_back_to_the_caller_only():
    """0.11 pins the worker thread itself, and every later caller it serves."""
    await sync_to_async(pin_this_thread)()
    assert this_thread_is_pinned()

    async def other_caller() -> bool:
        return await sync_to_async(this_thread_is_pinned)()

    # A sibling task that started from an unpinned context stays unpinned.
    pinning.unpin_this_thread()
    sibling = asyncio.create_task(other_caller())
    pin_this_thread()
    assert await sibling is False
    assert await sync_to_async(this_thread_is_pinned)() is True


# --- async views through AsyncClient -----------------------------------------


@db
@pytest.mark.asyncio
async def test_db_write_async_view_reads_default_and_sets_the_cookie():
    response = await AsyncClient().get("/async-decorated-write/")
    assert response.status_code == 200
    assert response.json() == {"db": "default"}
    assert response.cookies[conf.PINNING_COOKIE].value == "y"
    assert not this_thread_is_pinned()


@db
@pytest.mark.asyncio
async def test_a_write_in_an_async_view_pins_the_rest_of_the_request(decisions):
    """0.11 never pins on a write, and sets no cookie on a GET that wrote."""
    loop_thread = threading.get_ident()
    response = await AsyncClient().get("/async-create-then-query/")
    assert response.status_code == 200
    body = response.json()
    assert body["before"] in REPLICAS
    assert body["after"] == "default"
    assert body["count"] == 1 and body["pk"] > 0
    assert response.cookies[conf.PINNING_COOKIE].value == "y"
    # The write and the reads after it were decided in the worker thread.
    worker = [
        (kind, alias) for kind, alias, thread in decisions if thread != loop_thread
    ]
    assert worker[0] == ("write", "default")
    assert [alias for kind, alias in worker[1:] if kind == "read"] == ["default"] * 2
    assert not this_thread_is_pinned()


@db
@pytest.mark.asyncio
async def test_an_async_request_reads_one_replica_for_its_whole_life(decisions):
    loop_thread = threading.get_ident()
    for _ in range(3):
        decisions.clear()
        response = await AsyncClient().get("/async-query-many/")
        body = response.json()
        assert body["pinned"] is False
        aliases = {alias for alias, _ in reads(decisions)}
        assert len(aliases) == 1 and aliases <= REPLICAS
        assert body["db"] in aliases  # the loop thread agrees with the worker
        assert {thread for _, thread in reads(decisions)} - {loop_thread}


@db
@pytest.mark.asyncio
async def test_a_sync_request_under_asyncclient_reads_one_replica_for_its_whole_life():
    seen = set()
    for _ in range(4):
        body = (await AsyncClient().get("/read-many/")).json()
        assert len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS
        seen.add(body["dbs"][0])
    assert seen == REPLICAS  # each request picks afresh


@pytest.mark.asyncio
async def test_concurrent_interleaved_async_requests_each_follow_their_own_pin(
    monkeypatch,
):
    """20 requests on one event loop, forced to interleave at every read.

    0.11's thread-local pin is shared by all of them: the pinned half would
    pin the other half (or the reverse) depending on the interleaving.
    """
    n = 20
    monkeypatch.setattr(views, "READ_BARRIER", asyncio.Barrier(n))

    async def one(pinned: bool) -> tuple[bool, dict]:
        client = pin_client() if pinned else AsyncClient()
        response = await client.get("/async-read-many/")
        assert response.status_code == 200
        return pinned, response.json()

    results = await asyncio.wait_for(
        asyncio.gather(*(one(i % 2 == 0) for i in range(n))), TIMEOUT * 2
    )
    used = set()
    for pinned, body in results:
        assert body["pinned"] is pinned
        assert len(body["dbs"]) == 5
        if pinned:
            assert body["dbs"] == ["default"] * 5
        else:
            assert len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS
            used.add(body["dbs"][0])
    assert used == REPLICAS
    assert not this_thread_is_pinned()


@db
@pytest.mark.asyncio
async def test_concurrent_mixed_requests_with_queries_never_cross(decisions):
    """Sync and async views, pinned and not, writes, all at once."""
    routes = ["/async-query-many/", "/read-many/", "/async-read-many/"]

    async def one(i: int) -> tuple[bool, str, dict]:
        pinned = i % 2 == 0
        route = routes[i % len(routes)]
        client = pin_client() if pinned else AsyncClient()
        response = await client.get(route)
        assert response.status_code == 200
        return pinned, route, response.json()

    writes = [AsyncClient().get("/async-create-then-query/") for _ in range(3)]
    results = await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(21)), *writes), TIMEOUT * 2
    )
    for result in results[:21]:
        pinned, route, body = result
        assert body["pinned"] is pinned, route
        dbs = body.get("dbs", [body.get("db")])
        if pinned:
            assert set(dbs) == {"default"}, route
        else:
            assert len(set(dbs)) == 1 and dbs[0] in REPLICAS, route
    for response in results[21:]:
        assert response.json()["after"] == "default"
        assert conf.PINNING_COOKIE in response.cookies


@pytest.mark.asyncio
async def test_routing_in_an_async_view_body_is_decided_on_the_event_loop_thread():
    loop_thread = threading.get_ident()
    body = (await AsyncClient().get("/async-read-many/")).json()
    assert body["thread"] == loop_thread
    assert len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS
    assert router.db_for_read(Item) in REPLICAS


def test_an_async_post_builds_no_connection_wrapper_on_the_event_loop(monkeypatch):
    # On an event loop's thread, each request's context has a connection
    # storage of its own, as under a server, whose contexts never had one:
    # a connections[alias] in the middleware would build a DatabaseWrapper
    # for every request.
    built: list[str] = []
    create = connections.create_connection

    def counted(alias: str):
        built.append(alias)
        return create(alias)

    monkeypatch.setattr(connections, "create_connection", counted)
    cookies = []

    def serve() -> None:  # a new thread: an empty context, as a server's
        response = asyncio.run(AsyncClient().post("/async-thread-info/"))
        cookies.append(conf.PINNING_COOKIE in response.cookies)

    for _ in range(3):
        thread = threading.Thread(target=serve)
        thread.start()
        thread.join()

    assert cookies == [True, True, True]
    assert built == []
