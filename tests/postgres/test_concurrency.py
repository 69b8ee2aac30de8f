"""Concurrent mixed requests, and fuzzed tokens, against the real cluster.

The first test is a short run of ``benchmarks/concurrency.py`` (whose full
run sends 10,000 requests): uvicorn in a thread of this process serves the
views ``/conc/sync/`` and ``/conc/async/`` (``benchmarks/site/concurrent.py``,
over the test app's table) on the session's cluster to 50 concurrent HTTP
clients, and every request must get exactly its own
routing state (no pin crossing) with every read answered by the server of
its alias (none misrouted).

The second section fuzzes the position path that the SQLite session
(``tests/test_fuzz.py``) cannot reach: valid tokens for positions the
replicas have replayed or not, next to expired, forged and foreign ones, as
a cookie and as a header, through the WSGI and ASGI handlers.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signing
from django.core.asgi import get_asgi_application
from django.db import connections
from django.test import AsyncClient, Client, override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from benchmarks import concurrency
from benchmarks.site.concurrent import CONCURRENT_READS, SENTINEL
from multidb import tokens
from multidb.pinning import Pin
from multidb.positions import parse_lsn
from multidb.testing.cluster import Cluster
from tests.app.models import Item

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PORTS = {alias: int(entry["PORT"]) for alias, entry in settings.DATABASES.items()}
REPLICAS = {"replica1", "replica2"}
COOKIE = concurrency.COOKIE
HEADER = concurrency.HEADER
#: The short run: 1,000 requests from 50 concurrent clients.
REQUESTS = 1_000
CLIENTS = 50


@pytest.fixture
def replayed(pg_cluster: Cluster) -> int:
    """Create the views' sentinel row; a position every replica has replayed
    (the sentinel included)."""
    Item.objects.create(name=SENTINEL)
    position = parse_lsn(pg_cluster.current_lsn())
    pg_cluster.wait_caught_up()
    return position


@pytest.fixture
def header_configured() -> Iterator[None]:
    with override_settings(MULTIDB_PINNING_HEADER=HEADER):
        yield


# --- 1,000 concurrent mixed requests through uvicorn ----------------------------


@pytest.mark.slow
def test_concurrent_mixed_requests_never_cross_pins_or_misroute_reads(
    replayed, header_configured
):
    assert concurrency.READS == CONCURRENT_READS
    with concurrency.serve_in_thread(get_asgi_application()) as url:
        result = concurrency.measure(
            url,
            requests=REQUESTS,
            clients=CLIENTS,
            replayed=replayed,
            ports=PORTS,
            # A bound on a hang, not a speed check: under coverage on a
            # shared 2-CPU machine the run takes 35 s or more.
            time_limit=240,
        )

    assert result["failures"] == []
    assert result["requests"] == REQUESTS
    assert result["reads"] == REQUESTS * CONCURRENT_READS
    counts = {key: result[key] for key in ("crossings", "misrouted", "stale_reads")}
    assert counts == {"crossings": 0, "misrouted": 0, "stale_reads": 0}
    assert result["errors"] == 0
    # Every kind of request ran, on both kinds of view, with both methods,
    # and both replicas and the primary answered.
    assert set(result["requests_by_mode"]) == {
        spec.mode for spec in (*concurrency.MODES, concurrency.READ_OWN)
    }
    assert set(result["requests_by_view"]) == {
        "GET sync",
        "GET async",
        "POST sync",
        "POST async",
    }
    assert set(result["reads_by_server"]) == {"default", *REPLICAS}


def test_the_judge_counts_a_crossing_and_a_misrouted_read():
    """The checks the load relies on do fire."""
    spec = concurrency.Spec("get")
    good = {"db": "replica1", "port": PORTS["replica1"], "found": False}
    good |= {"pinned": False, "own": True}
    cases = {
        "fine": [good] * CONCURRENT_READS,
        "pinned": [good, {**good, "pinned": True}, good, good],
        "two replicas": [good, {**good, "db": "replica2", "port": PORTS["replica2"]}]
        * 2,
        "another's state": [good, good, {**good, "own": False}, good],
        "misrouted": [good, good, good, {**good, "port": PORTS["default"]}],
    }
    tallies = {}
    for name, reads in cases.items():
        tally = concurrency.Tally()
        concurrency.judge(spec, "r", {"rid": "r", "reads": reads}, None, PORTS, tally)
        tallies[name] = (tally.crossings, tally.misrouted)
    other_rid = concurrency.Tally()
    body = {"rid": "other", "reads": cases["fine"]}
    concurrency.judge(spec, "r", body, None, PORTS, other_rid)
    cookie = concurrency.Tally()
    concurrency.judge(
        spec, "r", {"rid": "r", "reads": cases["fine"]}, "y", PORTS, cookie
    )

    assert tallies == {
        "fine": (0, 0),
        "pinned": (1, 0),
        "two replicas": (1, 0),
        "another's state": (1, 0),
        "misrouted": (0, 1),
    }
    assert (other_rid.crossings, cookie.crossings) == (1, 1)


# --- fuzzed tokens on the position path ------------------------------------------


class _SignedAt(signing.TimestampSigner):
    def __init__(self, age: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.age = age

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - self.age)


def _signed(
    payload: str, age: int = 0, key: str | None = None, salt: str = tokens.SALT
) -> str:
    return _SignedAt(age, key=key, salt=salt).sign(payload)


def payload(position: int, alias: str = "default") -> str:
    """What ``tokens.sign`` signs for ``position``: a token without its
    timestamp and signature."""
    signer = signing.TimestampSigner(salt=tokens.SALT)
    return signer.unsign(tokens.sign(position, alias=alias))


positions = st.integers(0, 2**64 - 1)
#: ASCII garbage (any text is fuzzed on SQLite, in tests/test_fuzz.py).
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
#: Text no position format reads: its first part (a token's parts are
#: separated by "|": "0|" is position 0, then an empty part) has a character
#: that is neither a hex digit nor PostgreSQL's "/".
not_a_position = printable.filter(
    lambda text: any(
        c not in string.hexdigits + "/" for c in text.split(tokens.SEPARATOR)[0]
    )
)


#: Kinds of token whose position tells where a GET carrying it reads.
READS_BY_POSITION = {"replayed": "replica", "ahead": "primary", "between": "one"}
KINDS = [
    *READS_BY_POSITION,
    "expired",
    "legacy",
    "garbage",
    "forged",
    "another-key",
    "another-salt",
    "another-alias",
    "not-a-position",
]


@dataclass(frozen=True)
class TokenCase:
    """A value to send, as drawn: plain data.  The test body makes the value
    (``value_of``): a strategy only draws, since what it does besides (signing
    reads the clock; package code may route, query or use ``random``) can
    differ when Hypothesis replays the same draws."""

    kind: str
    position: int
    #: What the kind needs besides: the garbage, a made-up signature,
    #: another key, salt or alias.
    text: str = ""
    #: Seconds since an expired token was signed.
    age: int = 0


@st.composite
def token_cases(draw: Any, replayed: int) -> TokenCase:
    kind = draw(st.sampled_from(KINDS))
    if kind in READS_BY_POSITION:
        low, high = {
            "replayed": (0, replayed),
            "ahead": (replayed + concurrency.AHEAD, 2**64 - 1),
            "between": (replayed + 1, replayed + concurrency.AHEAD - 1),
        }[kind]
        return TokenCase(kind, draw(st.integers(low, high)))
    text = {
        "expired": st.sampled_from(["default", "replica1"]),
        "garbage": printable,
        "forged": st.text(
            string.ascii_letters + "0123456789-_", min_size=43, max_size=43
        ),
        "another-key": printable.filter(lambda k: k and k != settings.SECRET_KEY),
        "another-salt": printable.filter(lambda s: s != tokens.SALT),
        "another-alias": st.sampled_from(["replica1", "replica2", ""]),
        "not-a-position": not_a_position,
    }.get(kind, st.just(""))
    age = draw(st.integers(20, 10**8)) if kind == "expired" else 0
    # An old token for ``default`` counts whatever its age: one the replicas
    # have replayed.
    position = draw(st.integers(0, replayed) if kind == "expired" else positions)
    return TokenCase(kind, position, draw(text), age)


def value_of(case: TokenCase) -> tuple[str, Pin, str]:
    """The value ``case`` stands for, what ``pin_for`` must make of it, and
    where a GET carrying it reads: ``"replica"``, ``"primary"`` or ``"one"``
    (either, but one)."""
    if case.kind in READS_BY_POSITION:
        return tokens.sign(case.position), case.position, READS_BY_POSITION[case.kind]
    if case.kind == "expired":
        value = _signed(payload(case.position, case.text), age=case.age)
        if case.text == "default":
            return value, case.position, "replica"
        # A token for another alias pins by time, and that expires.
        return value, tokens.NO_PIN, "replica"
    valid_shape = payload(case.position)
    value = {
        "legacy": lambda: "y",
        "garbage": lambda: case.text,
        "forged": lambda: (
            f"{valid_shape}:{signing.b62_encode(int(time.time()))}:{case.text}"
        ),
        "another-key": lambda: _signed(valid_shape, key=case.text),
        "another-salt": lambda: _signed(valid_shape, salt=case.text),
        "another-alias": lambda: tokens.sign(case.position, alias=case.text),
        "not-a-position": lambda: _signed(f"default:{case.text}"),
    }[case.kind]()
    return value, tokens.TIME_PIN, "primary"


def _send(handler: str, method: str, view: str, carrier: str, value: str) -> Any:
    """One request carrying ``value`` as the pin cookie or the token header,
    through the WSGI (``Client``) or the ASGI (``AsyncClient``) handler."""
    path = f"/conc/{view}/?" + urlencode({"rid": "fuzz", "name": "nothing"})
    if handler == "wsgi":
        if carrier == "cookie":
            return Client().generic(method, path, HTTP_COOKIE=f"{COOKIE}={value}")
        return Client().generic(method, path, HTTP_X_MULTIDB_TOKEN=value)

    async def request() -> Any:
        client = AsyncClient()
        headers = {}
        if carrier == "cookie":
            # Through the client's cookie jar: a cookie header of its own
            # would be joined to the jar's (empty) one with a comma.
            client.cookies[COOKIE] = value
        else:
            headers[HEADER] = value
        return await client.generic(method, path, headers=headers)

    return async_to_sync(request)()


@hypothesis_settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_tokens_read_where_the_readme_says_on_postgres(
    data, replayed, header_configured
):
    case = data.draw(token_cases(replayed), label="case")
    method = data.draw(st.sampled_from(["GET", "POST"]), label="method")
    view = data.draw(st.sampled_from(["sync", "async"]), label="view")
    handler = data.draw(st.sampled_from(["wsgi", "asgi"]), label="handler")
    carrier = data.draw(st.sampled_from(["cookie", "header"]), label="carrier")
    value, pin, reads = value_of(case)

    response = _send(handler, method, view, carrier, value)

    assert response.status_code == 200, response.content[:300]
    assert tokens.pin_for(value) == pin
    answered = response.json()["reads"]
    assert len(answered) == CONCURRENT_READS
    dbs = {read["db"] for read in answered}
    assert len(dbs) == 1, answered  # one database for the whole request
    assert all(read["port"] == PORTS[read["db"]] for read in answered), answered
    (db,) = dbs
    if method == "POST":
        # An unsafe method pins, whatever it carries.  This one wrote nothing:
        # its cookie passes on the valid position token it came with, or else
        # pins by time.
        assert (db, answered[0]["pinned"]) == ("default", True)
        sent = tokens.pin_for(response.cookies[COOKIE].value)
        assert sent == pin if type(pin) is int else sent is tokens.TIME_PIN
        return
    assert COOKIE not in response.cookies
    if carrier == "header" and not value:
        pin, reads = tokens.NO_PIN, "replica"  # an empty header is no header
    assert answered[0]["pinned"] is (pin is tokens.TIME_PIN)
    if reads == "primary":
        assert db == "default"
    elif reads == "replica":
        assert db in REPLICAS


def test_a_pool_connecting_in_the_background_leaves_the_global_random_alone():
    """Hypothesis fails a test when the global random state changes while the
    test draws, whichever thread changed it (tests/postgres/conftest.py)."""
    before = random.getstate()

    params = connections["replica1"].get_connection_params()
    with ConnectionPool(kwargs=params, min_size=2, open=True) as pool:
        pool.wait(timeout=30)

    unchanged = random.getstate() == before
    assert unchanged, "a pool connecting changed the global random state"
