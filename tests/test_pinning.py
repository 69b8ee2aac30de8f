"""Pin state per context: the 0.11 thread API, the blocks, and what a write pins.

django-multidb-router 0.11 keeps one flag (and one saved "old" flag) in a
``threading.local``: nested blocks overwrite the saved flag, asyncio tasks on
one thread share it, and an ``async def`` decorated with ``use_primary_db``
runs unpinned.  These tests pin down the per-context behaviour that replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections, router, transaction
from django.http import HttpResponse

from multidb import pinning, rotation, routers
from multidb.pinning import (
    NO_PIN,
    TIME_PIN,
    db_write,
    mark_as_write,
    pin_this_thread,
    this_thread_is_pinned,
    unpin_this_thread,
    use_primary_db,
    use_replica,
)
from tests.app.models import Item
from tests.conftest import request_scope

REPLICAS = {"replica1", "replica2"}
TIMEOUT = 5.0  # bounds every wait on a barrier or a thread


def read() -> str:
    """Where a read of ``Item`` goes now, as Django asks the routers."""
    return router.db_for_read(Item)


def kind(alias: str) -> str:
    assert alias == "default" or alias in REPLICAS, alias
    return "primary" if alias == "default" else "replica"


def state() -> tuple[bool, str]:
    """What a caller can observe: the pin flag and where reads go."""
    return this_thread_is_pinned(), kind(read())


# --- the 0.11 thread API, per context ----------------------------------------


def test_pin_and_unpin_this_thread_toggle_the_current_context():
    assert state() == (False, "replica")
    pin_this_thread()
    assert state() == (True, "primary")
    pin_this_thread()  # idempotent
    assert state() == (True, "primary")
    unpin_this_thread()
    assert state() == (False, "replica")
    unpin_this_thread()  # unpinning an unpinned context does nothing
    assert state() == (False, "replica")


def test_pin_this_thread_in_one_thread_does_not_pin_another_thread():
    pin_this_thread()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(state).result(TIMEOUT) == (False, "replica")
    assert state() == (True, "primary")


@pytest.mark.asyncio
async def test_pin_this_thread_in_one_task_does_not_pin_a_sibling_task():
    """0.11: tasks on one event loop share the thread-local flag."""
    pinned = asyncio.Event()
    checked = asyncio.Event()

    async def pinner() -> tuple[bool, str]:
        pin_this_thread()
        pinned.set()
        await asyncio.wait_for(checked.wait(), TIMEOUT)
        return state()

    async def bystander() -> tuple[bool, str]:
        await asyncio.wait_for(pinned.wait(), TIMEOUT)
        try:
            return state()
        finally:
            checked.set()

    assert await asyncio.gather(pinner(), bystander()) == [
        (True, "primary"),
        (False, "replica"),
    ]
    assert state() == (False, "replica")


# --- nesting restores the outer state exactly --------------------------------


OUTER_STATES: dict[str, Callable[[contextlib.ExitStack], None]] = {
    "unpinned": lambda stack: None,
    "pin_this_thread": lambda stack: pin_this_thread(),
    "pinned_request": lambda stack: (
        stack.enter_context(request_scope(TIME_PIN)) and None
    ),
    "unpinned_request": lambda stack: (
        stack.enter_context(request_scope(NO_PIN)) and None
    ),
    "use_replica": lambda stack: stack.enter_context(use_replica),
    "use_primary_db": lambda stack: stack.enter_context(use_primary_db),
}


def write() -> str:
    """Route a write, and show the primary's watcher a statement that writes,
    as a connection to the primary does before running it (the statement
    itself goes nowhere: these tests have no database)."""
    alias = router.db_for_write(Item)
    pinning._note_primary_use(
        lambda *args: None, "INSERT INTO item VALUES (1)", None, False, {}
    )
    return alias


class Boom(Exception):
    pass


INNER_ACTIONS: dict[str, Callable[[], None]] = {
    "nothing": lambda: None,
    "pin_this_thread": pin_this_thread,
    "unpin_this_thread": unpin_this_thread,
    "use_replica_block": lambda: _reads_in(use_replica) and None,
    "write": lambda: write() and None,
    "raise": lambda: (_ for _ in ()).throw(Boom()),
}


def _nesting_cases() -> Iterator[object]:
    for outer in OUTER_STATES:
        for inner in INNER_ACTIONS:
            yield pytest.param(outer, inner, id=f"{outer}-{inner}")


@pytest.mark.parametrize(("outer", "inner"), list(_nesting_cases()))
def test_nested_use_primary_db_restores_outer_state(outer, inner):
    """0.11 overwrites its saved flag on nesting and stays pinned afterwards.

    The restored scope must be the very object that was current before.
    """
    with contextlib.ExitStack() as stack:
        OUTER_STATES[outer](stack)
        before = state()
        scope_before = pinning._scope.get()
        with contextlib.suppress(Boom), use_primary_db:
            assert state() == (True, "primary")
            with use_primary_db:
                assert state() == (True, "primary")
                INNER_ACTIONS[inner]()
            assert state() == (True, "primary")
        assert pinning._scope.get() is scope_before
        if inner == "write" and pinning.current_request() is not None:
            # By design a write pins the rest of its request, block or not.
            assert state() == (True, "primary")
        else:
            assert state() == before


@pytest.mark.parametrize("inner", list(INNER_ACTIONS))
def test_use_replica_inside_use_primary_db_restores_the_primary(inner):
    with use_primary_db:
        with contextlib.suppress(Boom), use_replica:
            assert kind(read()) == "replica"
            INNER_ACTIONS[inner]()
        assert state() == (True, "primary")
    assert state() == (False, "replica")


def test_use_primary_db_exits_on_an_exception_and_lets_it_propagate():
    with pytest.raises(Boom), use_primary_db:
        raise Boom
    assert state() == (False, "replica")
    assert pinning._scope.get() is pinning._ROOT


@pytest.mark.parametrize(
    "scope",
    [
        "unpinned",
        "pin_this_thread",
        "use_primary_db",
        "use_replica",
        "pinned_request",
        "unpinned_request",
        "use_replica_in_pinned_request",
        "use_primary_db_in_unpinned_request",
        "pin_this_thread_in_use_replica",
        "use_replica_in_pinned_request_reports",
    ],
)
def test_this_thread_is_pinned_reports_where_reads_go(scope):
    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        if scope == "pin_this_thread":
            pin_this_thread()
        elif scope == "use_primary_db":
            enter(use_primary_db)
        elif scope == "use_replica":
            enter(use_replica)
        elif scope in ("pinned_request", "unpinned_request"):
            enter(request_scope(TIME_PIN if scope == "pinned_request" else NO_PIN))
        elif scope == "use_replica_in_pinned_request":
            enter(request_scope(TIME_PIN))
            enter(use_replica)
            # The documented part: reads go to a replica even in a pinned request.
            assert kind(read()) == "replica"
            return
        elif scope == "use_primary_db_in_unpinned_request":
            enter(request_scope(NO_PIN))
            enter(use_primary_db)
        elif scope == "pin_this_thread_in_use_replica":
            enter(use_replica)
            pin_this_thread()
        elif scope == "use_replica_in_pinned_request_reports":
            enter(request_scope(TIME_PIN))
            enter(use_replica)
        pinned, where = state()
        assert pinned == (where == "primary")


# --- the singletons under concurrency ----------------------------------------


def _nested_use_in_lockstep(wait: Callable[[], object], uses_block: bool) -> list:
    """Nested use_primary_db, stepping in lockstep with the other workers."""
    seen = []
    wait()
    if uses_block:
        with use_primary_db:
            wait()
            with use_primary_db:
                wait()
                seen.append(state())
                wait()
            seen.append(state())
            wait()
    else:
        for _ in range(4):
            wait()
            seen.append(state())
    wait()
    seen.append(state())
    return seen


PINNED_RUN = [(True, "primary"), (True, "primary"), (False, "replica")]
UNPINNED_RUN = [(False, "replica")] * 5


def test_use_primary_db_shared_by_many_threads_never_leaks_a_pin():
    """0.11: nested use overwrites its saved flag, leaving the thread pinned."""
    workers = 8
    barrier = threading.Barrier(workers, timeout=TIMEOUT)
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_nested_use_in_lockstep, barrier.wait, i % 2 == 0)
            for i in range(workers)
        ]
        results = [f.result(TIMEOUT * 10) for f in futures]
    for i, seen in enumerate(results):
        assert seen == (PINNED_RUN if i % 2 == 0 else UNPINNED_RUN), i
    assert state() == (False, "replica")


@pytest.mark.asyncio
async def test_use_primary_db_shared_by_many_tasks_never_leaks_a_pin():
    """0.11: tasks on one thread see each other's pins and end up pinned."""
    workers = 8
    barrier = asyncio.Barrier(workers)

    async def worker(uses_block: bool) -> list:
        seen = []

        async def wait() -> None:
            await asyncio.wait_for(barrier.wait(), TIMEOUT)

        await wait()
        if uses_block:
            with use_primary_db:
                await wait()
                with use_primary_db:
                    await wait()
                    seen.append(state())
                    await wait()
                seen.append(state())
                await wait()
        else:
            for _ in range(4):
                await wait()
                seen.append(state())
        await wait()
        seen.append(state())
        return seen

    results = await asyncio.gather(*(worker(i % 2 == 0) for i in range(workers)))
    for i, seen in enumerate(results):
        assert seen == (PINNED_RUN if i % 2 == 0 else UNPINNED_RUN), i
    assert state() == (False, "replica")


@pytest.mark.asyncio
async def test_use_primary_db_interleaved_across_tasks_restores_each_task():
    """Task A enters, B enters, A exits, B exits: 0.11 leaves the thread pinned."""
    a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def task_a() -> tuple[bool, str]:
        with use_primary_db:
            a_in.set()
            await asyncio.wait_for(b_in.wait(), TIMEOUT)
        a_out.set()
        return state()

    async def task_b() -> tuple[bool, str]:
        await asyncio.wait_for(a_in.wait(), TIMEOUT)
        with use_primary_db:
            b_in.set()
            await asyncio.wait_for(a_out.wait(), TIMEOUT)
            inside = state()
        assert inside == (True, "primary")
        return state()

    assert await asyncio.gather(task_a(), task_b()) == [(False, "replica")] * 2
    assert state() == (False, "replica")


# --- use_replica ---------------------------------------------------------------


def _reads_in(block: object, n: int = 6) -> list[str]:
    with block:  # type: ignore[attr-defined]
        return [read() for _ in range(n)]


@pytest.mark.parametrize(
    "make_block",
    [lambda: use_replica, lambda: use_replica(), lambda: use_replica(None)],
    ids=["bare", "called", "called-None"],
)
def test_use_replica_block_reads_one_replica_even_when_pinned(make_block):
    pin_this_thread()
    dbs = _reads_in(make_block())
    assert len(set(dbs)) == 1
    assert dbs[0] in REPLICAS
    assert state() == (True, "primary")


def test_use_replica_with_an_alias_reads_that_replica():
    with use_primary_db:
        assert _reads_in(use_replica("replica2")) == ["replica2"] * 6
        assert _reads_in(use_replica("replica1")) == ["replica1"] * 6
        assert kind(read()) == "primary"


def test_use_replica_block_sticks_to_one_replica_while_free_reads_rotate():
    free = {read() for _ in range(4)}
    assert free == REPLICAS  # the rotation alternates outside a block
    for _ in range(4):
        assert len(set(_reads_in(use_replica))) == 1


def test_use_replica_in_a_request_shares_the_request_replica():
    with request_scope(NO_PIN):
        request_replica = read()
        assert request_replica in REPLICAS
        assert _reads_in(use_replica) == [request_replica] * 6
        assert _reads_in(use_replica()) == [request_replica] * 6
        assert routers.replica_alias() == request_replica


def test_use_replica_in_a_pinned_request_reads_the_request_replica_then_restores():
    with request_scope(TIME_PIN):
        assert kind(read()) == "primary"
        dbs = _reads_in(use_replica)
        assert len(set(dbs)) == 1 and dbs[0] in REPLICAS
        assert kind(read()) == "primary"


def test_sync_functions_decorated_with_use_replica_read_a_replica():
    @use_replica
    def bare() -> list[str]:
        return [read() for _ in range(3)]

    @use_replica("replica2")
    def fixed() -> list[str]:
        return [read() for _ in range(3)]

    @use_replica()
    def called() -> list[str]:
        return [read() for _ in range(3)]

    assert bare.__name__ == "bare"
    with use_primary_db:
        dbs = bare()
        assert len(set(dbs)) == 1 and dbs[0] in REPLICAS
        assert fixed() == ["replica2"] * 3
        assert len(set(called())) == 1
        assert state() == (True, "primary")


@pytest.mark.asyncio
async def test_async_functions_decorated_with_use_replica_read_a_replica():
    @use_replica
    async def bare() -> list[str]:
        dbs = [read()]
        await asyncio.sleep(0)
        return [*dbs, read()]

    @use_replica("replica2")
    async def fixed() -> list[str]:
        await asyncio.sleep(0)
        return [read(), read()]

    assert inspect.iscoroutinefunction(bare)
    assert inspect.iscoroutinefunction(fixed)
    with use_primary_db:
        dbs = await bare()
        assert len(set(dbs)) == 1 and dbs[0] in REPLICAS
        assert await fixed() == ["replica2", "replica2"]
        assert state() == (True, "primary")


@pytest.mark.parametrize(
    "use",
    [
        lambda: _reads_in(use_replica("nope")),
        lambda: use_replica("nope")(lambda: None)(),
    ],
    ids=["block", "decorator"],
)
def test_use_replica_with_an_unknown_alias_raises_and_names_the_remedy(use):
    with pytest.raises(ValueError, match="'nope'") as excinfo:
        use()
    message = str(excinfo.value)
    assert "REPLICA_DATABASES" in message
    assert "use_replica()" in message
    assert pinning._scope.get() is pinning._ROOT  # nothing left entered


def test_writes_inside_use_replica_go_to_default():
    with use_replica("replica1"):
        assert router.db_for_write(Item) == "default"
        assert read() == "replica1"
    with request_scope(NO_PIN) as request, use_replica:
        assert write() == "default"
        assert kind(read()) == "replica"  # the block still wins over the write pin
        assert request.pinned and request.wrote
    # outside the block the write pins the request (checked in the write tests)


# --- use_primary_db, db_write, mark_as_write ----------------------------------


def test_use_primary_db_with_parentheses_is_the_same_block_and_decorator():
    assert use_primary_db() is use_primary_db
    with use_primary_db():
        assert state() == (True, "primary")
    assert state() == (False, "replica")

    @use_primary_db()
    def called() -> tuple[bool, str]:
        return state()

    @use_primary_db
    def bare() -> tuple[bool, str]:
        return state()

    assert called() == bare() == (True, "primary")
    assert state() == (False, "replica")


@pytest.mark.asyncio
async def test_use_primary_db_on_an_async_function_pins_while_the_body_runs():
    """0.11's decorator returns the coroutine unstarted, after unpinning."""

    @use_primary_db
    async def body() -> list[tuple[bool, str]]:
        seen = [state()]
        await asyncio.sleep(0)
        seen.append(state())
        return seen

    assert inspect.iscoroutinefunction(body)
    assert await body() == [(True, "primary")] * 2
    assert state() == (False, "replica")


@pytest.mark.asyncio
async def test_db_write_on_an_async_view_pins_while_the_body_runs_and_marks_it():
    """0.11 runs the coroutine unpinned and fails to mark the coroutine's response."""

    @db_write
    async def view(request: object) -> HttpResponse:
        await asyncio.sleep(0)
        response = HttpResponse()
        response.seen = state()  # type: ignore[attr-defined]
        return response

    assert inspect.iscoroutinefunction(view)
    assert view.__name__ == "view"
    response = await view(None)
    assert response.seen == (True, "primary")
    assert response._db_write is True
    assert state() == (False, "replica")


def test_db_write_on_a_sync_view_pins_and_marks_even_inside_use_replica():
    @db_write
    def view(request: object) -> HttpResponse:
        response = HttpResponse()
        response.seen = state()  # type: ignore[attr-defined]
        return response

    with use_replica:
        response = view(None)
        assert kind(read()) == "replica"
    assert response.seen == (True, "primary")
    assert response._db_write is True


def test_db_write_restores_state_when_the_view_raises():
    @db_write
    def view(request: object) -> HttpResponse:
        raise Boom

    with pytest.raises(Boom):
        view(None)
    assert state() == (False, "replica")


def test_mark_as_write_marks_and_returns_the_same_response():
    response = HttpResponse()
    assert not hasattr(response, "_db_write")
    assert mark_as_write(response) is response
    assert response._db_write is True
    assert state() == (False, "replica")  # marking does not pin


# --- a write pins the rest of its request -------------------------------------


def test_a_write_in_a_request_pins_the_rest_of_that_request():
    """0.11 has no notion of a request: a write never pins its reads."""
    with request_scope(NO_PIN) as request:
        assert state() == (False, "replica")
        assert not request.wrote
        assert router.db_for_write(Item) == "default"
        assert not request.pinned and not request.wrote  # routing is not writing
        assert write() == "default"
        assert request.pinned and request.wrote
        assert state() == (True, "primary")
        with use_primary_db:
            pass
        assert state() == (True, "primary")
    assert state() == (False, "replica")


def test_a_write_in_a_nested_block_pins_the_whole_request():
    with request_scope(NO_PIN) as request:
        with use_primary_db:
            write()
        assert request.wrote
        assert state() == (True, "primary")


@pytest.mark.asyncio
async def test_a_write_in_a_sub_task_pins_the_request_it_belongs_to():
    with request_scope(NO_PIN):

        async def write_in_a_task() -> None:
            write()

        await asyncio.create_task(write_in_a_task())
        assert state() == (True, "primary")


def test_a_write_outside_a_request_pins_nothing():
    assert router.db_for_write(Item) == "default"
    assert routers.route_write(None, Item) == "default"
    assert state() == (False, "replica")
    assert pinning.current_request() is None


def test_a_write_in_one_request_does_not_pin_a_concurrent_request():
    wrote = threading.Event()

    def other_request() -> list[tuple[bool, str]]:
        with request_scope(NO_PIN):
            assert wrote.wait(TIMEOUT)
            return [state(), state()]

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(other_request)
        with request_scope(NO_PIN):
            write()
            wrote.set()
            assert state() == (True, "primary")
        assert other.result(TIMEOUT) == [(False, "replica")] * 2


def test_unpin_this_thread_at_request_level_unpins_the_rest_of_the_request():
    with request_scope(TIME_PIN) as request:
        unpin_this_thread()
        assert not request.pinned
        assert state() == (False, "replica")


def test_a_request_reads_from_one_replica_while_free_reads_rotate():
    with request_scope(NO_PIN):
        assert len({read() for _ in range(10)}) == 1
    assert {read() for _ in range(4)} == REPLICAS


def test_a_request_moves_off_a_replica_taken_out_of_rotation():
    with request_scope(NO_PIN):
        first = read()
        rotation.exclude({first})
        second = read()
        assert second in REPLICAS - {first}
        assert {read() for _ in range(4)} == {second}


# --- transactions on the primary ---------------------------------------------


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_app_in_atomic_tracks_atomic_on_the_primary():
    assert routers.app_in_atomic() is False
    with transaction.atomic():
        assert routers.app_in_atomic() is True
        assert read() == "default"
        with use_replica("replica1"):
            assert read() == "replica1"  # an explicit replica still wins
    assert routers.app_in_atomic() is False
    assert kind(read()) == "replica"
    with transaction.atomic(using="replica1"):
        assert routers.app_in_atomic() is False


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_app_in_atomic_from_a_fresh_thread(monkeypatch):
    # Forget the storage found so far, so the fresh thread takes the slow path.
    monkeypatch.setattr(routers, "primary_storage", routers._NotFound())

    def fresh_thread() -> list[object]:
        seen: list[object] = [routers.app_in_atomic(), kind(read())]
        try:
            with transaction.atomic():
                seen += [routers.app_in_atomic(), read()]
            seen += [routers.app_in_atomic(), kind(read())]
        finally:
            connections.close_all()
        return seen

    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(fresh_thread).result(TIMEOUT)
    assert seen == [False, "replica", True, "default", False, "replica"]


def test_routing_in_a_thread_that_never_opened_a_connection():
    def fresh_thread() -> list[str]:
        return [kind(routers.route_read(None, Item)) for _ in range(2)]

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(fresh_thread).result(TIMEOUT) == ["replica"] * 2


@pytest.mark.asyncio
async def test_routing_inside_a_running_event_loop_returns_a_sane_alias():
    asyncio.get_running_loop()
    assert kind(read()) == "replica"
    assert kind(Item.objects.all().db) == "replica"
    with use_primary_db:
        assert Item.objects.all().db == "default"
    with request_scope(NO_PIN):
        dbs = {Item.objects.all().db for _ in range(5)}
        assert len(dbs) == 1 and dbs <= REPLICAS
        await asyncio.sleep(0)
        assert {Item.objects.all().db} == dbs
    with request_scope(TIME_PIN):
        assert Item.objects.all().db == "default"


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_routing_in_an_event_loop_does_not_depend_on_the_fast_path(monkeypatch):
    """An event loop started inside a sync atomic() block (as pytest-asyncio does
    for a non-transactional django_db test) sees a connection that is not in a
    transaction; every read it routes must get the same answer."""
    monkeypatch.setattr(routers, "primary_storage", routers._NotFound())

    async def route_twice() -> list[object]:
        # Django's own answer for this context: its connection is not in atomic().
        django_says = connections["default"].in_atomic_block
        return [django_says, *(kind(Item.objects.all().db) for _ in range(3))]

    with transaction.atomic():
        assert asyncio.run(route_twice()) == [False, "replica", "replica", "replica"]
    assert read() != "default"


def test_replica_alias_follows_the_block_then_the_request_then_the_rotation():
    assert {routers.replica_alias() for _ in range(4)} == REPLICAS
    with request_scope(TIME_PIN):
        request_replica = routers.replica_alias()
        assert {routers.replica_alias() for _ in range(4)} == {request_replica}
        with use_replica("replica2"):
            assert routers.replica_alias() == "replica2"
        with use_primary_db:  # ignores pins
            assert routers.replica_alias() == request_replica


def test_app_in_atomic_works_when_django_hides_its_thread_local(monkeypatch):
    """If a future asgiref stops exposing a ``threading.local``, the fast path
    stays off and the answer still comes from Django's connection."""

    class Connection:
        in_atomic_block = True
        atomic_blocks = [transaction.Atomic("default", savepoint=True, durable=False)]

    class Connections:
        _connections = object()  # no ``_storage``

        def __getitem__(self, alias: str) -> Connection:
            assert alias == "default"
            return Connection()

    found = routers._NotFound()
    monkeypatch.setattr(routers, "primary_storage", found)
    monkeypatch.setattr(routers, "connections", Connections())
    assert routers.app_in_atomic() is True
    assert read() == "default"
    assert routers.primary_storage is found


def test_a_write_after_a_settled_token_stays_pinned_when_its_replica_leaves():
    with request_scope(NO_PIN) as request:
        first = read()
        request.settled = 0x3000148  # it had settled on `first` for a token
        write()  # then the request wrote
        with use_primary_db:
            unpin_this_thread()  # this block reads replicas anyway
            rotation.exclude({first})
            assert read() in REPLICAS - {first}
        assert request.pinned is TIME_PIN
        assert read() == "default"


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_request_in_a_fresh_thread_inside_atomic_reads_the_primary(monkeypatch):
    # Forget the storage found so far: the fast path cannot see this
    # thread's connection, and must not take that for "no transaction".
    monkeypatch.setattr(routers, "primary_storage", routers._NotFound())

    def fresh_thread() -> list[str]:
        try:
            with request_scope(NO_PIN), transaction.atomic():
                monkeypatch.setattr(routers, "primary_storage", routers._NotFound())
                return [read(), read()]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(fresh_thread).result(TIMEOUT) == ["default", "default"]


def test_start_request_returns_the_state_current_request_gives():
    token, state = pinning.start_request(pinning.NO_PIN, "a token")
    try:
        assert pinning.current_request() is state
        assert state.incoming == "a token"
    finally:
        pinning.end_request(token)
    assert pinning.current_request() is None
