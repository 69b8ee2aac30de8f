"""Fuzzed pin cookies and token headers: never a 500, always as documented.

Every value is sent as the pin cookie or as the ``MULTIDB_PINNING_HEADER``
header (or both, or inside a garbage cookie header), with GET, POST and other
methods, to a sync and an async view, through the WSGI handler (Django's
test ``Client``) and the ASGI handler (``AsyncClient``, and raw header bytes
handed to the ASGI application as a server would).  The ``max_examples``
below add up to 10,000 requests per run.

The values: garbage of any size up to 10 kB (and 100 kB), unicode, control characters,
raw bytes, empty values, the legacy ``y``, forged signatures in a token's
shape, tokens signed with the right salt but another ``SECRET_KEY`` (or
another salt), tokens signed correctly for another alias, tampered, expired
or over-long tokens, and valid ones.  Each value is made as one kind, and
the README says what each kind means on SQLite (which has no positions): an
expired token (not over ``MAX_TOKEN_LENGTH``) gives no pin; anything else
pins by time, a valid token included.  For each request three things are
checked:

1. that ``tokens.pin_for`` gives the value, as the middleware received it,
   its kind's meaning (and that ASCII kinds arrive intact);
2. the pin the middleware gave the request, stated from the method, the
   settings and the kinds of the values sent, never by parsing what arrived:
   no value, an unsafe method pins (``MULTIDB_PIN_UNSAFE_METHODS``);
   ``MULTIDB_PINNING_MODE = "time"``, any value pins; otherwise an unsafe
   method pins, else the kind's meaning, and with a cookie and a header the
   stricter (either pins); an empty header is no header; a value changed on
   the way (only kinds not in ASCII) is garbage, which pins;
3. the routing outcome: pinned, every read goes to the primary; not, every
   read to one replica; the pin cookie is set only after an unsafe method;
   and after the response this context is unpinned.

Tokens carrying positions, on a real primary and replicas, are fuzzed in
``tests/postgres/test_concurrency.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import string
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core import signing
from django.core.asgi import get_asgi_application
from django.test import AsyncClient, Client, override_settings
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from multidb import read_after, tokens
from multidb.middleware import READ_ONLY_METHODS
from multidb.pinning import this_thread_is_pinned
from tests.app.models import Item

COOKIE = "multidb_pin_writes"
HEADER = "X-Multidb-Token"
REPLICAS = {"replica1", "replica2"}
PATHS = ["/fuzz/", "/async-fuzz/"]
#: Through WSGI an async view costs a new thread and event loop: fewer of them.
wsgi_paths = st.sampled_from(PATHS[:1] * 3 + PATHS[1:])
handlers = st.sampled_from(["wsgi"] * 3 + ["asgi"])
METHODS = ["GET", "GET", "POST", "POST", "PUT", "DELETE", "OPTIONS"]
TIME, NONE = tokens.TIME_PIN, tokens.NO_PIN


def fuzz_settings(max_examples: int) -> Any:
    return hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# --- the values, each with what the README says it means ------------------------


@dataclass(frozen=True)
class Value:
    kind: str
    #: The value as a client means it.
    text: str
    #: Its bytes on the wire.
    wire: bytes
    #: Its meaning on SQLite: TIME (read the primary) or NONE (no pin).
    pin: bool

    @property
    def latin1(self) -> str:
        """The bytes as servers hand them to Django: one character a byte."""
        return self.wire.decode("latin-1")


#: Kinds that are plain ASCII: every transport must deliver them intact.
ASCII_KINDS = {
    "legacy",
    "empty",
    "forged",
    "another-key",
    "another-salt",
    "another-alias",
    "valid",
    "expired",
    "tampered",
    "not-a-position",
    "too-long",
    "signed-object",
}


def text(kind: str, value: str, pin: bool = TIME) -> Value:
    return Value(kind, value, value.encode("utf-8"), pin)


class _SignedAt(signing.TimestampSigner):
    """A signer whose tokens were made ``age`` seconds ago."""

    def __init__(self, age: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.age = age

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - self.age)


def signed(
    payload: str, *, age: int = 0, key: str | None = None, salt: str = tokens.SALT
) -> str:
    return _SignedAt(age, key=key, salt=salt).sign(payload)


B64URL = string.ascii_letters + string.digits + "-_"
#: Characters a cookie value carries as they are (no separators or quotes).
COOKIE_SAFE = B64URL + "!#$%&'()*+./:<>?@[]^`{|}~"
positions = st.integers(0, 2**64 - 1)
other_aliases = st.sampled_from(
    ["replica1", "replica2", "Default", "default ", "", "default:"]
) | st.text(string.ascii_letters + string.digits + "_-:.", max_size=30).filter(
    lambda alias: alias != "default"
)
now_b62 = st.builds(lambda: signing.b62_encode(int(time.time())))


def payload(position: int, alias: str = "default") -> str:
    """What ``tokens.sign`` signs for ``position`` on ``alias``: a token
    without its timestamp and signature."""
    signer = signing.TimestampSigner(salt=tokens.SALT)
    return signer.unsign(tokens.sign(position, alias=alias))


aliases = st.just("default") | other_aliases
#: What a token signs: in the package's format, for any alias, or with the
#: position written as PostgreSQL does.
payloads = st.builds(payload, positions, aliases) | st.builds(
    "default:{}/{}".format,
    st.text(string.hexdigits, min_size=1, max_size=9),
    st.text(string.hexdigits, max_size=9),
)

garbage = st.one_of(
    st.text(max_size=300).map(lambda t: text("text", t)),
    st.text(
        st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\xa0\u2028\ufeff"),
        max_size=64,
    ).map(lambda t: text("control", t)),
    st.text(
        st.characters(min_codepoint=0x80, exclude_categories=["Cs"]),
        min_size=1,
        max_size=200,
    ).map(lambda t: text("unicode", t)),
    st.binary(max_size=300).map(
        lambda raw: Value("bytes", raw.decode("latin-1"), raw, TIME)
    ),
    # Up to 10 kB: a random chunk repeated (cheap to generate).
    st.builds(
        lambda chunk, size: text("huge", (chunk * size)[:size]),
        st.text(min_size=1, max_size=16),
        st.integers(tokens.MAX_TOKEN_LENGTH - 8, 10_240),
    ),
)

token_shaped = st.one_of(
    st.just(text("legacy", tokens.LEGACY_VALUE)),
    st.just(text("empty", "")),
    # A token's shape with a signature made up.
    st.builds(
        lambda signed_part, ts, sig: text("forged", f"{signed_part}:{ts}:{sig}"),
        payloads,
        now_b62 | st.integers(0, 2**40).map(signing.b62_encode),
        st.text(B64URL, min_size=43, max_size=43) | st.text(B64URL, max_size=60),
    ),
    # The right salt, another SECRET_KEY.
    st.builds(
        lambda key, signed_part: text("another-key", signed(signed_part, key=key)),
        st.text(min_size=1, max_size=60).filter(lambda k: k != settings.SECRET_KEY),
        payloads,
    ),
    # The right key, another salt.
    st.builds(
        lambda salt, signed_part: text("another-salt", signed(signed_part, salt=salt)),
        st.text(max_size=30).filter(lambda s: s != tokens.SALT),
        payloads,
    ),
    # Signed correctly, for another alias (a replica's position replayed).
    st.builds(
        lambda position, alias: text("another-alias", tokens.sign(position, alias)),
        positions,
        other_aliases,
    ),
    # Valid: on SQLite a position cannot be checked, so it pins by time.
    positions.map(lambda position: text("valid", tokens.sign(position))),
    # Expired (older than MULTIDB_PINNING_SECONDS, 15): no pin, for any alias,
    # unless longer than MAX_TOKEN_LENGTH (not even looked at: a time pin).
    st.builds(
        lambda signed_part, age: _expired(signed(signed_part, age=age)),
        payloads
        | st.builds(payload, positions, st.integers(150, 200).map("x".__mul__)),
        st.integers(16, 10**9),
    ),
    # A valid token with one character changed.
    st.builds(
        lambda position, index, char: text(
            "tampered", _tamper(tokens.sign(position), index, char)
        ),
        positions,
        st.integers(0, 10**6),
        st.sampled_from(B64URL + ":/"),
    ),
    st.builds(
        lambda junk: text("not-a-position", signed(f"default:{junk}")),
        st.text(COOKIE_SAFE, max_size=40),
    ),
    st.builds(
        lambda position, pad: text("too-long", signed(payload(position) + " " * pad)),
        positions,
        st.integers(tokens.MAX_TOKEN_LENGTH - 60, 2 * tokens.MAX_TOKEN_LENGTH),
    ),
    # Django's signed objects, with the right salt and key.
    st.builds(
        lambda obj: text("signed-object", signing.dumps(obj, salt=tokens.SALT)),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)


def _expired(token: str) -> Value:
    return text(
        "expired", token, NONE if len(token) <= tokens.MAX_TOKEN_LENGTH else TIME
    )


def _tamper(token: str, index: int, char: str) -> str:
    index %= len(token)
    if token[index] == char:
        char = "A" if char != "A" else "B"
    return token[:index] + char + token[index + 1 :]


values = token_shaped | garbage

HUGE = [
    text("huge", "x" * 10_240),
    # Far past any server's header limit: Django's test clients have none.
    text("huge", "x" * 100_000),
    text("huge", ("é☃🎉\u202e" * 2_600)[:10_240]),
    Value("bytes", "\x00" * 300, b"\x00" * 300, TIME),
    _expired(signed("default:" + "x" * 240 + ":0/1", age=60)),
]


# --- sending them -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    pin_unsafe: bool = True
    mode: str = "auto"


configs = st.sampled_from(
    [Config()] * 4 + [Config(pin_unsafe=False), Config(mode="time")]
)


def _configured(config: Config) -> Any:
    if config == Config():
        return contextlib.nullcontext()  # the defaults: no settings to change
    return override_settings(
        MULTIDB_PIN_UNSAFE_METHODS=config.pin_unsafe, MULTIDB_PINNING_MODE=config.mode
    )


@pytest.fixture
def header_configured() -> Iterator[None]:
    with override_settings(MULTIDB_PINNING_HEADER=HEADER):
        yield


_loop: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="module", autouse=True)
def _event_loop() -> Iterator[None]:
    """One event loop, on this thread, for every ASGI request of the module
    (``async_to_sync`` would start a thread and a loop for each)."""
    global _loop
    _loop = asyncio.new_event_loop()
    try:
        yield
    finally:
        _loop.close()
        _loop = None


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    assert _loop is not None
    return _loop.run_until_complete(coroutine)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    #: The pin cookie the response sets, or None.
    cookie: str | None


def _client_answer(response: Any) -> Answer:
    morsel = response.cookies.get(COOKIE)
    assert response.status_code == 200, response.content[:500]
    return Answer(response.status_code, response.json(), morsel and morsel.value)


def wsgi(method: str, path: str, **meta: str) -> Answer:
    """A request through the WSGI handler; ``meta`` as a WSGI server puts it."""
    return _client_answer(Client().generic(method, path, **meta))  # type: ignore[arg-type]


def asgi_client(
    method: str, path: str, cookie: str | None = None, header: str | None = None
) -> Answer:
    """A request through ``AsyncClient``: the cookie through its cookie jar
    (which quotes it), the header as given."""

    async def request() -> Any:
        client = AsyncClient()
        if cookie is not None:
            client.cookies[COOKIE] = cookie
        headers = {HEADER: header} if header is not None else {}
        return await client.generic(method, path, headers=headers)

    return _client_answer(run_async(request()))


_application: Any = None


def asgi_raw(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Answer:
    """A request with these exact header bytes, handed to the ASGI application
    as an ASGI server would."""
    global _application
    if _application is None:
        _application = get_asgi_application()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []

    async def call() -> None:
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # The client stays connected; Django cancels this wait.
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await asyncio.wait_for(_application(scope, receive, send), 10)

    run_async(call())
    start, *rest = messages
    body = b"".join(message.get("body", b"") for message in rest)
    assert start["status"] == 200, body[:500]
    cookie = None
    for name, value in start["headers"]:
        if name.lower() == b"set-cookie" and value.startswith(f"{COOKIE}=".encode()):
            cookie = value.split(b";")[0].split(b"=", 1)[1].decode("latin-1")
    return Answer(start["status"], json.loads(body), cookie)


# --- judging the answers ------------------------------------------------------------


#: ``meaning`` of a value that did not arrive at all.
ABSENT = object()


def meaning(arrived: str | None, sent: list[Value]) -> object:
    """What the README says a value that arrived means on SQLite, from the
    kind of the value sent that it is: ``ABSENT`` when nothing arrived; a
    value sent changed on the way (only kinds not in ``ASCII_KINDS``) or made
    up by a cookie parser is garbage, a time pin."""
    if arrived is None:
        return ABSENT
    for value in sent:
        if arrived in (value.text, value.latin1):
            return value.pin
    return TIME


def documented_pin(
    method: str, config: Config, cookie: object, header: object
) -> object:
    """The pin the README gives a request with this method, under these
    settings, with a cookie and a header of these meanings."""
    unsafe = method not in READ_ONLY_METHODS
    carried = [pin for pin in (cookie, header) if pin is not ABSENT]
    if not carried:
        return TIME if unsafe and (config.pin_unsafe or config.mode == "time") else NONE
    if config.mode == "time":
        return TIME  # any value pins, as in 0.11
    if unsafe and config.pin_unsafe:
        return TIME
    return TIME if TIME in carried else NONE  # the stricter of the two


def check(
    answer: Answer,
    method: str,
    config: Config,
    sent: dict[str, Value | None],
    embedded: tuple[Value, ...] = (),
) -> None:
    """``embedded``: the values inside a whole cookie header, one of which
    may arrive as the pin cookie."""
    body = answer.body
    # 1. What each value means, for the values that arrived as sent (or as
    #    one character a byte, as WSGI and ASGI servers pass headers on).
    for carrier, value in sent.items():
        if value is None:
            continue
        seen = body[carrier]
        event(f"{carrier}: {value.kind}")
        if seen in (value.text, value.latin1):
            if carrier == "cookie" or seen:
                assert tokens.pin_for(seen) is value.pin, (value, seen)
        else:
            assert value.kind not in ASCII_KINDS, (value, seen)
    # 2. The pin the middleware gave the request.
    cookie_sent = [v for v in (sent.get("cookie"), *embedded) if v is not None]
    header_sent = [v for v in (sent.get("header"),) if v is not None]
    pin = documented_pin(
        method,
        config,
        meaning(body["cookie"], cookie_sent),
        meaning(body["header"] or None, header_sent),  # empty: no header
    )
    assert body["pin"] == ("TIME_PIN" if pin is TIME else pin), (body, pin)
    event("primary" if pin else "replica")
    # 3. Where the reads went, and the cookie.
    assert body["pinned"] is (pin is TIME)
    if pin:
        assert body["dbs"] == ["default"] * 5, body
    else:
        assert len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS, body
    unsafe = method not in READ_ONLY_METHODS
    sets_cookie = unsafe and (config.pin_unsafe or config.mode == "time")
    assert answer.cookie == ("y" if sets_cookie else None), answer.cookie
    assert not this_thread_is_pinned()


def cookie_header(value: Value, before: bytes, after: bytes) -> bytes:
    return before + COOKIE.encode() + b"=" + value.wire + after


neighbours = st.sampled_from([b"", b"sessionid=abc; ", b"a=1;b=2; "])
followers = st.sampled_from([b"", b"; csrftoken=xyz", b";other=1"])


# --- the pin cookie and the token header, alone -------------------------------------


@fuzz_settings(3_500)
@given(
    value=values,
    method=st.sampled_from(METHODS),
    path=wsgi_paths,
    config=configs,
    before=neighbours,
    after=followers,
)
@example(
    value=HUGE[0], method="GET", path=PATHS[0], config=Config(), before=b"", after=b""
)
@example(
    value=HUGE[1], method="GET", path=PATHS[0], config=Config(), before=b"", after=b""
)
@example(
    value=HUGE[2], method="GET", path=PATHS[1], config=Config(), before=b"", after=b""
)
@example(
    value=HUGE[3], method="POST", path=PATHS[0], config=Config(), before=b"", after=b""
)
@example(
    value=HUGE[4], method="GET", path=PATHS[1], config=Config(), before=b"", after=b""
)
def test_fuzzed_pin_cookie_through_wsgi(value, method, path, config, before, after):
    raw = cookie_header(value, before, after).decode("latin-1")
    with _configured(config):
        answer = wsgi(method, path, HTTP_COOKIE=raw)

    check(answer, method, config, {"cookie": value})


@fuzz_settings(2_500)
@given(value=values, method=st.sampled_from(METHODS), path=wsgi_paths)
@example(value=HUGE[1], method="GET", path=PATHS[0])
@example(value=HUGE[2], method="GET", path=PATHS[0])
@example(value=text("empty", ""), method="GET", path=PATHS[1])
def test_fuzzed_token_header_through_wsgi(value, method, path, header_configured):
    answer = wsgi(method, path, HTTP_X_MULTIDB_TOKEN=value.latin1)

    check(answer, method, Config(), {"header": value})


@fuzz_settings(1_200)
@given(
    value=values,
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    config=configs,
    before=neighbours,
    after=followers,
)
@example(
    value=HUGE[0], method="GET", path=PATHS[1], config=Config(), before=b"", after=b""
)
@example(
    value=HUGE[3], method="GET", path=PATHS[0], config=Config(), before=b"", after=b""
)
def test_fuzzed_pin_cookie_bytes_through_asgi(
    value, method, path, config, before, after
):
    with _configured(config):
        answer = asgi_raw(
            method, path, [(b"cookie", cookie_header(value, before, after))]
        )

    check(answer, method, config, {"cookie": value})


@fuzz_settings(800)
@given(
    value=values,
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS),
    carrier=st.sampled_from(["cookie", "header"]),
)
@example(value=HUGE[2], method="GET", path=PATHS[1], carrier="header")
def test_fuzzed_values_through_the_async_client(
    value, method, path, carrier, header_configured
):
    answer = asgi_client(method, path, **{carrier: value.latin1})

    check(answer, method, Config(), {carrier: value})


# --- both at once, and whole cookie headers of garbage -------------------------------


@fuzz_settings(600)
@given(
    cookie=values,
    header=values,
    method=st.sampled_from(METHODS),
    path=wsgi_paths,
    handler=handlers,
)
def test_a_fuzzed_cookie_and_header_together_follow_the_stricter(
    cookie, header, method, path, handler, header_configured
):
    if handler == "wsgi":
        answer = wsgi(
            method,
            path,
            HTTP_COOKIE=cookie_header(cookie, b"", b"").decode("latin-1"),
            HTTP_X_MULTIDB_TOKEN=header.latin1,
        )
    else:
        headers = [
            (b"cookie", cookie_header(cookie, b"", b"")),
            (HEADER.lower().encode(), header.wire),
        ]
        answer = asgi_raw(method, path, headers)

    check(answer, method, Config(), {"cookie": cookie, "header": header})


#: Parts of a cookie header, each with the value it carries (if any).
cookie_parts = st.one_of(
    st.text(max_size=40).map(lambda t: (t.encode(), None)),
    st.binary(max_size=40).map(lambda raw: (raw, None)),
    values.map(lambda v: (COOKIE.encode() + b"=" + v.wire, v)),
    values.map(lambda v: (b" " + COOKIE.encode() + b" = " + v.wire + b" ", v)),
    values.map(lambda v: (b"other=" + v.wire, v)),
)


@fuzz_settings(1_400)
@given(
    parts=st.lists(cookie_parts, max_size=6),
    separators=st.lists(
        st.sampled_from([b";", b"; ", b",", b" ", b"=", b'"']), min_size=6, max_size=6
    ),
    method=st.sampled_from(METHODS),
    path=wsgi_paths,
    handler=handlers,
)
def test_fuzzed_whole_cookie_headers_never_fail_and_pin_as_parsed(
    parts, separators, method, path, handler
):
    raw = b"".join(
        part + sep for (part, _), sep in zip(parts, separators, strict=False)
    )
    if handler == "wsgi":
        answer = wsgi(method, path, HTTP_COOKIE=raw.decode("latin-1"))
    else:
        answer = asgi_raw(method, path, [(b"cookie", raw)])

    # Whatever Django's cookie parser made of it: one of the values put in,
    # or garbage.
    check(answer, method, Config(), {}, tuple(v for _, v in parts if v is not None))


# --- the Python API: any string at all ----------------------------------------------


@fuzz_settings(1_000)
@given(
    value=st.text(st.characters() | st.characters(categories=["Cs"]), max_size=300)
    | values.map(lambda v: v.text)
)
@example(value="default:0/1:\udcff")
@example(value="\ud800")
def test_pin_for_and_read_after_never_raise_on_any_string(value):
    """A token handed over by code (a job's argument, an API client's JSON)
    may be any Python string, lone surrogates included."""
    pin = tokens.pin_for(value)

    with read_after(value):
        db = Item.objects.all().db
    after = Item.objects.all().db

    assert pin is TIME or pin is NONE
    if pin is TIME:
        assert db == "default"
    else:
        assert db in REPLICAS
    assert after in REPLICAS


# --- found by fuzzing: a leak per WSGI request to an async view ---------------------


def test_wsgi_requests_to_an_async_view_leave_nothing_in_the_worker_context():
    """Under WSGI, Django runs an async view on a new event loop thread per
    request, and copies the context variables set there back into the worker
    thread's context.  Routing a read on that loop used to create a connection
    there (``connections["default"]``, to check for ``atomic()``): one context
    variable and one connection object more in the worker's context at every
    request, and every later request slower (the fuzz tests here ran 3x
    slower after a few thousand requests)."""
    wsgi("GET", "/async-fuzz/")
    before = len(contextvars.copy_context())

    for _ in range(20):
        assert is_replica_read(wsgi("GET", "/async-fuzz/").body)

    assert len(contextvars.copy_context()) == before


def is_replica_read(body: dict[str, Any]) -> bool:
    return len(set(body["dbs"])) == 1 and body["dbs"][0] in REPLICAS


@fuzz_settings(500)
@given(
    payload=st.text(st.characters(exclude_categories=["Cs"]), max_size=120)
    | st.binary(max_size=90).map(lambda b: signing.b64_encode(b).decode()),
    invalid=st.sampled_from([TIME, NONE]),
)
@example(payload="", invalid=TIME)
@example(payload="A", invalid=TIME)  # not base64: one character too many
@example(payload="AAAA", invalid=NONE)
@override_settings(MULTIDB_ENCRYPT_TOKENS=True)
def test_a_signed_sealed_payload_that_does_not_decrypt_is_invalid_never_an_error(
    payload, invalid
):
    """What someone who knew the signing key but not the cipher's could send:
    a validly signed value in the sealed shape."""
    signed = signing.TimestampSigner(salt=tokens.SALT).sign(tokens.SEALED + payload)

    assert tokens.pin_for(signed, invalid) is invalid
