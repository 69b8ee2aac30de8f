"""Concurrent mixed requests on a real cluster: no pin crosses, no read strays.

A real PostgreSQL primary and two streaming replicas on loopback, the
views ``/conc/sync/`` and ``/conc/async/`` (``benchmarks/site/concurrent.py``)
served by uvicorn in a process of its own, and 50 concurrent HTTP clients
sending 10,000 requests (2,000 with ``--quick``) of mixed kinds: GET and
POST, sync and async views, with and without a pin cookie or token header.
Each request carries a unique id and knows the routing state it must get:

* no cookie, or a token every replica has replayed (an hour-old one too):
  every read on one replica, unpinned;
* the legacy ``y``, garbage, a forged or foreign token, an unsafe method, a
  write: every read on the primary, pinned;
* a valid token for a position no server has reached, however old: the
  primary, waiting for the position (not pinned by time);
* a request that wrote is followed by a GET with the cookie it got: it must
  find its own row, on one server.

Each view reads four times (the async one yields to the event loop before
every read) and reports, per read, the alias of the connection that ran it,
``inet_server_port()`` from that same SELECT, ``this_thread_is_pinned()``
and whether the request's routing state was still its own.  A *crossing* is
a request whose answer does not match its own expected state (reads on the
wrong side, on two replicas, the wrong pin, another request's state, a pin
cookie it should not get or missing); a *misrouted* read is one answered by
a server other than its alias's.  Both must be 0.

    .venv/bin/python -m benchmarks.concurrency [--quick] [--json]

``tests/postgres/test_concurrency.py`` runs a short version of the same load
(``measure``) against an in-process server on the test session's cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.cookiejar
import json
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.common import ROOT, machine

#: The default ``MULTIDB_PINNING_COOKIE``, and the header the server reads.
COOKIE = "multidb_pin_writes"
HEADER = "X-Multidb-Token"
PATHS = {"sync": "/conc/sync/", "async": "/conc/async/"}
#: Reads each view makes (``benchmarks.site.concurrent.CONCURRENT_READS``).
READS = 4
#: Far past anything the primary writes during a run: a token for it can
#: only be honoured by reading the primary.
AHEAD = 1 << 40
SITE_ENV = "MULTIDB_CONCURRENCY_SITE"


def parameters(full: bool) -> dict[str, Any]:
    return {
        "requests": 10_000 if full else 2_000,
        "clients": 50,
        "time_limit_s": 900.0 if full else 240.0,
        "request_timeout_s": 30.0,
        "seed": 20240601,
        "health_check_interval_s": 0.5,
    }


# ------------------------------------------------------------ what to send


class Tokens:
    """Cookie and header values, made when sent (tokens expire in 15 s) and
    signed with this process's ``SECRET_KEY``, which must be the server's."""

    def __init__(self, replayed: int, ahead: int) -> None:
        self.replayed, self.ahead = replayed, ahead
        self._garbage = 0

    @staticmethod
    def _sign(
        payload: str, key: str | None = None, salt: str | None = None, age: int = 0
    ) -> str:
        from django.core import signing

        from multidb.tokens import SALT

        class Signer(signing.TimestampSigner):
            def timestamp(self) -> str:
                return signing.b62_encode(int(time.time()) - age)

        return Signer(key=key, salt=salt or SALT).sign(payload)

    @staticmethod
    def _payload(position: int, alias: str = "default") -> str:
        """What ``multidb.tokens.sign`` signs, whatever its format."""
        from django.core import signing

        from multidb import tokens

        signer = signing.TimestampSigner(salt=tokens.SALT)
        return signer.unsign(tokens.sign(position, alias=alias))

    def value(self, kind: str) -> str:
        from django.core import signing

        from multidb import tokens

        if kind == "y":
            return "y"
        if kind == "replayed":
            return tokens.sign(self.replayed)
        if kind == "ahead":
            return tokens.sign(self.ahead)
        if kind == "old replayed":
            return self._sign(self._payload(self.replayed), age=3600)
        if kind == "old ahead":
            return self._sign(self._payload(self.ahead), age=3600)
        if kind != "garbage":
            raise ValueError(kind)
        self._garbage += 1
        now = signing.b62_encode(int(time.time()))
        choices = [
            "",
            "garbage",
            "Y",
            # A token's shape, a made-up signature.
            f"{self._payload(self.ahead)}:{now}:{'A' * 43}",
            self._sign(self._payload(self.ahead), key="another secret key"),
            self._sign(self._payload(self.ahead), salt="another salt"),
            tokens.sign(self.replayed, alias="replica1"),
            "x" * 1000,
        ]
        return choices[self._garbage % len(choices)]


@dataclass(frozen=True)
class Spec:
    """One kind of request, and the routing state it must get."""

    mode: str
    method: str = "GET"
    view: str = "sync"
    cookie: str | None = None  # a ``Tokens.value`` kind, or "own"
    header: str | None = None
    #: "primary", "replica" (one replica for every read) or "one" (either,
    #: but one database for every read).
    reads: str = "replica"
    pinned: bool = False
    #: The row the request looks for must be there (it wrote it, or its
    #: token is for that write).
    found: bool = False
    #: The response sets the pin cookie (a position token).
    sets_cookie: bool = False
    write: bool = False
    #: Followed, on the same client, by a GET carrying the cookie it got.
    then_read_own: bool = False


PINNED: dict[str, Any] = {"reads": "primary", "pinned": True}
MODES = [
    Spec("get"),
    Spec("get, cookie y", cookie="y", **PINNED),
    Spec("get, garbage cookie", cookie="garbage", **PINNED),
    Spec("get, token ahead", cookie="ahead", reads="primary"),
    Spec("get, token replayed", cookie="replayed"),
    Spec("get, hour-old token replayed", cookie="old replayed"),
    Spec("get, hour-old token ahead", cookie="old ahead", reads="primary"),
    Spec("get, header ahead", header="ahead", reads="primary"),
    Spec("get, header y, cookie replayed", cookie="replayed", header="y", **PINNED),
    Spec("get that writes", write=True, found=True, sets_cookie=True, **PINNED),
    Spec("post", method="POST", sets_cookie=True, **PINNED),
    Spec(
        "post, token ahead", method="POST", cookie="ahead", sets_cookie=True, **PINNED
    ),
    Spec(
        "post that writes",
        method="POST",
        write=True,
        found=True,
        sets_cookie=True,
        then_read_own=True,
        **PINNED,
    ),
]
READ_OWN = Spec("get, own token after a write", cookie="own", reads="one", found=True)


def plan(requests: int, seed: int) -> list[list[Spec]]:
    """Jobs of one request, or two (a write, then reading it back): each job
    runs on one client, jobs run concurrently; ``requests`` in all."""
    rng = random.Random(seed)
    jobs: list[list[Spec]] = []
    left = requests
    while left > 0:
        spec = replace(rng.choice(MODES), view=rng.choice(list(PATHS)))
        if spec.then_read_own and left >= 2:
            jobs.append([spec, replace(READ_OWN, view=rng.choice(list(PATHS)))])
            left -= 2
        elif not spec.then_read_own:
            jobs.append([spec])
            left -= 1
    return jobs


# ------------------------------------------------------------ judging answers


@dataclass
class Tally:
    requests: int = 0
    reads: int = 0
    crossings: int = 0
    misrouted: int = 0
    stale: int = 0
    errors: int = 0
    by_mode: Counter[str] = field(default_factory=Counter)
    by_view: Counter[str] = field(default_factory=Counter)
    by_server: Counter[str] = field(default_factory=Counter)
    #: Reads on the primary or a replica, by mode.
    by_mode_side: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failures_left_out: int = 0

    def fail(self, text: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(text)
        else:
            self.failures_left_out += 1


def pin_cookie(set_cookies: list[str]) -> str | None:
    """The pin cookie's value in a response's ``Set-Cookie`` headers."""
    for header in set_cookies:
        if header.startswith(f"{COOKIE}="):
            return header.split(";", 1)[0][len(COOKIE) + 1 :]
    return None


def judge(
    spec: Spec,
    rid: str,
    body: dict[str, Any],
    set_cookie: str | None,
    ports: dict[str, int],
    tally: Tally,
) -> None:
    """Count one 200 answer's crossings, misrouted and stale reads."""
    crossing: list[str] = []
    reads = body.get("reads") or []
    if body.get("rid") != rid:
        crossing.append(f"answered for request {body.get('rid')!r}")
    if len(reads) != READS:
        crossing.append(f"{len(reads)} reads")
    dbs = [read["db"] for read in reads]
    replicas = {alias for alias in ports if alias != "default"}
    if spec.reads == "primary":
        ok = set(dbs) == {"default"}
    elif spec.reads == "replica":
        ok = len(set(dbs)) == 1 and dbs[0] in replicas
    else:
        ok = len(set(dbs)) == 1
    if not ok:
        crossing.append(f"reads on {dbs}, expected {spec.reads}")
    if any(read["pinned"] is not spec.pinned for read in reads):
        crossing.append(f"pinned {[read['pinned'] for read in reads]}")
    if not all(read["own"] for read in reads):
        crossing.append("saw another request's routing state")
    if spec.sets_cookie != (set_cookie is not None):
        crossing.append(f"pin cookie {set_cookie!r}")
    elif set_cookie is not None and not set_cookie.strip('"').startswith("default:"):
        crossing.append(f"pin cookie {set_cookie!r} is not a position token")
    tally.reads += len(reads)
    for read in reads:
        tally.by_server[read["db"]] += 1
        side = "primary" if read["db"] == "default" else "replica"
        tally.by_mode_side[spec.mode, side] += 1
        if ports.get(read["db"]) != read["port"]:
            tally.misrouted += 1
            tally.fail(
                f"{rid} ({spec.mode}, {spec.view}): misrouted read: alias "
                f"{read['db']} answered by port {read['port']}"
            )
    if spec.found and not all(read["found"] for read in reads):
        tally.stale += 1
        tally.fail(f"{rid} ({spec.mode}, {spec.view}): stale read {reads}")
    if crossing:
        tally.crossings += 1
        tally.fail(f"{rid} ({spec.mode}, {spec.view}): crossing: {'; '.join(crossing)}")


# ------------------------------------------------------------ the load


class _NoCookies(http.cookiejar.CookieJar):
    """Never stores a cookie: each request carries exactly what it is given."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None


async def _job(
    client: Any,
    job: list[Spec],
    number: int,
    tag: str,
    tokens: Tokens,
    ports: dict[str, int],
    tally: Tally,
) -> None:
    import httpx

    own: str | None = None
    name = f"{tag}-{number}"
    for step, spec in enumerate(job):
        rid = f"{tag}-{number}.{step}"
        headers = {}
        if spec.cookie is not None:
            value = own if spec.cookie == "own" else tokens.value(spec.cookie)
            headers["Cookie"] = f"{COOKIE}={value}"
        if spec.header is not None:
            headers[HEADER] = tokens.value(spec.header)
        params = {"rid": rid, "name": name}
        data = None
        if spec.write and spec.method == "GET":
            params["write"] = "1"
        elif spec.write:
            data = {"write": "1"}
        tally.requests += 1
        tally.by_mode[spec.mode] += 1
        tally.by_view[f"{spec.method} {spec.view}"] += 1
        started = time.monotonic()
        try:
            response = await client.request(
                spec.method, PATHS[spec.view], params=params, data=data, headers=headers
            )
            tally.latencies.append(time.monotonic() - started)
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
            body = response.json()
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            tally.errors += 1
            tally.fail(f"{rid} ({spec.mode}, {spec.view}): {type(exc).__name__}: {exc}")
            return
        own = pin_cookie(response.headers.get_list("set-cookie"))
        judge(spec, rid, body, own, ports, tally)


async def drive(
    url: str,
    jobs: list[list[Spec]],
    tokens: Tokens,
    ports: dict[str, int],
    clients: int,
    time_limit: float,
    request_timeout: float,
) -> tuple[Tally, float]:
    """Run ``jobs`` on ``clients`` concurrent HTTP clients; the tally and the
    seconds it took.  No job starts after ``time_limit`` seconds."""
    import httpx

    tally = Tally()
    tag = secrets.token_hex(3)
    queue = iter(enumerate(jobs))
    deadline = time.monotonic() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        for number, job in queue:
            if time.monotonic() >= deadline:
                tally.fail(f"time limit of {time_limit:g} s reached")
                return
            await _job(client, job, number, tag, tokens, ports, tally)

    pool = [
        httpx.AsyncClient(
            base_url=url,
            # The jar itself: httpx.Cookies(jar) would copy it into a plain,
            # storing one.
            cookies=_NoCookies(),
            timeout=request_timeout,
            trust_env=False,  # nothing between us and 127.0.0.1
        )
        for _ in range(clients)
    ]
    started = time.monotonic()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(client) for client in pool)),
            time_limit + 2 * request_timeout,
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in pool), return_exceptions=True)
    return tally, time.monotonic() - started


def measure(
    url: str,
    *,
    requests: int,
    clients: int,
    replayed: int,
    ports: dict[str, int],
    seed: int = 0,
    time_limit: float = 60.0,
    request_timeout: float = 30.0,
) -> dict[str, Any]:
    """Send ``requests`` mixed requests to the server at ``url`` and judge
    them.  ``replayed``: a position every replica has replayed; ``ports``:
    ``{alias: port}`` of the servers.  Tokens are signed with this process's
    ``SECRET_KEY``, which must be the server's."""
    jobs = plan(requests, seed)
    tokens = Tokens(replayed, replayed + AHEAD)
    tally, duration = asyncio.run(
        drive(url, jobs, tokens, ports, clients, time_limit, request_timeout)
    )
    failures = list(tally.failures)
    if tally.failures_left_out:
        failures.append(f"... and {tally.failures_left_out} more")
    if tally.requests != requests:
        failures.append(f"only {tally.requests} of {requests} requests were sent")
    return {
        "requests": tally.requests,
        "clients": clients,
        "crossings": tally.crossings,
        "misrouted": tally.misrouted,
        "stale_reads": tally.stale,
        "errors": tally.errors,
        "reads": tally.reads,
        "requests_by_mode": dict(sorted(tally.by_mode.items())),
        "requests_by_view": dict(sorted(tally.by_view.items())),
        "reads_by_server": dict(sorted(tally.by_server.items())),
        "reads_by_mode": {
            mode: {
                side: tally.by_mode_side[mode, side]
                for side in ("primary", "replica")
                if tally.by_mode_side[mode, side]
            }
            for mode in sorted(tally.by_mode)
        },
        "duration": round(duration, 2),
        "requests_per_s": round(tally.requests / max(duration, 1e-9), 1),
        "latency_p50_ms": round(load.percentile(tally.latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(load.percentile(tally.latencies, 0.99) * 1000, 1),
        "failures": failures,
    }


# ------------------------------------------------------------ the servers


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of this process; its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"uvicorn did not start within {timeout:g} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("uvicorn did not shut down")


def _site_settings(site: dict[str, Any]) -> dict[str, Any]:
    """Settings of the served site: the concurrency views, ours in ``auto`` mode."""
    import django

    databases: dict[str, dict[str, Any]] = {}
    for alias, port in site["ports"].items():
        databases[alias] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": "postgres",
            "OPTIONS": {"connect_timeout": 2},
        }
    if django.VERSION >= (5, 1):
        # One replica through Django's pool, one without: both paths.
        databases["replica2"]["OPTIONS"]["pool"] = {"min_size": 2, "max_size": 30}
    return {
        "DEBUG": False,
        "SECRET_KEY": site["secret"],
        "ALLOWED_HOSTS": ["127.0.0.1"],
        "USE_TZ": True,
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "multidb",
            "benchmarks.site",
        ],
        "MIDDLEWARE": ["multidb.middleware.PinningRouterMiddleware"],
        "ROOT_URLCONF": "benchmarks.site.concurrent_urls",
        "DATABASES": databases,
        "REPLICA_DATABASES": [alias for alias in databases if alias != "default"],
        "DATABASE_ROUTERS": ["multidb.PinningReplicaRouter"],
        "MULTIDB_PINNING_HEADER": HEADER,
        "MULTIDB_HEALTH_CHECK_INTERVAL": site["health_interval"],
        # A loaded 2-CPU machine must not make a probe time out: a replica
        # leaving the rotation would move requests between replicas.
        "MULTIDB_HEALTH_CHECK_TIMEOUT": 10.0,
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {
                "django.request": {"handlers": ["console"], "level": "ERROR"},
                "multidb": {"handlers": ["console"], "level": "WARNING"},
            },
        },
    }


def serve(port: int) -> None:
    """The server process: create the table and its sentinel row, then serve."""
    import uvicorn
    from django.conf import settings

    settings.configure(**_site_settings(json.loads(os.environ[SITE_ENV])))
    from django.core.asgi import get_asgi_application

    application = get_asgi_application()
    from django.db import connection, connections

    from benchmarks.site.concurrent import SENTINEL
    from benchmarks.site.models import Item

    with connection.schema_editor() as editor:
        editor.create_model(Item)
    Item.objects.create(name=SENTINEL)
    connections.close_all()
    uvicorn.run(
        application,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )


# ------------------------------------------------------------ run


def run(full: bool = True) -> dict[str, Any]:
    """The whole load on a fresh cluster; everything is removed after."""
    from multidb.positions import parse_lsn
    from multidb.testing.cluster import Cluster

    p = parameters(full)
    workdir = Path(tempfile.mkdtemp(prefix="mdb-concurrency-"))
    cluster = Cluster(replicas=2)
    started = time.monotonic()
    server: load.Server | None = None
    try:
        cluster.start()
        primary, replica1, replica2 = cluster.nodes
        ports = {
            "default": primary.port,
            "replica1": replica1.port,
            "replica2": replica2.port,
        }
        from django.conf import settings

        if not settings.configured:
            # Only to sign tokens here with the server's key.
            settings.configure(SECRET_KEY=secrets.token_urlsafe(32))
        secret = settings.SECRET_KEY
        site = {
            "ports": ports,
            "secret": secret,
            "health_interval": p["health_check_interval_s"],
        }
        server = load.Server(
            "uvicorn",
            lambda port: [
                sys.executable,
                "-m",
                "benchmarks.concurrency",
                "--serve",
                str(port),
            ],  # fmt: skip
            {SITE_ENV: json.dumps(site), "PYTHONPATH": str(ROOT)},
            workdir / "uvicorn.log",
        )
        server.start()
        # The table and the sentinel are on every replica before the load.
        replayed = parse_lsn(cluster.current_lsn())
        cluster.wait_caught_up(timeout=15)
        server_version = cluster.primary.scalar("SHOW server_version").split()[0]
        result = measure(
            server.url,
            requests=p["requests"],
            clients=p["clients"],
            replayed=replayed,
            ports=ports,
            seed=p["seed"],
            time_limit=p["time_limit_s"],
            request_timeout=p["request_timeout_s"],
        )
        if result["errors"]:
            result["server_log_tail"] = server.tail(20)
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            try:
                cluster.stop()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    return {
        "benchmark": "concurrency",
        "full": full,
        "parameters": p,
        **result,
        "machine": machine(server_version),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def table(data: dict[str, Any]) -> str:
    lines = [
        f"Concurrency: {data['requests']} requests from {data['clients']} concurrent"
        f" clients in {data['duration']:.1f} s ({data['requests_per_s']:.0f}/s,"
        f" p50 {data['latency_p50_ms']} ms, p99 {data['latency_p99_ms']} ms)",
        f"  pin crossings: {data['crossings']}   misrouted reads: "
        f"{data['misrouted']} of {data['reads']}   stale reads: "
        f"{data['stale_reads']}   errors: {data['errors']}",
        "  requests by view: "
        + ", ".join(f"{k} {v}" for k, v in data["requests_by_view"].items()),
        "  reads by server: "
        + ", ".join(f"{k} {v}" for k, v in data["reads_by_server"].items()),
        "  requests by mode (and where their reads went):",
        *(
            f"    {n:6}  {mode:32} {data['reads_by_mode'].get(mode, {})}"
            for mode, n in data["requests_by_mode"].items()
        ),
        f"  wall clock {data['wall_seconds']:.1f} s; failures: "
        + ("; ".join(data["failures"]) or "none"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2,000 requests instead of 10,000"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON too")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    load.exit_on_sigterm()
    data = run(full=not args.quick)
    print(table(data))
    if args.json:
        print(json.dumps(data, indent=2))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
