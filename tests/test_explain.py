"""``multidb.explain()``: why reads go where they go, with no side effects;
and the ``request_routed`` signal the middleware sends as a request ends.

SQLite has no positions: the positions a token and the prober carry are
published by hand (``publish``), as in test_levels.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import AsyncRequestFactory, RequestFactory, override_settings

import multidb
from multidb import explain, pinning, rotation, routers, signals, tallies
from multidb import middleware as middleware_module
from multidb.conf import conf
from multidb.explanation import (
    Explanation,
    at_request_end,
    describe,
)
from multidb.middleware import PinningRouterMiddleware
from multidb.pinning import (
    begin_request,
    db_write,
    end_request,
    pin_this_thread,
    unpin_this_thread,
    use_primary_db,
    use_replica,
)
from tests.app.models import Item
from tests.conftest import request_scope
from tests.test_levels import CHECKS_ON, publish

REPLICAS = ("replica1", "replica2")
COOKIE = "multidb_pin_writes"

db = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def no_prober(monkeypatch):
    monkeypatch.setattr(rotation, "on_rebuild", [])
    with override_settings(**CHECKS_ON):
        yield


def read() -> str:
    return routers.PinningReplicaRouter().db_for_read(Item)


def caught_up(position: str = "0/200") -> None:
    publish(replica1=("ok", 0.0, 0, position), replica2=("ok", 0.0, 0, position))


# --- each case, outside and inside a request ------------------------------------


def test_outside_a_request_reads_go_to_the_next_replica_in_rotation():
    found = explain()

    assert isinstance(found, Explanation)
    assert found.outcome == "replica"
    assert (found.in_request, found.read_alias, found.replica) == (False, None, None)
    assert (found.token, found.forced, found.thread_pinned) == (None, None, False)
    assert str(found) == "replica -> next replica"


def test_a_request_that_has_read_reports_its_replica():
    with request_scope(None):
        before = explain()
        alias = read()
        after = explain()

    assert (before.outcome, before.replica, before.read_alias) == (
        "replica",
        None,
        None,
    )
    assert alias in REPLICAS
    assert (after.in_request, after.replica, after.read_alias) == (True, alias, alias)


def test_explain_moves_no_round_robin_and_changes_no_request_state():
    # Two replicas of equal weight: the rotation alternates between them.
    first = rotation.next_replica()
    with request_scope(0x100) as state:
        before = (state.pinned, state.checked, state.alias, state.rotation)
        explain()
        after = (state.pinned, state.checked, state.alias, state.rotation)
    second = rotation.next_replica()

    assert before == after
    assert {first, second} == set(REPLICAS)


@pytest.mark.parametrize(
    ("block", "alias"),
    [(use_primary_db, "default"), (use_primary_db("default"), "default")],
)
def test_use_primary_db_forces_the_primary(block, alias):
    with block:
        found = explain()

    assert (found.outcome, found.forced, found.read_alias) == (
        "primary_forced",
        "primary",
        alias,
    )
    assert found.thread_pinned and "forced to the primary" in str(found)


def test_pin_this_thread_forces_the_primary_until_unpinned():
    pin_this_thread()
    pinned = explain()
    unpin_this_thread()

    assert (pinned.outcome, explain().outcome) == ("primary_forced", "replica")


def test_db_write_forces_the_primary_in_its_view():
    @db_write
    def view() -> Any:
        found = explain()
        return HttpResponse(found.outcome)

    assert view().content == b"primary_forced"


def test_use_replica_forces_a_replica_even_in_a_pinned_request():
    with request_scope(pinning.TIME_PIN):
        with use_replica("replica2"):
            named = explain()
        with use_replica:
            anyone = explain()
            alias = read()
            chosen = explain()

    assert (named.outcome, named.forced, named.forced_replica) == (
        "replica",
        "replica",
        "replica2",
    )
    assert (named.read_alias, named.pinned_by_time) == ("replica2", True)
    assert (anyone.outcome, anyone.forced_replica, anyone.read_alias) == (
        "replica",
        None,
        None,
    )
    assert (chosen.replica, chosen.read_alias) == (alias, alias)


@pytest.mark.parametrize(("wrote", "by"), [(False, "request"), (True, "write")])
def test_a_request_pinned_by_time_reads_the_primary_and_says_why(wrote, by):
    with request_scope(pinning.TIME_PIN) as state:
        state.wrote = wrote
        found = explain()

    assert (found.outcome, found.pinned_by_time, found.pinned_by) == (
        "primary_pinned_time",
        True,
        by,
    )
    assert (found.read_alias, found.thread_pinned) == ("default", True)
    assert "pinned by " + by in str(found)


def test_unpinning_a_pinned_request_lets_it_read_replicas_again():
    with request_scope(pinning.TIME_PIN), use_primary_db:
        unpin_this_thread()
        found = explain()

    assert (found.outcome, found.pinned_by_time) == ("replica", False)


def test_a_token_no_replica_is_known_past_waits_and_is_not_a_pin(no_prober):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    with request_scope(0x200):
        found = explain()

    assert found.outcome == "primary_token_waiting"
    assert (found.token, found.token_lsn, found.token_waiting) == (0x200, "0/200", True)
    assert (found.replicas_past_token, found.read_alias) == ((), "default")
    # The 0.11 question says no: the request is not pinned by time.
    assert (found.thread_pinned, found.pinned_by_time) == (False, False)
    assert "waiting on 0/200 (replicas past it: none)" in str(found)


def test_a_token_a_replica_is_known_past_reads_that_replica(no_prober):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/300"))
    with request_scope(0x200) as state:
        before = explain()
        alias = read()
        after = explain()
        check = state.token_check

    assert (before.outcome, before.token_waiting) == ("replica", False)
    assert (before.replicas_past_token, before.read_alias) == (
        ("replica2",),
        "replica2",
    )
    assert (alias, check) == ("replica2", "cached")
    assert (after.outcome, after.token, after.token_check) == (
        "replica",
        0x200,
        "cached",
    )
    assert after.replica == after.read_alias == "replica2"
    assert "token 0/200" in str(after) and "token check: cached" in str(after)


def test_a_token_its_own_replica_has_replayed_reads_its_own_replica(no_prober):
    caught_up("0/300")
    with request_scope(0x200) as state:
        own = state.pick()
        found = explain()

    assert found.read_alias == own
    assert set(found.replicas_past_token) == set(REPLICAS)


def test_a_token_a_queried_replica_had_replayed(no_prober, monkeypatch):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    monkeypatch.setattr(routers, "replay_position", lambda alias: 0x300)
    with request_scope(0x200):
        alias = read()
        found = explain()

    assert (found.outcome, found.token_check, found.read_alias) == (
        "replica",
        "queried",
        alias,
    )


def test_a_token_a_queried_replica_had_not_replayed(no_prober, monkeypatch):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    monkeypatch.setattr(routers, "replay_position", lambda alias: 0x100)
    with request_scope(0x200):
        alias = read()
        found = explain()

    assert (alias, found.outcome, found.token_check) == (
        "default",
        "primary_token_waiting",
        "behind",
    )


@db
def test_inside_the_applications_atomic_reads_go_to_the_primary():
    with request_scope(None), transaction.atomic():
        found = explain()

    assert (found.outcome, found.in_atomic, found.read_alias) == (
        "primary_atomic",
        True,
        "default",
    )
    assert "in atomic()" in str(found)


@db
def test_the_atomic_requests_block_alone_reads_a_replica_and_is_not_remembered():
    with request_scope(None) as state:
        state.atomic_view = True
        with transaction.atomic():
            view_block = explain()
            remembered = state.view_block
            with transaction.atomic():
                own_block = explain()

    assert (view_block.outcome, view_block.atomic_requests) == ("replica", True)
    assert remembered is None
    assert own_block.outcome == "primary_atomic"


@pytest.mark.django_db(databases="__all__")
def test_a_testcase_block_alone_reads_a_replica():
    assert explain().outcome == "replica"


def test_no_usable_replica_reads_the_primary_and_names_the_policy():
    rotation.exclude(REPLICAS)
    with request_scope(None):
        found = explain()
        with use_replica:
            forced = explain()
        with use_replica("replica1"):
            named = explain()

    assert (found.outcome, found.no_replica, found.no_replica_policy) == (
        "primary_no_replica",
        True,
        "primary",
    )
    assert (found.read_alias, forced.outcome, named.outcome) == (
        "default",
        "primary_no_replica",
        "replica",
    )
    assert "MULTIDB_NO_REPLICA='primary'" in str(found)


@override_settings(MULTIDB_NO_REPLICA="error")
def test_with_no_replica_the_error_policy_is_reported():
    rotation.exclude(REPLICAS)

    found = explain()

    assert (found.outcome, found.no_replica_policy) == ("primary_no_replica", "error")


# --- bounded blocks ------------------------------------------------------------


def test_a_bounded_block_with_a_replica_within_reads_it(no_prober):
    publish(replica1=("ok", 9.0, 0, "0/100"), replica2=("ok", 0.1, 0, "0/100"))
    with request_scope(None), use_replica(max_lag=5):
        found = explain()

    assert (found.outcome, found.forced, found.bound) == (
        "replica",
        "replica",
        (5, None),
    )
    assert found.read_alias == "replica2"


def test_a_bounded_block_prefers_the_requests_replica_within(no_prober):
    caught_up()
    with request_scope(None) as state, use_replica(max_lag=5):
        own = state.pick()
        found = explain()

    assert found.read_alias == own


def test_a_bounded_block_with_no_replica_within_reads_the_primary(no_prober):
    publish(replica1=("ok", 9.0, 0, "0/100"), replica2=("ok", 9.0, 0, "0/100"))
    with use_replica(max_lag=5):
        found = explain()

    assert (found.outcome, found.no_replica) == ("primary_no_replica", True)


def test_a_bounded_block_before_any_probe_reads_the_primary(no_prober):
    with use_replica(max_lag=5):
        assert explain().outcome == "primary_no_replica"


def test_a_bounded_block_with_no_replica_usable_reads_the_primary(no_prober):
    rotation.exclude(REPLICAS)
    with use_replica(max_lag=5):
        assert explain().outcome == "primary_no_replica"


def test_a_bounded_block_waits_on_the_token_within_the_bound(no_prober):
    publish(replica1=("ok", 9.0, 0, "0/300"), replica2=("ok", 0.1, 0, "0/100"))
    with request_scope(0x200), use_replica(max_lag=5):
        found = explain()

    assert (found.outcome, found.replicas_past_token) == ("primary_token_waiting", ())


def test_a_bounded_block_reads_a_replica_within_it_past_the_token(no_prober):
    publish(replica1=("ok", 0.1, 0, "0/300"), replica2=("ok", 9.0, 0, "0/300"))
    with request_scope(0x200), use_replica(max_lag=5):
        found = explain()

    assert (found.outcome, found.read_alias) == ("replica", "replica1")


def test_a_bounded_block_keeps_the_requests_time_pin(no_prober):
    caught_up()
    with request_scope(pinning.TIME_PIN), use_replica(max_lag=5):
        assert explain().outcome == "primary_pinned_time"


# --- aexplain ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aexplain_gives_what_explain_gives(no_prober):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    token = begin_request(0x200)
    try:
        on_the_loop = await multidb.aexplain()
        in_a_thread = await sync_to_async(explain)()
    finally:
        end_request(token)

    assert on_the_loop == in_a_thread
    assert on_the_loop.outcome == "primary_token_waiting"


def test_the_record_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        explain().outcome_field = 1  # type: ignore[attr-defined]


# --- the end of a request -------------------------------------------------------


def test_at_the_end_a_checked_token_waited_whatever_the_prober_saw_since(
    no_prober, monkeypatch
):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    monkeypatch.setattr(routers, "replay_position", lambda alias: None)
    with request_scope(0x200) as state:
        read()
    caught_up("0/300")

    ended = at_request_end(state)

    assert (ended.outcome, ended.read_alias, ended.token_check) == (
        "primary_token_waiting",
        "default",
        "behind",
    )
    assert describe(pinning.Scope(request=state)).outcome == "replica"


def at_the_end(state: Any, routed: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The middleware's quick outcome at the request's end, as
    ``request_routed`` sends it (to the ``routed`` fixture), and the record,
    which must agree."""
    before = len(routed)
    middleware_module._send_routed(state, HttpResponse())
    [sent] = routed[before:]
    quick = (sent["outcome"], sent["read_alias"] or None)
    ended = at_request_end(state)
    assert quick == (ended.outcome, ended.read_alias)
    return quick


@pytest.mark.parametrize(
    ("token", "known", "outcome"),
    [
        (None, "0/100", "replica"),
        (0x200, "0/100", "primary_token_waiting"),
        (0x200, "0/300", "replica"),
    ],
)
def test_the_quick_outcome_at_the_end_is_the_records(
    no_prober, monkeypatch, routed, token, known, outcome
):
    monkeypatch.setattr(routers, "replay_position", lambda alias: None)
    caught_up(known)
    with request_scope(token) as state:
        unread = at_the_end(state, routed)
        read()
        ended = at_the_end(state, routed)
        if token is not None:
            state.checked = True
            checked = at_the_end(state, routed)

    assert ended[0] == outcome
    if token is None:
        assert unread == ("replica", None)
    else:
        assert checked[0] == "primary_token_waiting" or outcome == "replica"


@db
def test_the_quick_outcome_of_a_time_pin_no_replica_and_atomic_is_the_records(
    no_prober, routed
):
    caught_up()
    with request_scope(None) as state:
        with transaction.atomic():
            assert at_the_end(state, routed)[0] == "primary_atomic"
        state.pinned = pinning.TIME_PIN
        assert at_the_end(state, routed)[0] == "primary_pinned_time"
        state.pinned = pinning.NO_PIN
        rotation.exclude(REPLICAS)
        assert at_the_end(state, routed)[0] == "primary_no_replica"


# --- request_routed ------------------------------------------------------------


def _request(method: str = "GET", cookie: str | None = None) -> HttpRequest:
    request = RequestFactory().generic(method, "/")
    if cookie is not None:
        request.COOKIES[conf.PINNING_COOKIE] = cookie
    return request


def _reading(request: HttpRequest) -> HttpResponse:
    return HttpResponse(read())


@db
def test_request_routed_is_sent_once_per_request_with_its_outcome(routed):
    middleware = PinningRouterMiddleware(_reading)
    response = middleware(_request())
    alias = response.content.decode()

    assert routed == [
        {
            "outcome": "replica",
            "read_alias": alias,
            "token_check": None,
            "position_queries": 0,
            "group": "default",
        }
    ]


@db
def test_request_routed_after_a_write_says_pinned_by_time(routed):
    def view(request: HttpRequest) -> HttpResponse:
        Item.objects.create(name="written")
        return HttpResponse(read())

    PinningRouterMiddleware(view)(_request("POST"))

    assert [(s["outcome"], s["read_alias"]) for s in routed] == [
        ("primary_pinned_time", "default")
    ]


@db
def test_request_routed_for_a_db_write_view_says_forced(routed):
    PinningRouterMiddleware(db_write(_reading))(_request())

    assert [(s["outcome"], s["read_alias"]) for s in routed] == [
        ("primary_forced", "default")
    ]


def test_request_routed_counts_the_position_queries_for_the_cookie(routed, monkeypatch):
    from multidb import tokens

    monkeypatch.setattr(tokens, "has_positions", lambda alias="default": True)
    monkeypatch.setattr(tokens, "primary_position", lambda alias="default": 0x500)

    def view(request: HttpRequest) -> HttpResponse:
        state = pinning.current_request()
        assert state is not None
        pinning.note_write(state)
        return HttpResponse()

    PinningRouterMiddleware(view)(_request("POST"))
    with override_settings(MULTIDB_MONOTONIC_READS=True):

        def reads_the_primary(request: HttpRequest) -> HttpResponse:
            state = pinning.current_request()
            assert state is not None
            state.reached_primary = True
            return HttpResponse()

        PinningRouterMiddleware(reads_the_primary)(_request())

    assert [s["position_queries"] for s in routed] == [1, 1]


def test_request_routed_with_groups_counts_a_query_per_written_group(
    routed, monkeypatch
):
    from multidb import middleware, tokens

    monkeypatch.setattr(middleware.groups, "active", lambda: True)
    monkeypatch.setattr(tokens, "groups_token", lambda carried, written: None)
    request = _request("POST")
    state = pinning.RequestState(pinning.TIME_PIN)
    state.wrote = True
    billing = pinning.GroupState("billing", pinning.TIME_PIN, state)
    billing.wrote = True
    state._groups = {"billing": billing}
    middleware._position_token(request, HttpResponse(), state)

    assert state.position_queries == 2


@pytest.mark.asyncio
async def test_request_routed_is_sent_from_an_async_request(routed):
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse((await multidb.aexplain()).outcome)

    middleware = PinningRouterMiddleware(view)
    request = AsyncRequestFactory().get("/", headers={"cookie": f"{COOKIE}=y"})
    response = await middleware(request)

    assert response.content == b"primary_pinned_time"
    assert [(s["outcome"], s["read_alias"]) for s in routed] == [
        ("primary_pinned_time", "default")
    ]


@pytest.mark.asyncio
async def test_request_routed_after_an_async_request_that_read_nothing(routed):
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    await PinningRouterMiddleware(view)(AsyncRequestFactory().get("/"))

    assert [(s["outcome"], s["read_alias"]) for s in routed] == [("replica", "")]


def test_nothing_is_sent_nor_built_without_receivers(monkeypatch):
    def fail(state: Any, response: Any) -> None:
        raise AssertionError("found an outcome with no receiver, not counting")

    monkeypatch.setattr(middleware_module, "_send_routed", fail)
    assert not signals.request_routed.receivers
    assert not tallies.counting

    response = PinningRouterMiddleware(lambda request: HttpResponse())(_request())

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    asyncio.run(PinningRouterMiddleware(view)(AsyncRequestFactory().get("/")))
    assert response.status_code == 200


def test_a_plain_use_replica_block_does_not_wait_on_the_token(no_prober):
    publish(replica1=("ok", 0.0, 0, "0/100"), replica2=("ok", 0.0, 0, "0/100"))
    with request_scope(0x200), use_replica:
        alias = read()
        found = explain()

    assert (found.outcome, found.token_waiting, found.token) == (
        "replica",
        False,
        0x200,
    )
    assert found.read_alias == alias
