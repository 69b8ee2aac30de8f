"""Read-your-writes by position, against a real primary and two replicas.

Replay is paused on a replica (``pg_wal_replay_pause()``) so that it is
provably behind, and every read reports the port of the server that answered
it (``inet_server_port()``): these tests see where a query really ran.  The
``faults`` fixture resumes every replica when a test ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.db import DataError, connections, transaction
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import multidb
from multidb import health, read_after, tokens, use_primary_db
from multidb.middleware import pinning_cookie
from multidb.pinning import begin_request, end_request, unpin_this_thread
from multidb.positions import format_lsn, parse_lsn
from multidb.testing.cluster import Cluster, free_ports
from tests.app.models import Item
from tests.postgres.conftest import Faults
from tests.postgres.views import _lookup

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Each test runs twice: directly, and through PgBouncer (transaction mode).
    pytest.mark.usefixtures("route_via", "no_lag_limit"),
]

T = TypeVar("T")


@pytest.fixture
def no_lag_limit() -> Iterator[None]:
    """Tokens alone decide here.  With replay paused, the primary's first
    write after an idle spell makes the replicas as late as the spell
    (``health``'s upper bound), and a slow run's spell can pass the default
    30 s limit: they would leave the rotation, and reads go to the primary."""
    with override_settings(MULTIDB_REPLICA_MAX_LAG=None):
        yield


REPLICAS = ("replica1", "replica2")
#: The SQL of the one check a request may make on a replica.
REPLAY_QUERY = "pg_last_wal_replay_lsn"
#: The SQL of the one position query a writing request makes on the primary.
POSITION_QUERY = "pg_current_wal_insert_lsn"


def port(alias: str) -> int:
    """The port of the server behind ``alias`` (PgBouncer's is another)."""
    return int(settings.PG_NODE_PORTS[alias])


PRIMARY = port("default")
REPLICA_PORTS = {port(alias) for alias in REPLICAS}


def cookie_token(response: Any) -> str:
    """The pin cookie the response sets (KeyError if it sets none)."""
    return str(response.cookies[pinning_cookie()].value)


def client_with(value: str) -> Client:
    client = Client()
    client.cookies[pinning_cookie()] = value
    return client


def find(client: Client, name: str, path: str = "/find/", **extra: Any) -> Any:
    response = client.get(path, {"name": name}, **extra)
    assert response.status_code == 200, response.content
    return response.json()


def primary_lsn(cluster: Cluster) -> int:
    return parse_lsn(cluster.current_lsn())


def pause_both(faults: Faults) -> None:
    for alias in REPLICAS:
        faults.pause(alias)


def resume_both(faults: Faults, cluster: Cluster) -> None:
    for alias in REPLICAS:
        faults.resume(alias)
    cluster.wait_caught_up()


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread (a fresh context, as a job runner's), close
    that thread's connections, and return its result or raise its error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the thread did not finish within 30 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]


class _SignedInThePast(signing.TimestampSigner):
    """Signs with a timestamp an hour old: a token older than any cookie."""

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 3600)


def old_token(position: int) -> str:
    value = f"default:{position:X}"
    return _SignedInThePast(salt=tokens.SALT).sign(value)


@pytest_asyncio.fixture
async def worker_connections() -> Any:
    """Close the connections that async tests open in asgiref's worker thread."""
    yield
    await sync_to_async(connections.close_all)()


class Queries:
    """The SQL each database ran inside a ``with``, by alias."""

    def __init__(self) -> None:
        self.sql: dict[str, list[str]] = {}
        self._stack = ExitStack()
        self._contexts: dict[str, CaptureQueriesContext] = {}

    def __enter__(self) -> Queries:
        for alias in ("default", *REPLICAS):
            self._contexts[alias] = self._stack.enter_context(
                CaptureQueriesContext(connections[alias])
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.sql = {
            alias: [query["sql"] for query in context.captured_queries]
            for alias, context in self._contexts.items()
        }

    def on_replicas(self) -> list[str]:
        return [sql for alias in REPLICAS for sql in self.sql[alias]]

    def containing(self, text: str) -> list[str]:
        return [sql for queries in self.sql.values() for sql in queries if text in sql]


# --- a token in the cookie, with replicas provably behind ---------------------


def test_a_post_with_replicas_paused_sets_a_signed_position_token_not_the_legacy_y(
    faults, pg_cluster
):
    pause_both(faults)
    before = primary_lsn(pg_cluster)

    response = Client().post("/create/", {"name": "posted"})

    token = cookie_token(response)
    position = tokens.pin_for(token)
    assert token != "y"
    assert token.startswith("default:")
    assert type(position) is int
    inserted = parse_lsn(
        pg_cluster.primary.scalar("SELECT pg_current_wal_insert_lsn()")
    )
    assert before < position <= inserted
    assert response.cookies[pinning_cookie()]["max-age"] == tokens.cookie_seconds()


def test_with_replicas_paused_the_token_finds_the_row_on_the_primary_none_misses_it(
    faults,
):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "mine"})

    with_token = find(client, "mine")
    without = find(Client(), "mine")

    assert (with_token["found"], with_token["db"]) == (True, "default")
    assert with_token["port"] == PRIMARY
    assert without["found"] is False
    assert without["db"] in REPLICAS and without["port"] in REPLICA_PORTS


def test_after_replay_resumes_the_same_token_reads_the_row_from_a_replica(
    faults, pg_cluster
):
    pause_both(faults)
    client = Client()
    client.post("/create/", {"name": "resumed"})
    assert find(client, "resumed")["port"] == PRIMARY

    resume_both(faults, pg_cluster)
    answer = find(client, "resumed")

    assert answer["found"] is True
    assert answer["port"] in REPLICA_PORTS


@pytest.mark.parametrize("registry", ["knows-positions", "forgotten"])
def test_with_one_replica_behind_token_reads_never_go_to_it(
    faults, pg_cluster, registry
):
    faults.pause("replica1")
    client = Client()
    position = tokens.pin_for(
        cookie_token(client.post("/create/", {"name": "one-behind"}))
    )
    pg_cluster.wait_caught_up(skip_paused=True)
    health.probe_now()
    known = health.registry.replay_positions()
    assert known["replica1"] < position <= known["replica2"]
    if registry == "forgotten":
        health.registry.forget()
        assert health.registry.replay_positions() == {}

    answers = [find(client, "one-behind") for _ in range(30)]

    ports = [answer["port"] for answer in answers]
    assert all(answer["found"] for answer in answers)
    assert port("replica1") not in ports
    if registry == "knows-positions":
        # Every request finds replica2 in the registry: no request is sent
        # to the primary.
        assert set(ports) == {port("replica2")}
    else:
        # Each request checks its own replica once: the requests that drew
        # the lagging replica1 read the primary, the others replica2.
        assert set(ports) == {PRIMARY, port("replica2")}


# --- tokens that are not valid pin by time; an old one still bounds freshness --


def _forged_shape() -> str:
    timestamp = signing.b62_encode(int(time.time()))
    return f"default:FFFFFFFF/FFFFFFFF:{timestamp}:{'A' * 43}"


def _current(pg_cluster: Cluster) -> int:
    return primary_lsn(pg_cluster)


BAD_TOKENS: dict[str, Callable[[Cluster], str]] = {
    "legacy-y": lambda c: "y",
    "forged-signature": lambda c: _forged_shape(),
    "another-salt": lambda c: signing.TimestampSigner(salt="another").sign(
        f"default:{format_lsn(_current(c))}"
    ),
    "another-secret-key": lambda c: signing.TimestampSigner(
        key="another secret key", salt=tokens.SALT
    ).sign(f"default:{format_lsn(_current(c))}"),
    "another-alias": lambda c: tokens.sign(_current(c), alias="replica1"),
    "not-an-lsn": lambda c: signing.TimestampSigner(salt=tokens.SALT).sign(
        "default:0x16/-1"
    ),
    "too-long": lambda c: tokens.sign(_current(c)) + "0" * 300,
}


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_an_invalid_token_pins_by_time_so_reads_go_to_the_primary(pg_cluster, make):
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()
    value = make(pg_cluster)

    pinned = find(client_with(value), "replicated")
    free = find(Client(), "replicated")

    assert tokens.pin_for(value) is tokens.TIME_PIN
    # Every replica has the row, yet the pinned request reads the primary.
    assert (pinned["found"], pinned["port"]) == (True, PRIMARY)
    assert (free["found"], free["port"] in REPLICA_PORTS) == (True, True)


def test_a_validly_signed_token_no_replica_can_reach_reads_the_primary(pg_cluster):
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()
    huge = tokens.sign(0xFFFFFFFF_FFFFFFFF)

    answers = [find(client_with(huge), "replicated") for _ in range(4)]

    assert tokens.pin_for(huge) == 0xFFFFFFFF_FFFFFFFF
    assert {(a["found"], a["port"]) for a in answers} == {(True, PRIMARY)}


def test_an_hour_old_token_still_reads_only_where_its_write_was_replayed(
    faults, pg_cluster
):
    pause_both(faults)
    Item.objects.create(name="old-write")
    position = primary_lsn(pg_cluster)
    token = old_token(position)

    behind = find(client_with(token), "old-write")
    resume_both(faults, pg_cluster)
    caught_up = find(client_with(token), "old-write")

    assert tokens.pin_for(token) == position
    assert (behind["found"], behind["port"]) == (True, PRIMARY)
    assert (caught_up["found"], caught_up["port"] in REPLICA_PORTS) == (True, True)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(min_value=0, max_value=2**64 - 1))
def test_a_signed_token_decodes_to_its_position_where_the_primary_has_positions(
    position,
):
    token = tokens.sign(position)
    assert tokens.pin_for(token) == position
    assert len(token) <= tokens.MAX_TOKEN_LENGTH


# --- outside requests: threads, sync_to_async, async views, decorators --------


def test_read_after_in_a_thread_reads_the_primary_until_a_replica_has_replayed(
    faults, pg_cluster
):
    pause_both(faults)
    Item.objects.create(name="job")
    token = multidb.write_token()

    def job() -> dict[str, object]:
        with read_after(token):
            return _lookup("job")

    behind = in_thread(job)
    resume_both(faults, pg_cluster)
    health.probe_now()
    caught_up = in_thread(job)

    assert type(tokens.pin_for(token)) is int
    assert (behind["found"], behind["port"]) == (True, PRIMARY)
    assert caught_up["found"] is True
    assert caught_up["port"] in REPLICA_PORTS


def test_read_after_none_changes_nothing(faults):
    pause_both(faults)
    Item.objects.create(name="unseen")

    def job() -> tuple[dict[str, object], dict[str, object]]:
        with read_after(None):
            free = _lookup("unseen")
        with use_primary_db, read_after(None):
            primary = _lookup("unseen")
        return free, primary

    free, primary = in_thread(job)

    assert (free["found"], free["port"] in REPLICA_PORTS) == (False, True)
    assert (primary["found"], primary["port"]) == (True, PRIMARY)


@pytest.mark.asyncio
async def test_read_after_around_sync_to_async_reads_the_primary_until_replayed(
    faults, pg_cluster, worker_connections
):
    pause_both(faults)
    await Item.objects.acreate(name="async-job")
    token = await multidb.awrite_token()

    async def job() -> dict[str, object]:
        with read_after(token):
            found = await Item.objects.filter(name="async-job").aexists()
            return {**await sync_to_async(_lookup)("async-job"), "aexists": found}

    behind = await job()
    resume_both(faults, pg_cluster)
    await sync_to_async(health.probe_now)()
    caught_up = await job()

    assert (behind["aexists"], behind["found"], behind["port"]) == (True, True, PRIMARY)
    assert (caught_up["aexists"], caught_up["found"]) == (True, True)
    assert caught_up["port"] in REPLICA_PORTS


@pytest.mark.asyncio
async def test_read_after_in_an_async_view_reads_the_primary_until_replayed(
    faults, pg_cluster, worker_connections
):
    pause_both(faults)
    await Item.objects.acreate(name="queued")
    token = await multidb.awrite_token()
    client = AsyncClient()  # no cookie: the token comes in the query string

    behind = (
        await client.get("/async-read-after/", {"name": "queued", "token": token})
    ).json()
    without = (await client.get("/async-read-after/", {"name": "queued"})).json()
    resume_both(faults, pg_cluster)
    await sync_to_async(health.probe_now)()
    caught_up = (
        await client.get("/async-read-after/", {"name": "queued", "token": token})
    ).json()

    assert (behind["found"], behind["port"]) == (True, PRIMARY)
    assert (without["found"], without["port"] in REPLICA_PORTS) == (False, True)
    assert (caught_up["found"], caught_up["port"] in REPLICA_PORTS) == (True, True)


@pytest.mark.asyncio
async def test_read_after_decorates_sync_and_async_functions(
    faults, pg_cluster, worker_connections
):
    pause_both(faults)
    await Item.objects.acreate(name="decorated")
    token = await multidb.awrite_token()

    @read_after(token)
    def sync_lookup() -> dict[str, object]:
        return _lookup("decorated")

    @read_after(token)
    async def async_lookup() -> dict[str, object]:
        return await sync_to_async(_lookup)("decorated")

    behind = [await sync_to_async(sync_lookup)(), await async_lookup()]
    resume_both(faults, pg_cluster)
    await sync_to_async(health.probe_now)()
    caught_up = [await sync_to_async(sync_lookup)(), await async_lookup()]

    assert [(a["found"], a["port"]) for a in behind] == [(True, PRIMARY)] * 2
    assert all(a["found"] and a["port"] in REPLICA_PORTS for a in caught_up)


@pytest.mark.asyncio
async def test_an_async_view_with_the_token_cookie_reads_the_primary_until_replayed(
    faults, pg_cluster, worker_connections
):
    pause_both(faults)
    client = AsyncClient()
    wrote = await client.post("/create/", {"name": "async-mine"})
    token = cookie_token(wrote)

    behind = (await client.get("/async-find/", {"name": "async-mine"})).json()
    resume_both(faults, pg_cluster)
    caught_up = (await client.get("/async-find/", {"name": "async-mine"})).json()

    assert type(tokens.pin_for(token)) is int
    assert (behind["found"], behind["port"]) == (True, PRIMARY)
    assert (caught_up["found"], caught_up["port"] in REPLICA_PORTS) == (True, True)


@pytest.mark.asyncio
async def test_routing_a_token_read_on_the_event_loop_makes_no_query_there(
    faults, pg_cluster, worker_connections
):
    """``QuerySet.db`` in an async view asks the router on the event loop's
    thread, where Django forbids queries: that decision reads the primary,
    and the one replica check happens in the worker thread."""
    pause_both(faults)
    client = AsyncClient()
    await client.post("/create/", {"name": "loop"})
    path = "/async-find-routed-on-the-loop/"

    behind = (await client.get(path, {"name": "loop"})).json()
    resume_both(faults, pg_cluster)
    unknown = (await client.get(path, {"name": "loop"})).json()
    await sync_to_async(health.probe_now)()
    known = (await client.get(path, {"name": "loop"})).json()

    assert behind == {"on_loop": "default", "found": True, "db": "default",
                      "port": PRIMARY}  # fmt: skip
    # Nothing known yet: the loop reads the primary, the worker checks.
    assert unknown["on_loop"] == "default"
    assert (unknown["found"], unknown["port"] in REPLICA_PORTS) == (True, True)
    # Known from the registry: the loop's decision needs no query either.
    assert known["on_loop"] == known["db"] in REPLICAS
    assert known["found"] is True


# --- read_after inside a request is never less fresh than the request ---------


def test_read_after_an_older_token_in_a_request_that_wrote_still_reads_its_write(
    faults,
):
    older = multidb.write_token()
    pause_both(faults)
    request = begin_request(tokens.NO_PIN)
    try:
        Item.objects.create(name="written-here")
        with read_after(older):
            inside = _lookup("written-here")
    finally:
        end_request(request)

    assert (inside["found"], inside["port"]) == (True, PRIMARY)


def test_read_after_an_older_token_in_a_request_with_a_newer_token_waits_for_the_newer(
    faults, pg_cluster
):
    older = multidb.write_token()
    pg_cluster.wait_caught_up()
    pause_both(faults)
    Item.objects.create(name="newer")
    newer = multidb.write_token()
    health.probe_now()  # the registry knows both replicas passed `older`

    request = begin_request(tokens.pin_for(newer), newer)
    try:
        with read_after(older):
            inside = _lookup("newer")
    finally:
        end_request(request)
    with read_after(older):
        alone = _lookup("newer")

    assert (inside["found"], inside["port"]) == (True, PRIMARY)
    assert (alone["found"], alone["port"] in REPLICA_PORTS) == (False, True)


def test_read_after_a_newer_token_in_a_request_with_an_older_or_hour_old_one(
    faults, pg_cluster
):
    older = multidb.write_token()
    pg_cluster.wait_caught_up()
    pause_both(faults)
    Item.objects.create(name="newest")
    newer = multidb.write_token()
    hour_old = old_token(tokens.pin_for(newer))  # type: ignore[arg-type]

    results = []
    for outer in (older, None):
        request = begin_request(
            tokens.pin_for(outer) if outer else tokens.NO_PIN, outer
        )
        try:
            with read_after(newer):
                results.append(_lookup("newest"))
            with read_after(hour_old):
                results.append(_lookup("newest"))
        finally:
            end_request(request)

    # The token's age does not matter: its position does.
    assert {(result["found"], result["port"]) for result in results} == {
        (True, PRIMARY)
    }


def test_read_after_inside_an_unpinned_block_of_a_pinned_request(faults):
    pause_both(faults)
    Item.objects.create(name="unpinned")
    token = multidb.write_token()
    request = begin_request(tokens.TIME_PIN)
    try:
        with use_primary_db:
            unpin_this_thread()
            with read_after(None):
                none = _lookup("unpinned")
            with read_after(token):
                waiting = _lookup("unpinned")
    finally:
        end_request(request)

    # read_after(None) keeps the block unpinned; a token still waits for itself.
    assert (none["found"], none["port"] in REPLICA_PORTS) == (False, True)
    assert (waiting["found"], waiting["port"]) == (True, PRIMARY)


# --- writes inside a GET ------------------------------------------------------


@pytest.mark.parametrize("path", ["/get-or-create/", "/save/"])
def test_a_get_that_writes_gets_a_token_cookie_that_reads_its_write(faults, path):
    pause_both(faults)
    client = Client()

    response = client.get(path, {"name": f"from-{path.strip('/')}"})
    answer = find(client, f"from-{path.strip('/')}")

    assert type(tokens.pin_for(cookie_token(response))) is int
    assert (answer["found"], answer["port"]) == (True, PRIMARY)


# --- routed as a write, but writing nothing ------------------------------------


@pytest.mark.parametrize(
    "path", ["/get-or-create-then-find/", "/async-get-or-create-then-find/"]
)
def test_a_get_whose_get_or_create_finds_its_row_pins_nothing_and_asks_no_position(
    pg_cluster, path
):
    Item.objects.create(name="cart")
    pg_cluster.wait_caught_up()

    with Queries() as queries:
        response = Client().get(path, {"name": "cart"})

    answer = response.json()
    assert (answer["created"], answer["found"]) == (False, True)
    assert answer["db"] in REPLICAS and answer["port"] in REPLICA_PORTS
    assert pinning_cookie() not in response.cookies
    assert queries.containing(POSITION_QUERY) == []


@pytest.mark.parametrize(
    "path", ["/get-or-create-then-find/", "/async-get-or-create-then-find/"]
)
def test_a_get_whose_get_or_create_creates_its_row_pins_and_reads_it(faults, path):
    pause_both(faults)
    client = Client()

    response = client.get(path, {"name": "new-cart"})

    answer = response.json()
    assert answer["created"] is True
    assert (answer["found"], answer["port"]) == (True, PRIMARY)
    assert type(tokens.pin_for(cookie_token(response))) is int
    assert find(client, "new-cart")["found"] is True


def test_a_committed_select_for_update_pins_the_rest_of_the_request(pg_cluster):
    Item.objects.create(name="locked")
    pg_cluster.wait_caught_up()

    response = Client().get("/lock-then-find/", {"name": "locked"})

    answer = response.json()
    assert answer["locked"] is True
    assert (answer["db"], answer["port"]) == ("default", PRIMARY)
    assert type(tokens.pin_for(cookie_token(response))) is int


def test_a_rolled_back_select_for_update_pins_nothing(pg_cluster):
    Item.objects.create(name="released")
    pg_cluster.wait_caught_up()

    response = Client().get("/lock-then-find/", {"name": "released", "rollback": 1})

    answer = response.json()
    assert answer["locked"] is True
    assert answer["db"] in REPLICAS and answer["port"] in REPLICA_PORTS
    assert pinning_cookie() not in response.cookies


# --- cost: one primary query per write, at most one replica query per read ----


def test_a_writing_request_makes_exactly_one_extra_primary_query_for_the_position():
    with Queries() as auto:
        Client().post("/create/", {"name": "auto"})
    with override_settings(MULTIDB_PINNING_MODE="time"), Queries() as timed:
        Client().post("/create/", {"name": "time"})

    assert len(auto.sql["default"]) == len(timed.sql["default"]) + 1
    assert len(auto.containing(POSITION_QUERY)) == 1
    assert timed.containing(POSITION_QUERY) == []


def test_a_reading_request_with_a_token_makes_at_most_one_replica_query(
    faults, pg_cluster
):
    client = Client()
    client.post("/create/", {"name": "counted"})
    pg_cluster.wait_caught_up()

    with Queries() as plain:
        Client().get("/find-many/", {"name": "counted"})
    with Queries() as caught_up:
        reads = find(client, "counted", "/find-many/")["reads"]
    pause_both(faults)
    client.post("/create/", {"name": "counted-later"})
    with Queries() as behind:
        later = find(client, "counted-later", "/find-many/")["reads"]

    assert len(plain.on_replicas()) == 5 and plain.containing(REPLAY_QUERY) == []
    # Caught up: the check, then every read on that replica.
    assert len(caught_up.containing(REPLAY_QUERY)) == 1
    assert len(caught_up.on_replicas()) == 5 + 1
    assert caught_up.sql["default"] == []
    assert {(r["port"] in REPLICA_PORTS, r["found"]) for r in reads} == {(True, True)}
    # Behind: the one check, then every read on the primary, no second check.
    assert len(behind.containing(REPLAY_QUERY)) == 1
    assert len(behind.on_replicas()) == 1
    assert {(r["port"], r["found"]) for r in later} == {(PRIMARY, True)}


def test_a_reading_request_whose_token_the_registry_has_seen_replayed_asks_no_replica(
    pg_cluster,
):
    client = Client()
    client.post("/create/", {"name": "known"})
    pg_cluster.wait_caught_up()
    health.probe_now()

    with Queries() as queries:
        reads = find(client, "known", "/find-many/")["reads"]

    assert queries.containing(REPLAY_QUERY) == []
    assert len(queries.on_replicas()) == 5
    assert queries.sql["default"] == []
    assert {(r["port"] in REPLICA_PORTS, r["found"]) for r in reads} == {(True, True)}


# --- modes and settings -------------------------------------------------------


@override_settings(MULTIDB_PINNING_MODE="time")
def test_time_mode_sets_the_legacy_cookie_and_any_cookie_pins(pg_cluster):
    client = Client()
    response = client.post("/create/", {"name": "timed"})
    pg_cluster.wait_caught_up()

    with_y = find(client, "timed")
    with_token = find(client_with(tokens.sign(primary_lsn(pg_cluster))), "timed")
    without = find(Client(), "timed")

    assert cookie_token(response) == "y"
    assert (with_y["found"], with_y["port"]) == (True, PRIMARY)
    assert (with_token["found"], with_token["port"]) == (True, PRIMARY)
    assert (without["found"], without["port"] in REPLICA_PORTS) == (True, True)


@override_settings(MULTIDB_PIN_UNSAFE_METHODS=False)
def test_with_unsafe_methods_not_pinned_a_post_that_does_not_write_reads_a_replica(
    faults,
):
    pause_both(faults)
    Item.objects.create(name="posted-read")

    read = Client().post("/find/?name=posted-read")
    wrote = Client().post("/create/", {"name": "posted-write"})

    assert pinning_cookie() not in read.cookies
    assert (read.json()["found"], read.json()["port"] in REPLICA_PORTS) == (
        False,
        True,
    )
    assert type(tokens.pin_for(cookie_token(wrote))) is int


@override_settings(MULTIDB_PINNING_HEADER="X-Multidb-Token")
def test_a_client_without_cookies_sends_the_token_in_the_header(faults):
    pause_both(faults)
    token = Client().get("/token/", {"name": "api-write"}).json()["token"]

    with_header = find(Client(), "api-write", headers={"X-Multidb-Token": token})
    with_meta = find(Client(), "api-write", HTTP_X_MULTIDB_TOKEN=token)
    without = find(Client(), "api-write")
    echoed = Client().get("/token/", headers={"X-Multidb-Token": token}).json()

    assert type(tokens.pin_for(token)) is int
    assert (with_header["found"], with_header["port"]) == (True, PRIMARY)
    assert (with_meta["found"], with_meta["port"]) == (True, PRIMARY)
    assert (without["found"], without["port"] in REPLICA_PORTS) == (False, True)
    assert echoed == {"token": token}


def test_the_header_is_ignored_unless_configured(faults):
    pause_both(faults)
    token = Client().get("/token/", {"name": "not-configured"}).json()["token"]

    answer = find(Client(), "not-configured", headers={"X-Multidb-Token": token})

    assert (answer["found"], answer["port"] in REPLICA_PORTS) == (False, True)


def test_write_token_in_a_view_gives_a_token_after_a_write_else_the_incoming_one(
    pg_cluster,
):
    before = primary_lsn(pg_cluster)
    wrote = Client().get("/token/", {"name": "tokened"}).json()["token"]
    after = primary_lsn(pg_cluster)

    none = Client().get("/token/").json()["token"]
    incoming = client_with(wrote).get("/token/").json()["token"]
    legacy = client_with("y").get("/token/").json()["token"]
    outside = multidb.write_token()

    assert before < tokens.pin_for(wrote) <= after  # type: ignore[operator]
    assert (none, incoming, legacy) == (None, wrote, None)
    assert tokens.pin_for(outside) >= tokens.pin_for(wrote)  # type: ignore[operator]


@pytest.mark.asyncio
async def test_awrite_token_in_an_async_view(pg_cluster, worker_connections):
    before = primary_lsn(pg_cluster)
    wrote = (await AsyncClient().get("/async-token/", {"name": "a"})).json()["token"]
    none = (await AsyncClient().get("/async-token/")).json()["token"]
    client = AsyncClient()
    client.cookies[pinning_cookie()] = wrote
    incoming = (await client.get("/async-token/")).json()["token"]

    assert before < tokens.pin_for(wrote) <= primary_lsn(pg_cluster)  # type: ignore[operator]
    assert (none, incoming) == (None, wrote)


# --- each token is judged on its own ------------------------------------------


def replayed_everywhere(position: int) -> bool:
    """Whether the health registry has seen every replica past ``position``."""
    known = health.registry.replay_positions()
    return len(known) == 2 and all(seen >= position for seen in known.values())


def test_each_token_is_judged_on_its_own_and_a_replayed_one_uses_every_replica(
    faults, pg_cluster
):
    user_a, user_b, user_c = Client(), Client(), Client()
    token_a = cookie_token(user_a.post("/create/", {"name": "a-row"}))
    pg_cluster.wait_caught_up()
    pause_both(faults)
    token_b = cookie_token(user_b.post("/create/", {"name": "b-row"}))
    position_a, position_b = tokens.pin_for(token_a), tokens.pin_for(token_b)
    assert not replayed_everywhere(position_a)  # nothing known yet
    health.probe_now()

    with Queries() as a_queries:
        a_reads = [find(user_a, "a-row") for _ in range(20)]
    b_reads = [find(user_b, "b-row") for _ in range(4)]
    c_read = find(user_c, "b-row")

    # Every replica has replayed A's token: A reads both replicas, no checks.
    assert replayed_everywhere(position_a)
    assert not replayed_everywhere(position_b)
    assert {a["port"] for a in a_reads} == REPLICA_PORTS
    assert all(a["found"] for a in a_reads)
    assert a_queries.containing(REPLAY_QUERY) == []
    # B's newer token is behind on both: B reads the primary, C a replica.
    assert {(b["found"], b["port"]) for b in b_reads} == {(True, PRIMARY)}
    assert (c_read["found"], c_read["port"] in REPLICA_PORTS) == (False, True)

    faults.resume("replica2")
    pg_cluster.wait_caught_up(skip_paused=True)
    health.probe_now()
    b_reads = [find(user_b, "b-row") for _ in range(20)]
    a_reads = [find(user_a, "a-row") for _ in range(20)]

    # One replica caught up with B: B reads only that one; A is unchanged.
    assert {(b["found"], b["port"]) for b in b_reads} == {(True, port("replica2"))}
    assert {a["port"] for a in a_reads} == REPLICA_PORTS
    assert not replayed_everywhere(position_b)


# --- a check that fails reads the primary, never fails the request ------------


@override_settings(REPLICA_DATABASES=["replica1"])
def test_a_token_read_whose_replica_is_stopped_reads_the_primary(faults):
    Item.objects.create(name="stopped")
    token = multidb.write_token()
    faults.stop("replica1")

    # The check cannot connect: the read goes to the primary.
    unknown = find(client_with(token), "stopped")
    # Once a probe has taken replica1 out, no replica is left to ask.
    (status,) = [s for s in health.probe_now() if s.alias == "replica1"]
    down = find(client_with(token), "stopped")

    assert (unknown["found"], unknown["port"]) == (True, PRIMARY)
    assert status.state == health.DOWN
    assert (down["found"], down["port"]) == (True, PRIMARY)


@override_settings(REPLICA_DATABASES=["replica1"])
def test_a_token_read_whose_replica_check_raises_a_database_error_reads_the_primary(
    faults,
):
    pause_both(faults)
    Item.objects.create(name="broken")
    token = multidb.write_token()

    with transaction.atomic(using="replica1"):
        cursor = connections["replica1"].cursor()
        with cursor, pytest.raises(DataError):
            cursor.execute("SELECT 1 / 0")
        # replica1's transaction is aborted: the check fails on it.
        with read_after(token):
            answer = _lookup("broken")
        transaction.set_rollback(True, using="replica1")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)


# --- transactions on the primary ----------------------------------------------


def test_a_token_read_inside_a_transaction_on_the_primary_stays_on_the_primary(
    pg_cluster,
):
    Item.objects.create(name="in-atomic")
    token = multidb.write_token()
    pg_cluster.wait_caught_up()
    health.probe_now()  # the registry knows every replica has the token

    with transaction.atomic(), read_after(token):
        inside = _lookup("in-atomic")
    with read_after(token):
        outside = _lookup("in-atomic")

    assert (inside["found"], inside["port"]) == (True, PRIMARY)
    assert (outside["found"], outside["port"] in REPLICA_PORTS) == (True, True)


def test_write_token_in_an_aborted_transaction_logs_and_returns_none(caplog):
    with transaction.atomic():
        cursor = connections["default"].cursor()
        with cursor, pytest.raises(DataError):
            cursor.execute("SELECT 1 / 0")
        with caplog.at_level("WARNING", logger="multidb"):
            token = multidb.write_token()
        transaction.set_rollback(True)

    assert token is None
    assert "could not read the primary's position" in caplog.text
    assert type(tokens.pin_for(multidb.write_token())) is int  # fine afterwards


def test_a_request_whose_replica_leaves_the_rotation_checks_the_next_one(faults):
    """Settled on a replica that had the write, the request loses it mid-way:
    the next replica must prove it has replayed the token too."""
    faults.pause("replica2")
    Item.objects.create(name="moved")
    position = tokens.pin_for(multidb.write_token())
    health.probe_now()  # replica1 is past the token, replica2 is not
    from multidb.rotation import exclude

    token = begin_request(position)
    try:
        first = Item.objects.filter(name="moved").db
        exclude(["replica1"])
        with CaptureQueriesContext(connections["replica2"]) as checks:
            second = Item.objects.filter(name="moved").db
            found = Item.objects.filter(name="moved").exists()
    finally:
        end_request(token)
        exclude([])

    assert (first, second, found) == ("replica1", "default", True)
    assert [q["sql"] for q in checks.captured_queries if REPLAY_QUERY in q["sql"]]


def test_the_one_check_asks_the_replica_the_prober_saw_furthest_ahead(
    faults, pg_cluster
):
    """replica1 is paused; the prober last saw replica2 ahead of it.  A token
    newer than anything the prober saw is checked on replica2, whichever
    replica the request would have read, so it is not sent to the primary
    just because its own replica is the paused one."""
    faults.pause("replica1")
    Item.objects.create(name="before")
    pg_cluster.wait_caught_up(skip_paused=True)
    health.probe_now()
    Item.objects.create(name="ahead")
    token = multidb.write_token()
    pg_cluster.wait_caught_up(skip_paused=True)

    with Queries() as queries:
        reads = [find(client_with(token), "ahead") for _ in range(10)]

    assert {(read["found"], read["port"]) for read in reads} == {
        (True, port("replica2"))
    }
    assert len([q for q in queries.sql["replica2"] if REPLAY_QUERY in q]) == 10
    assert [q for q in queries.sql["replica1"] if REPLAY_QUERY in q] == []


@pytest.mark.parametrize("position", ["", "16/B374D848", "-1", "0x10", "1" * 17, "a"])
def test_a_signed_token_with_a_malformed_position_pins_by_time(position):
    signer = signing.TimestampSigner(salt=tokens.SALT)

    assert tokens.pin_for(signer.sign(f"default:{position}")) is tokens.TIME_PIN
    assert tokens.pin_for(signer.sign("default:16B374D848")) == 0x16B374D848


def test_a_value_signed_with_our_key_but_no_timestamp_pins_by_time():
    value = signing.Signer(salt=tokens.SALT).sign("default:16B374D848")

    assert tokens.pin_for(value) is tokens.TIME_PIN


# --- MULTIDB_INVALID_TOKEN = "ignore": a client cannot pin itself -----------------


#: Values we did not sign as they are (a token for another alias is ours: it
#: pins by time, for ``MULTIDB_PINNING_SECONDS`` at most).
UNSIGNED = {
    **{name: make for name, make in BAD_TOKENS.items() if name != "another-alias"},
    "legacy-y": lambda c: "y",
}


@pytest.mark.parametrize("make", UNSIGNED.values(), ids=UNSIGNED.keys())
@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_ignoring_invalid_tokens_an_invalid_cookie_reads_replicas(pg_cluster, make):
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()
    value = make(pg_cluster)

    answers = [find(client_with(value), "replicated") for _ in range(4)]

    assert tokens.pin_for(value, tokens.invalid_pin()) is tokens.NO_PIN
    assert {(a["found"], a["port"] in REPLICA_PORTS) for a in answers} == {(True, True)}


@override_settings(MULTIDB_INVALID_TOKEN="ignore", MULTIDB_PINNING_HEADER="X-Pin")
def test_ignoring_invalid_tokens_an_invalid_header_reads_replicas_too(pg_cluster):
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()

    answer = find(Client(), "replicated", HTTP_X_PIN="forged")

    assert (answer["found"], answer["port"] in REPLICA_PORTS) == (True, True)


@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_ignoring_invalid_tokens_a_valid_token_still_reads_its_write(faults):
    pause_both(faults)
    response = Client().post("/create/", {"name": "mine"})

    answer = find(client_with(cookie_token(response)), "mine")

    assert (answer["found"], answer["port"]) == (True, PRIMARY)


@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_ignoring_invalid_tokens_a_signed_time_pin_still_pins_until_it_expires(
    pg_cluster,
):
    Item.objects.create(name="replicated")
    pg_cluster.wait_caught_up()
    fresh = tokens.sign_time()
    expired = _SignedInThePast(salt=tokens.SALT).sign("default:")

    assert find(client_with(fresh), "replicated")["port"] == PRIMARY
    assert find(client_with(expired), "replicated")["port"] in REPLICA_PORTS


# --- what an anonymous client can cost the primary: nothing ---------------------


def unsafe_requests_that_touch_no_database(client: Client) -> list[Any]:
    """A POST to a missing URL, and a form that fails validation."""
    return [client.post("/no-such-page/"), client.post("/validate/", {})]


def test_100_posts_that_touch_no_database_make_no_query_on_the_primary():
    with Queries() as queries:
        responses = [
            response
            for _ in range(50)
            for response in unsafe_requests_that_touch_no_database(Client())
        ]

    assert len(responses) == 100
    assert {response.status_code for response in responses} == {404, 400}
    assert queries.sql["default"] == []
    # Pinned by time, as django-multidb-router pinned every POST.
    assert {tokens.pin_for(cookie_token(response)) for response in responses} == {
        tokens.TIME_PIN
    }


@override_settings(
    MIDDLEWARE=[*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"]
)
def test_a_post_that_fails_the_csrf_check_makes_no_query_on_the_primary():
    client = Client(enforce_csrf_checks=True)

    with Queries() as queries:
        responses = [client.post("/create/", {"name": "forged"}) for _ in range(10)]

    assert {response.status_code for response in responses} == {403}
    assert queries.sql["default"] == []
    assert not Item.objects.filter(name="forged").exists()


def test_a_post_that_touches_no_database_carries_the_incoming_token_forward(faults):
    pause_both(faults)
    token = cookie_token(Client().post("/create/", {"name": "mine"}))
    client = client_with(token)

    with Queries() as queries:
        responses = unsafe_requests_that_touch_no_database(client)

    assert queries.sql["default"] == []
    assert [cookie_token(response) for response in responses] == [token, token]
    answer = find(client, "mine")
    assert (answer["found"], answer["port"]) == (True, PRIMARY)


@pytest.mark.parametrize("path", ["/raw-insert/", "/async-raw-insert/"])
def test_a_write_the_router_never_saw_still_gets_a_token_that_reads_it(
    faults, pg_cluster, path
):
    pause_both(faults)
    before = primary_lsn(pg_cluster)

    response = Client().post(path, {"name": "raw"})

    position = tokens.pin_for(cookie_token(response))
    assert type(position) is int and position > before
    answer = find(client_with(cookie_token(response)), "raw")
    assert (answer["found"], answer["port"]) == (True, PRIMARY)


@pytest.mark.asyncio
async def test_under_asgi_a_post_that_touches_no_database_makes_no_query(
    worker_connections,
):
    captured: list[str] = []

    def capture() -> CaptureQueriesContext:
        return CaptureQueriesContext(connections["default"]).__enter__()

    context = await sync_to_async(capture)()
    try:
        response = await AsyncClient().post("/no-such-page/")
    finally:
        await sync_to_async(context.__exit__)(None, None, None)
        captured = [query["sql"] for query in context.captured_queries]

    assert response.status_code == 404
    assert captured == []
    assert tokens.pin_for(cookie_token(response)) is tokens.TIME_PIN


def test_the_position_warning_is_logged_once_per_outage(caplog):
    entry = connections.settings["default"]
    (free_port,) = free_ports(1)  # nothing listens there
    assert type(tokens.primary_position()) is int  # no outage before

    def position_with_primary_port(port: Any) -> int | None:
        saved = entry["PORT"]
        entry["PORT"] = port
        try:
            return in_thread(tokens.primary_position)
        finally:
            entry["PORT"] = saved

    with caplog.at_level("DEBUG", logger="multidb"):
        failed = [position_with_primary_port(free_port) for _ in range(5)]
        recovered = tokens.primary_position()
        failed_again = position_with_primary_port(free_port)

    assert failed == [None] * 5
    assert type(recovered) is int and failed_again is None
    assert [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "multidb"
    ] == [
        ("WARNING", "could not read the primary's position"),
        *[("DEBUG", "could not read the primary's position")] * 4,
        ("INFO", "the primary's position can be read again"),
        ("WARNING", "could not read the primary's position"),
    ]


# --- MULTIDB_ENCRYPT_TOKENS: the cookie does not show the position ----------------


@override_settings(MULTIDB_ENCRYPT_TOKENS=True)
def test_an_encrypted_token_hides_the_position_and_still_reads_its_write(
    faults, pg_cluster
):
    pause_both(faults)
    before = primary_lsn(pg_cluster)

    token = cookie_token(Client().post("/create/", {"name": "sealed"}))

    position = tokens.pin_for(token)
    assert type(position) is int and position > before
    payload = token.rsplit(":", 2)[0]
    assert payload.startswith(tokens.SEALED)
    assert f"{position:X}" not in token and "default" not in token
    # Two tokens for one position differ: nothing to compare between them.
    assert tokens.sign(position) != tokens.sign(position)
    answer = find(client_with(token), "sealed")
    assert (answer["found"], answer["port"]) == (True, PRIMARY)


def test_a_tampered_encrypted_token_is_invalid():
    with override_settings(MULTIDB_ENCRYPT_TOKENS=True):
        payload = signing.TimestampSigner(salt=tokens.SALT).unsign(tokens.sign(4096))
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    signer = signing.TimestampSigner(salt=tokens.SALT)

    for forged in (flipped, tokens.SEALED, tokens.SEALED + "!!", payload[:20]):
        assert tokens.pin_for(signer.sign(forged)) is tokens.TIME_PIN
        assert tokens.pin_for(signer.sign(forged), tokens.NO_PIN) is tokens.NO_PIN


def test_encrypted_tokens_open_after_the_secret_key_is_rotated():
    with override_settings(MULTIDB_ENCRYPT_TOKENS=True, SECRET_KEY="old" * 20):
        token = tokens.sign(0x16B374D848)

    with override_settings(SECRET_KEY="new" * 20, SECRET_KEY_FALLBACKS=["old" * 20]):
        assert tokens.pin_for(token) == 0x16B374D848
    with override_settings(SECRET_KEY="new" * 20):
        assert tokens.pin_for(token) is tokens.TIME_PIN


def test_turning_encryption_on_or_off_keeps_the_tokens_already_issued_valid():
    plain = tokens.sign(0x1000)
    with override_settings(MULTIDB_ENCRYPT_TOKENS=True):
        sealed = tokens.sign(0x2000)
        assert tokens.pin_for(plain) == 0x1000

    assert tokens.pin_for(sealed) == 0x2000
