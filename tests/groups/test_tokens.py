"""Tokens for two primaries, on PostgreSQL (where each primary has
positions): what a token carries for each group, and how the middleware and
``read_after`` read it."""

from __future__ import annotations

import pytest
from django.test import RequestFactory, override_settings

from multidb import read_after, tokens, write_token
from multidb.middleware import PinningRouterMiddleware
from multidb.pinning import NO_PIN, TIME_PIN, RequestState, current_request
from tests.billing.models import Invoice
from tests.conftest import request_scope, respond, run_middleware, token_for


def test_a_token_for_two_primaries_gives_each_its_pin():
    token = token_for(default=16, billing=32)

    assert tokens._decode(token)[0] == {"default": "10", "billing": "20"}  # type: ignore[index]
    assert tokens.pins_for(token) == (16, {"billing": 32})
    assert tokens.pin_for(token) == 16


def test_a_token_for_billing_alone_pins_nothing_on_default():
    assert tokens.pins_for(token_for(billing=32)) == (NO_PIN, {"billing": 32})


def test_a_failed_position_query_pins_its_group_by_time_in_the_token():
    token = tokens.groups_token([], ["billing"], {}.get)
    assert token is not None

    assert tokens._decode(token)[0] == {"billing": ""}  # type: ignore[index]
    assert tokens.pins_for(token) == (NO_PIN, {"billing": TIME_PIN})


def test_carried_positions_merge_with_new_ones_the_later_winning():
    carried = token_for(default=5, billing=9)
    merged = tokens.groups_token([carried], ["default"], {"default": 7}.get)
    assert merged is not None

    assert tokens.pins_for(merged) == (7, {"billing": 9})
    assert tokens.groups_token([], []) is None


@override_settings(MULTIDB_ENCRYPT_TOKENS=True)
def test_an_encrypted_token_for_two_primaries_round_trips():
    token = token_for(default=3, billing=4)

    assert "billing" not in token
    assert tokens.pins_for(token) == (3, {"billing": 4})


def test_parts_for_an_alias_that_is_no_primary_are_dropped():
    signed = tokens.signing.TimestampSigner(salt=tokens.SALT).sign(
        "default:A|replica1:B|billing:C"
    )

    assert tokens.pins_for(signed) == (10, {"billing": 12})


def test_a_token_for_ten_primaries_stays_well_under_a_cookies_4_kb(settings):
    primaries = [f"tenant_{n:02}_with_a_long_name" for n in range(9)]
    settings.MULTIDB_REPLICA_GROUPS = {"default": [], **{p: [] for p in primaries}}
    settings.MULTIDB_ENCRYPT_TOKENS = True
    positions = dict.fromkeys(["default", *primaries], 0xFFFF_FFFF_FFFF)

    token = tokens.groups_token([], list(positions), positions.get)

    assert token is not None and len(token) <= tokens.MAX_TOKEN_LENGTH < 4096


def test_read_after_a_two_primary_token_waits_for_each_groups_position():
    with request_scope(NO_PIN), read_after(token_for(default=1, billing=2)):
        inner = current_request()
        assert inner is not None
        assert (inner.pinned, inner.group("billing").pinned) == (1, 2)


def test_write_token_in_a_request_that_wrote_nothing_is_the_incoming_one():
    incoming = token_for(billing=2)
    with request_scope(NO_PIN) as request:
        request.incoming = incoming
        token = write_token()

    assert token is not None
    assert tokens.pins_for(token) == (NO_PIN, {"billing": 2})


def test_a_cookie_for_two_primaries_pins_each_group_of_the_request():
    cookie = token_for(default=1, billing=2)

    state, _ = run_middleware("GET", cookie)

    assert state.pinned == 1
    assert state.group("billing").pinned == 2
    assert state.incoming == cookie


def test_a_cookie_for_billing_alone_is_carried_as_the_incoming_token():
    cookie = token_for(billing=2)

    state, _ = run_middleware("GET", cookie)

    assert (state.pinned, state.incoming) == (NO_PIN, cookie)


@override_settings(MULTIDB_PINNING_HEADER="X-Multidb-Token")
def test_a_cookie_and_a_header_give_each_group_the_stricter_pin():
    cookie = token_for(billing=2)

    state, _ = run_middleware("GET", cookie, token_for(billing=5))
    garbled, _ = run_middleware("GET", cookie, "garbage")

    assert state.group("billing").pinned == 5
    assert garbled.group("billing").pinned is TIME_PIN


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_post_that_wrote_nothing_passes_on_the_tokens_it_came_with():
    _, carried = run_middleware("POST", token_for(billing=2))
    _, bare = run_middleware("POST")

    value = carried.cookies["multidb_pin_writes"].value
    assert tokens.pins_for(value) == (NO_PIN, {"billing": 2})
    assert tokens.pins_for(bare.cookies["multidb_pin_writes"].value)[0] is TIME_PIN


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_cookie_for_two_primaries_is_sent_unquoted():
    def wrote_both(state: RequestState) -> None:
        state.wrote = True
        state.group("billing").wrote = True

    _, response = run_middleware("GET", after=wrote_both)
    header = response.cookies["multidb_pin_writes"].OutputString()
    value = response.cookies["multidb_pin_writes"].value

    assert '"' not in header and "\\" not in header
    assert set(tokens._decode(value)[0]) == {"default", "billing"}  # type: ignore[index]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_request_that_wrote_to_billing_alone_sends_billings_position_alone():
    _, response = run_middleware(
        "GET", after=lambda state: Invoice.objects.create(number=11)
    )

    first, others = tokens.pins_for(response.cookies["multidb_pin_writes"].value)
    assert first is NO_PIN
    assert set(others) == {"billing"} and type(others["billing"]) is int  # type: ignore[index]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_process_response_by_hand_without_a_request_state_sends_defaults_position():
    """Code that drives the middleware by hand, as with 0.11, may call
    ``process_response`` alone: an unsafe request gets default's position."""
    request = RequestFactory().post("/")
    middleware = PinningRouterMiddleware(respond)

    response = middleware.process_response(request, respond(request))

    first, others = tokens.pins_for(response.cookies["multidb_pin_writes"].value)
    assert type(first) is int and others == {}


@override_settings(MULTIDB_PINNING_HEADER="X-Multidb-Token")
def test_a_garbled_cookie_pins_every_group_whatever_valid_header_comes_with_it():
    state, _ = run_middleware("GET", "garbage", token_for(default=1, billing=2))

    assert state.pinned is TIME_PIN
    assert state.group("billing").pinned is TIME_PIN


@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_a_garbled_cookie_pins_no_group_when_invalid_tokens_are_ignored():
    state, _ = run_middleware("GET", "garbage")

    assert state.pinned is NO_PIN
    assert state.group("billing").pinned is NO_PIN


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_post_with_a_garbled_cookie_that_wrote_nothing_gets_a_time_pin():
    _, response = run_middleware("POST", "garbage")

    value = response.cookies["multidb_pin_writes"].value
    assert tokens._decode(value)[0] == {"default": ""}  # type: ignore[index]
