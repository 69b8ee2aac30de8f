"""A bounded catch-up wait (``MULTIDB_CATCH_UP_WAIT``) and monotonic reads
(``MULTIDB_MONOTONIC_READS``), against a real primary and two replicas.

Replicas are held behind with paused replay or ``recovery_min_apply_delay``,
and every read reports the port of the server that answered it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client, override_settings

from multidb import catchup, middleware, rotation, tokens
from multidb.middleware import pinning_cookie
from multidb.pinning import NO_PIN, begin_request, current_request, end_request
from multidb.positions import parse_lsn
from tests.app.models import Item
from tests.postgres.conftest import Faults
from tests.postgres.test_tokens import (
    PRIMARY,
    REPLICA_PORTS,
    cookie_token,
    find,
    pause_both,
    port,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Each test runs twice: directly, and through PgBouncer (transaction mode).
    pytest.mark.usefixtures("route_via"),
]

#: A cap no test reaches when the wait works (the replica catches up well
#: within it).
LONG_WAIT_MS = 10_000


def waiting_on(alias: str) -> bool:
    watcher = catchup._watchers.get(alias)
    return watcher is not None and watcher.waiting > 0


def when_waiting(alias: str, then: Any) -> threading.Thread:
    """Run ``then()`` in a thread once a request waits on ``alias``."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while not waiting_on(alias) and time.monotonic() < deadline:
            time.sleep(0.001)
        then()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# --- MULTIDB_CATCH_UP_WAIT --------------------------------------------------


def test_without_a_wait_a_token_no_replica_has_replayed_reads_the_primary(faults):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "unwaited"})

    answer = find(client, "unwaited")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)
    assert not waiting_on("replica1") and not waiting_on("replica2")


@override_settings(MULTIDB_CATCH_UP_WAIT=LONG_WAIT_MS)
def test_a_read_waits_for_the_replica_that_replays_its_token_within_the_cap(faults):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "waited"})
    # Replay resumes only once the read is waiting: without the wait, the
    # read would have gone to the primary.
    resumer = when_waiting("replica1", lambda: faults.resume("replica1"))

    answer = find(client, "waited")
    resumer.join()

    assert (answer["found"], answer["port"]) == (True, port("replica1"))


@override_settings(MULTIDB_CATCH_UP_WAIT=LONG_WAIT_MS)
def test_a_read_after_a_failed_wait_does_not_wait_again_in_the_same_request(faults):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "twice"})

    with override_settings(MULTIDB_CATCH_UP_WAIT=50):
        started = time.monotonic()
        reads = client.get("/find-many/", {"name": "twice", "times": 20}).json()
        elapsed = time.monotonic() - started

    assert {(r["found"], r["port"]) for r in reads["reads"]} == {(True, PRIMARY)}
    # Twenty reads that each waited 50 ms would take a second at least.
    assert elapsed < 0.9


@pytest.mark.parametrize("fault", ["stop", "freeze"])
def test_a_wait_never_outlasts_its_cap_with_a_replica_stopped_or_frozen(
    faults: Faults, fault: str
) -> None:
    # Both watchers hold a connection first: a frozen replica then hangs a
    # question in flight, which the operating system would never time out.
    with override_settings(MULTIDB_CATCH_UP_WAIT=LONG_WAIT_MS):
        client = Client()
        client.post("/create/", {"name": "warm"})
        assert find(client, "warm")["found"] is True
    faults.pause("replica2")
    getattr(faults, fault)("replica1")
    client = Client()
    client.post("/create/", {"name": "capped"})

    with override_settings(MULTIDB_CATCH_UP_WAIT=300):
        started = time.monotonic()
        answer = find(client, "capped")
        elapsed = time.monotonic() - started

    assert (answer["found"], answer["port"]) == (True, PRIMARY)
    # 300 ms, and generous room for the rest of the request: well below
    # libpq's shortest connect_timeout (2 s), and a frozen server never answers.
    assert elapsed < 1.8


@pytest.mark.asyncio
async def test_an_async_view_waits_while_the_event_loop_keeps_running(faults):
    pause_both(faults)
    client = AsyncClient()
    await client.post("/create/", {"name": "async-waited"})
    assert pinning_cookie() in client.cookies

    async def resume_once_waiting() -> None:
        # A coroutine on the same loop: were the loop blocked by the wait,
        # replay would never resume, and the read would go to the primary
        # when the cap ran out.
        while not waiting_on("replica1"):
            await asyncio.sleep(0.001)
        await sync_to_async(faults.resume, thread_sensitive=False)("replica1")

    with override_settings(MULTIDB_CATCH_UP_WAIT=LONG_WAIT_MS):
        response, _ = await asyncio.gather(
            client.get("/async-find/", {"name": "async-waited"}),
            resume_once_waiting(),
        )
    await sync_to_async(connections.close_all)()

    answer = response.json()
    assert (answer["found"], answer["port"]) == (True, port("replica1"))


# --- MULTIDB_MONOTONIC_READS ------------------------------------------------


@pytest.fixture
def writer() -> Iterator[None]:
    """A row every 10 ms on the primary, until the test ends."""
    stop = threading.Event()

    def write() -> None:
        try:
            while not stop.wait(0.01):
                Item.objects.create(name="tick")
        finally:
            connections.close_all()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def went_back(answers: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Each read that saw an older newest row than a read before it did."""
    seen, back = 0, []
    for answer in answers:
        if answer["newest"] < seen:
            back.append((seen, answer["newest"]))
        seen = max(seen, answer["newest"])
    return back


def read_newest(client: Client, path: str, times: int) -> list[dict[str, Any]]:
    """Each answer, with the token position the request carried (``in``)
    and the one its response set (``set``), to tell a failure's story."""
    answers = []
    for _ in range(times):
        carried = client.cookies.get(pinning_cookie())
        response = client.get(path)
        assert response.status_code == 200, response.content
        answer = response.json()
        answer["in"] = tokens.pin_for(carried.value) if carried else None
        set_ = response.cookies.get(pinning_cookie())
        answer["set"] = tokens.pin_for(set_.value) if set_ else None
        answers.append(answer)
    return answers


def story(answers: list[dict[str, Any]]) -> str:
    return "\n".join(map(str, answers))


@pytest.fixture
def one_replica_300ms_behind(faults: Faults, writer: None) -> None:
    faults.delay("replica1", 0.3)
    # The delay holds back what is written from now on.
    time.sleep(0.4)


@pytest.mark.usefixtures("one_replica_300ms_behind")
@pytest.mark.parametrize("path", ["/newest/", "/async-newest/"])
def test_without_monotonic_reads_a_reader_alternating_replicas_goes_back(path):
    answers = read_newest(Client(), path, 30)

    ports = {answer["port"] for answer in answers}
    assert ports == REPLICA_PORTS  # it alternates between the two
    assert went_back(answers)


@override_settings(MULTIDB_MONOTONIC_READS=True)
@pytest.mark.usefixtures("one_replica_300ms_behind")
@pytest.mark.parametrize("path", ["/newest/", "/async-newest/"])
def test_with_monotonic_reads_a_reader_alternating_replicas_never_goes_back(path):
    answers = read_newest(Client(), path, 30)

    assert went_back(answers) == [], story(answers)
    # It still reads a replica, the one that is ahead.
    assert port("replica2") in {answer["port"] for answer in answers}


@override_settings(MULTIDB_MONOTONIC_READS=True)
@pytest.mark.usefixtures("one_replica_300ms_behind")
@pytest.mark.asyncio
async def test_with_monotonic_reads_an_async_stack_never_goes_back():
    client = AsyncClient()
    answers = []
    for _ in range(30):
        answers.append((await client.get("/async-newest/")).json())
    await sync_to_async(connections.close_all)()

    assert went_back(answers) == [], story(answers)
    assert port("replica2") in {answer["port"] for answer in answers}


@override_settings(MULTIDB_MONOTONIC_READS=True)
def test_a_read_from_a_replica_sets_a_token_at_or_past_what_it_saw(pg_cluster):
    Item.objects.create(name="seen")
    written = parse_lsn(pg_cluster.current_lsn())
    pg_cluster.wait_caught_up()

    response = Client().get("/find/", {"name": "seen"})

    seen = tokens.pin_for(cookie_token(response))
    assert response.json()["port"] in REPLICA_PORTS
    assert type(seen) is int
    assert written <= seen <= parse_lsn(pg_cluster.current_lsn())


@override_settings(MULTIDB_MONOTONIC_READS=True, REPLICA_DATABASES=["replica1"])
def test_a_read_its_token_already_covers_sets_no_cookie(faults, pg_cluster):
    Item.objects.create(name="covered")
    pg_cluster.wait_caught_up()
    faults.pause("replica1")  # its position stays where it is
    client = Client()
    first = client.get("/find/", {"name": "covered"})
    assert pinning_cookie() in first.cookies

    again = client.get("/find/", {"name": "covered"})

    assert again.json()["port"] == port("replica1")
    assert pinning_cookie() not in again.cookies


def test_without_monotonic_reads_a_read_sets_no_cookie(pg_cluster):
    Item.objects.create(name="plain")
    pg_cluster.wait_caught_up()

    response = Client().get("/find/", {"name": "plain"})

    assert pinning_cookie() not in response.cookies


def test_concurrent_waits_on_one_replica_share_its_watcher(faults, pg_cluster):
    pause_both(faults)
    Item.objects.create(name="shared")
    position = parse_lsn(pg_cluster.current_lsn())
    found: list[str | None] = []

    def wait() -> None:
        found.append(catchup.wait_for(position, ["replica1"], LONG_WAIT_MS / 1000))

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while catchup._watchers["replica1"].waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    faults.resume("replica1")
    for thread in threads:
        thread.join(30)

    assert found == ["replica1", "replica1"]
    assert catchup._watchers["replica1"].waiting == 0


@override_settings(MULTIDB_MONOTONIC_READS=True)
def test_a_request_that_moved_to_another_replica_is_bounded_by_the_primary(
    pg_cluster,
):
    Item.objects.create(name="moved")
    pg_cluster.wait_caught_up()
    token = begin_request(NO_PIN)
    try:
        state = current_request()
        first = Item.objects.filter(name="moved").db
        assert Item.objects.filter(name="moved").exists()
        rotation.exclude({first})
        second = Item.objects.filter(name="moved").db
        assert Item.objects.filter(name="moved").exists()
        before = parse_lsn(pg_cluster.current_lsn())
        value = middleware._seen_token(state)
    finally:
        end_request(token)
        rotation.exclude(set())

    assert {first, second} == {"replica1", "replica2"}
    assert tokens.pin_for(value) >= before


@override_settings(MULTIDB_MONOTONIC_READS=True)
def test_a_replica_gone_before_the_bound_is_read_sets_no_cookie(faults, pg_cluster):
    Item.objects.create(name="gone")
    pg_cluster.wait_caught_up()
    token = begin_request(NO_PIN)
    try:
        state = current_request()
        assert Item.objects.filter(name="gone").exists()
        faults.stop(state.alias)
        value = middleware._seen_token(state)
    finally:
        end_request(token)

    assert value is None


@override_settings(MULTIDB_MONOTONIC_READS=True, MULTIDB_PINNING_MODE="time")
def test_monotonic_reads_need_position_mode(pg_cluster):
    Item.objects.create(name="timed")
    pg_cluster.wait_caught_up()

    response = Client().get("/find/", {"name": "timed"})

    assert pinning_cookie() not in response.cookies
