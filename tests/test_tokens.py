"""Pin tokens: signing, verification, and what a value that is not a valid
token means, on SQLite (which has no positions).

Only pure logic lives here: what ``pin_for`` makes of a value, the cookie and
header handling of the middleware, the settings, and ``read_after`` where no
replica position is involved.  Every claim about replicas being behind or
caught up is tested on the real cluster, in ``tests/postgres/test_tokens.py``.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings

import multidb
from multidb import read_after, tokens, use_primary_db
from multidb.pinning import begin_request, end_request, unpin_this_thread
from tests.app.models import Item

REPLICAS = {"replica1", "replica2"}
COOKIE = "multidb_pin_writes"
HEADER = "X-Multidb-Token"

db = pytest.mark.django_db(transaction=True, databases="__all__")


class _SignedInThePast(signing.TimestampSigner):
    """Signs with a timestamp an hour old: a token that has expired."""

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - 3600)


def expired_token(position: int = 0x3000148) -> str:
    return _SignedInThePast(salt=tokens.SALT).sign(f"default:0/{position:X}")


def _as_wsgi(text: str) -> str:
    """How a WSGI server hands a header to Django: its UTF-8 bytes as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def read_many(**extra: str) -> dict[str, object]:
    response = Client().get("/read-many/", **extra)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert COOKIE not in response.cookies
    return response.json()  # type: ignore[no-any-return]


def is_pinned(body: dict[str, object]) -> bool:
    """Whether every read of ``/read-many/`` went to the primary (True) or
    all to one replica (False)."""
    dbs = body["dbs"]
    assert isinstance(dbs, list)
    if dbs == ["default"] * 5:
        return True
    assert len(set(dbs)) == 1 and dbs[0] in REPLICAS, dbs
    return False


# --- the token format and pin_for ---------------------------------------------


def test_a_token_holds_the_alias_and_the_position_signed_with_a_salt():
    token = tokens.sign(0x16_B374D848)

    assert token.startswith("default:16B374D848:")
    assert signing.TimestampSigner(salt=tokens.SALT).unsign(token) == (
        "default:16B374D848"
    )
    with pytest.raises(signing.BadSignature):
        signing.TimestampSigner().unsign(token)


def test_a_token_needs_no_quoting_in_a_cookie():
    response = HttpResponse()
    response.set_cookie("pin", tokens.sign(0xFFFFFFFF_FFFFFFFF))

    assert '"' not in response.cookies["pin"].OutputString()


def test_pin_for_reads_the_legacy_value_as_a_time_pin():
    assert tokens.pin_for(tokens.LEGACY_VALUE) is tokens.TIME_PIN
    assert tokens.LEGACY_VALUE == "y"


def test_a_valid_token_pins_by_time_where_the_primary_has_no_positions(caplog):
    with caplog.at_level(logging.DEBUG, logger="multidb"):
        pin = tokens.pin_for(tokens.sign(0x3000148))

    assert pin is tokens.TIME_PIN
    assert "pinning by time" in caplog.text


BAD_SIGNATURES = {
    "forged": lambda: (
        f"default:FFFFFFFF/FFFFFFFF:{signing.b62_encode(int(time.time()))}:{'A' * 43}"
    ),
    "another-salt": lambda: signing.TimestampSigner(salt="another").sign("default:0/1"),
    "another-secret-key": lambda: signing.TimestampSigner(
        key="another secret key", salt=tokens.SALT
    ).sign("default:0/1"),
    "unsigned": lambda: "default:0/1",
    "empty": lambda: "",
}


@pytest.mark.parametrize("make", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_a_bad_signature_pins_by_time_and_is_logged_at_debug_level(caplog, make):
    with caplog.at_level(logging.DEBUG, logger="multidb"):
        pin = tokens.pin_for(make())

    assert pin is tokens.TIME_PIN
    assert "pin token ignored: bad signature" in caplog.text


def test_a_value_longer_than_the_limit_pins_by_time_without_being_verified(caplog):
    signer = signing.TimestampSigner(salt=tokens.SALT)
    long_but_valid = signer.sign("default:0/1" + " " * tokens.MAX_TOKEN_LENGTH)

    with caplog.at_level(logging.DEBUG, logger="multidb"):
        pin = tokens.pin_for(long_but_valid)

    assert pin is tokens.TIME_PIN
    assert f"{len(long_but_valid)} characters long" in caplog.text
    assert "bad signature" not in caplog.text


def test_an_expired_token_gives_no_pin():
    assert tokens.pin_for(expired_token()) is tokens.NO_PIN


def test_a_token_signed_for_another_database_pins_by_time(caplog):
    with caplog.at_level(logging.DEBUG, logger="multidb"):
        pin = tokens.pin_for(tokens.sign(0x3000148, alias="replica1"))

    assert pin is tokens.TIME_PIN
    assert "pin token for 'replica1'" in caplog.text


# --- the middleware on SQLite: no positions, so 0.11's "y" ---------------------


@db
def test_a_request_that_writes_sets_the_legacy_cookie_where_there_are_no_positions():
    response = Client().get("/write-token/", {"name": "sqlite"})

    assert response.cookies[COOKIE].value == "y"
    assert response.json()["token"] is None


def test_a_valid_token_cookie_pins_by_time_where_there_are_no_positions():
    assert is_pinned(read_many(HTTP_COOKIE=f"{COOKIE}={tokens.sign(0x3000148)}"))


def test_an_expired_token_cookie_leaves_the_request_unpinned():
    assert not is_pinned(read_many(HTTP_COOKIE=f"{COOKIE}={expired_token()}"))


def test_a_request_without_the_cookie_reads_a_replica():
    assert not is_pinned(read_many())


# --- MULTIDB_PINNING_MODE = "time": exactly 0.11 --------------------------------


@override_settings(MULTIDB_PINNING_MODE="time")
def test_time_mode_sets_the_legacy_cookie_on_an_unsafe_method_and_any_cookie_pins():
    response = Client().post("/read-many/")

    assert response.cookies[COOKIE].value == "y"
    assert response.json()["dbs"] == ["default"] * 5
    # Even a value the position mode ignores (an expired token) pins.
    assert is_pinned(read_many(HTTP_COOKIE=f"{COOKIE}={expired_token()}"))
    assert is_pinned(read_many(HTTP_COOKIE=f"{COOKIE}=anything"))
    assert not is_pinned(read_many())


@override_settings(MULTIDB_PINNING_MODE="time", MULTIDB_PIN_UNSAFE_METHODS=False)
def test_time_mode_pins_unsafe_methods_even_with_unsafe_method_pinning_off():
    response = Client().post("/read-many/")

    assert response.cookies[COOKIE].value == "y"
    assert response.json()["dbs"] == ["default"] * 5


# --- MULTIDB_PIN_UNSAFE_METHODS = False ---------------------------------------


@override_settings(MULTIDB_PIN_UNSAFE_METHODS=False)
def test_with_unsafe_methods_not_pinned_a_post_that_does_not_write_reads_replicas():
    response = Client().post("/read-many/")

    assert COOKIE not in response.cookies
    assert not is_pinned(response.json())


@override_settings(MULTIDB_PIN_UNSAFE_METHODS=False)
def test_with_unsafe_methods_not_pinned_a_post_with_the_cookie_is_still_pinned():
    response = Client().post("/read-many/", HTTP_COOKIE=f"{COOKIE}=y")

    assert response.json()["dbs"] == ["default"] * 5


@db
@override_settings(MULTIDB_PIN_UNSAFE_METHODS=False)
def test_with_unsafe_methods_not_pinned_a_post_that_writes_pins_from_the_write_on():
    response = Client().post("/write-then-read/")

    body = response.json()
    assert body["before"] in REPLICAS
    assert body["after"] == "default"
    assert response.cookies[COOKIE].value == "y"


# --- MULTIDB_PINNING_HEADER -----------------------------------------------------


@override_settings(MULTIDB_PINNING_HEADER=HEADER)
def test_the_configured_header_carries_the_pin_for_a_client_without_cookies():
    assert is_pinned(read_many(headers={HEADER: "y"}))  # type: ignore[arg-type]
    assert is_pinned(read_many(HTTP_X_MULTIDB_TOKEN=tokens.sign(1)))
    assert not is_pinned(read_many(HTTP_X_MULTIDB_TOKEN=expired_token()))
    assert not is_pinned(read_many())


@override_settings(MULTIDB_PINNING_HEADER=HEADER)
def test_an_empty_header_leaves_the_cookie_in_charge():
    assert is_pinned(read_many(HTTP_X_MULTIDB_TOKEN="", HTTP_COOKIE=f"{COOKIE}=y"))
    assert not is_pinned(read_many(HTTP_X_MULTIDB_TOKEN=""))


def test_the_header_is_ignored_unless_configured():
    assert not is_pinned(read_many(HTTP_X_MULTIDB_TOKEN="y"))


@override_settings(MULTIDB_PINNING_HEADER=HEADER)
@pytest.mark.parametrize("value", ["y", "garbage", "ünïcødé ☃", "x" * 5000])
@pytest.mark.asyncio
async def test_the_header_pins_an_async_request(value):
    response = await AsyncClient().get(
        "/async-read-many/", headers={HEADER: _as_wsgi(value)}
    )

    assert response.status_code == 200
    assert response.json()["dbs"] == ["default"] * 5


# --- read_after without positions ---------------------------------------------


def test_read_after_none_changes_nothing():
    with read_after(None):
        free = Item.objects.all().db
    with use_primary_db, read_after(None):
        forced = Item.objects.all().db
    request = begin_request(tokens.TIME_PIN)
    try:
        with read_after(None):
            pinned = Item.objects.all().db
    finally:
        end_request(request)

    assert free in REPLICAS
    assert (forced, pinned) == ("default", "default")


def test_read_after_a_token_that_cannot_be_checked_reads_the_primary():
    for token in ("y", "garbage", tokens.sign(0x3000148)):
        with read_after(token):
            assert Item.objects.all().db == "default", token


def test_read_after_an_expired_token_adds_no_pin_but_keeps_the_requests():
    with read_after(expired_token()):
        alone = Item.objects.all().db
    request = begin_request(tokens.TIME_PIN)
    try:
        with read_after(expired_token()):
            in_pinned_request = Item.objects.all().db
        with use_primary_db:
            unpin_this_thread()
            with read_after(expired_token()):
                in_unpinned_block = Item.objects.all().db
            with read_after("y"):
                time_pin_in_unpinned_block = Item.objects.all().db
    finally:
        end_request(request)

    assert alone in REPLICAS
    assert in_pinned_request == "default"
    assert in_unpinned_block in REPLICAS
    assert time_pin_in_unpinned_block == "default"


@pytest.mark.asyncio
async def test_read_after_decorates_sync_and_async_functions():
    @read_after("y")
    def sync_pinned() -> str:
        return Item.objects.all().db

    @read_after("y")
    async def async_pinned() -> str:
        return Item.objects.all().db

    @read_after(None)
    async def async_free() -> str:
        return Item.objects.all().db

    assert sync_pinned() == "default"
    assert await async_pinned() == "default"
    assert await async_free() in REPLICAS
    assert sync_pinned.__name__ == "sync_pinned"
    assert Item.objects.all().db in REPLICAS  # nothing leaks out


# --- write_token without positions ---------------------------------------------


@db
def test_write_token_is_none_where_the_primary_has_no_positions():
    outside = multidb.write_token()
    not_written = Client().get("/write-token/").json()["token"]
    with_legacy_cookie = (
        Client().get("/write-token/", HTTP_COOKIE=f"{COOKIE}=y").json()["token"]
    )

    assert (outside, not_written, with_legacy_cookie) == (None, None, None)


@db
@pytest.mark.asyncio
async def test_awrite_token_in_an_async_view_where_the_primary_has_no_positions():
    wrote = await AsyncClient().get("/async-write-token/", {"name": "async"})
    read = await AsyncClient().get("/async-write-token/")

    assert wrote.json()["token"] is None
    assert wrote.cookies[COOKIE].value == "y"
    assert read.json()["token"] is None
    assert COOKIE not in read.cookies


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_position_read_in_a_thread_without_a_primary_connection_reads_the_primary():
    """SQLite replicas report no position, so no replica can prove it has the
    write: the read goes to the primary, even from a thread that has never
    opened a connection to it (the transaction check must not fail there)."""
    from multidb.pinning import begin_request, end_request

    seen: list[str] = []

    def route() -> None:
        token = begin_request(12345)
        try:
            seen.append(Item.objects.all().db)
        finally:
            end_request(token)

    thread = threading.Thread(target=route)
    thread.start()
    thread.join(10)
    assert seen == ["default"]


# --- MULTIDB_INVALID_TOKEN --------------------------------------------------------


def test_invalid_values_pin_by_time_by_default():
    assert tokens.invalid_pin() is tokens.TIME_PIN


@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_ignoring_invalid_tokens_has_no_effect_where_the_primary_has_no_positions():
    """The legacy ``y`` is the only pin such a site can set."""
    assert tokens.invalid_pin() is tokens.TIME_PIN


@db
@override_settings(MULTIDB_INVALID_TOKEN="ignore")
def test_ignoring_invalid_tokens_the_legacy_cookie_still_pins_without_positions():
    client = Client()
    client.cookies[COOKIE] = "y"

    assert client.get("/read/").json()["dbs"] == ["default"] * 3


def test_pin_for_gives_the_callers_answer_for_an_invalid_value():
    for value in ("y", "garbage", "x" * 300):
        assert tokens.pin_for(value, tokens.NO_PIN) is tokens.NO_PIN


def test_a_signed_time_token_pins_by_time_until_it_expires():
    expired = _SignedInThePast(salt=tokens.SALT).sign("default:")

    assert tokens.pin_for(tokens.sign_time(), tokens.NO_PIN) is tokens.TIME_PIN
    assert tokens.pin_for(expired, tokens.NO_PIN) is tokens.NO_PIN


# --- cookie lifetimes stay within what browsers and dates allow ---------------------


@db
@override_settings(MULTIDB_PINNING_SECONDS=10**12)
def test_a_huge_pinning_seconds_gives_a_400_day_cookie_not_an_error():
    response = Client().post("/write-then-read/")

    assert response.status_code == 200
    assert response.cookies[COOKIE]["max-age"] == tokens.MAX_COOKIE_SECONDS


@pytest.mark.parametrize("max_lag", [10**12, float("inf"), float("nan")])
def test_the_token_cookie_lifetime_is_at_most_400_days_whatever_the_lag_limit(
    max_lag,
):
    with override_settings(
        MULTIDB_REPLICA_MAX_LAG=max_lag, MULTIDB_HEALTH_CHECK_INTERVAL=1
    ):
        assert tokens.cookie_seconds() == tokens.MAX_COOKIE_SECONDS


def test_whether_the_primary_has_positions_is_read_again_when_databases_change(
    monkeypatch,
):
    class PostgreSQLWrapper:
        vendor = "postgresql"

    def databases_changed() -> None:  # as override_settings' exit sends it
        setting_changed.send(sender=None, setting="DATABASES", value=None, enter=False)

    assert tokens.has_positions() is False  # SQLite, and now remembered
    monkeypatch.setattr(
        tokens,
        "load_backend",
        lambda engine: type("", (), {"DatabaseWrapper": PostgreSQLWrapper}),
    )
    try:
        assert tokens.has_positions() is False
        databases_changed()
        assert tokens.has_positions() is True
    finally:
        monkeypatch.undo()
        databases_changed()
    assert tokens.has_positions() is False


def test_tokens_are_signed_and_read_with_the_secret_key_of_the_moment():
    issued = tokens.sign_time()
    assert tokens.read(issued) is not None

    with override_settings(SECRET_KEY="another key " * 5):
        assert tokens.read(issued) is None
        assert tokens.read(tokens.sign_time()) is not None
        with override_settings(SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
            assert tokens.read(tokens.sign_time()) is not None
        with override_settings(SECRET_KEY_FALLBACKS=["multidb-tests"]):
            assert tokens.read(issued) is not None
        assert tokens.read(issued) is None

    assert tokens.read(issued) is not None
