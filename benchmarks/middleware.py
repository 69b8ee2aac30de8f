"""Section 2: what ``PinningRouterMiddleware`` adds to a request, ours against the seed.

Whole requests go through Django's own ``WSGIHandler`` (called with a WSGI
environ and a ``start_response`` stub, the response iterated and closed as a
server would) and ``ASGIHandler`` (driven with a scope and ``receive`` /
``send`` coroutines on one event loop), to a trivial view that runs no query
(a sync view under WSGI, an async one under ASGI), for GET and POST, with:

* no middleware at all (the baseline);
* the seed's ``multidb_seed.middleware.PinningRouterMiddleware``;
* ours, ``multidb.middleware.PinningRouterMiddleware``;
* ours + metrics: ours with ``multidb.contrib.prometheus``'s metrics
  counting (on no registry), only while its blocks run, since counting is
  process-wide: the cost of a request's outcome and of its count in
  ``multidb.tallies``.

``MIDDLEWARE`` is read when a handler loads it, so each configuration gets a
handler of its own.  A round serves each configuration's requests in short
runs (``RUN``), all the configurations' runs in a shuffled order, so that a
change of the machine's speed during the round (another process, the CPU's
clock) falls on every configuration alike.  A round's figure for one
configuration is the median time of its requests in the round, and the
*added* cost of a middleware is, per round, its figure minus the baseline's
in the same round.  The median and p10-p90 over rounds are reported.

After them, figures for what the middleware does on PostgreSQL but not here
(stand-ins), and for parts of ours (diagnostics).

This module is also the benchmark's URLconf (``ROOT_URLCONF``).

    .venv/bin/python -m benchmarks.middleware [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/middleware.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks import common, instructions
from benchmarks.common import configure, header, ns, spread, verdict
from benchmarks.seed import install_seed

# --- the site under test ----------------------------------------------------


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


async def async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok")


urlpatterns = [path("sync/", sync_view), path("async/", async_view)]

CONFIGS = {
    "none": [],
    "seed": ["multidb_seed.middleware.PinningRouterMiddleware"],
    "ours": ["multidb.middleware.PinningRouterMiddleware"],
    "ours + metrics": ["multidb.middleware.PinningRouterMiddleware"],
}
#: The configurations compared with the seed's added cost, with ``TARGETS``.
OURS = ("ours", "ours + metrics")
SERVERS = ("WSGI", "ASGI")
METHODS = ("GET", "POST")
BODY = {"GET": b"", "POST": b"title=hello"}
COOKIE = "multidb_pin_writes"

#: Where each of ``OURS``' ratio to the seed's added cost goes in a row.
RATIO_KEYS = ("ratio_added_ours_to_seed", "ratio_added_ours_metrics_to_seed")
#: The added-cost targets: ours / seed at most this (reported, not asserted).
TARGETS = {"WSGI": 1.0, "ASGI": 0.2}


def build_handlers() -> dict[tuple[str, str], Any]:
    """One loaded handler per (server, configuration)."""
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    handlers: dict[tuple[str, str], Any] = {}
    for config, middleware in CONFIGS.items():
        with override_settings(MIDDLEWARE=middleware):
            handlers["WSGI", config] = WSGIHandler()
            handlers["ASGI", config] = ASGIHandler()
    return handlers


# --- driving the handlers ---------------------------------------------------


def wsgi_environ(method: str) -> dict[str, Any]:
    body = BODY[method]
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/sync/",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def asgi_scope(method: str) -> dict[str, Any]:
    body = BODY[method]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/async/",
        "raw_path": b"/async/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def wsgi_requests(
    handler: Any, method: str, count: int, seen: list[Any] | None = None
) -> list[int]:
    """Serve ``count`` requests; the nanoseconds each took.

    Each status and header list goes into ``seen``, if given.
    """
    base, body = wsgi_environ(method), BODY[method]
    times: list[int] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        if seen is not None:
            seen.append((status, headers))

    clock = time.perf_counter_ns
    for _ in range(count):
        environ = base.copy()
        environ["wsgi.input"] = io.BytesIO(body)
        start = clock()
        response = handler(environ, start_response)
        for _chunk in response:
            pass
        response.close()
        times.append(clock() - start)
    return times


async def asgi_requests(
    app: Any, method: str, count: int, seen: list[Any] | None = None
) -> list[int]:
    """Serve ``count`` requests one after another; the nanoseconds each took.

    Each ``http.response.start`` message goes into ``seen``, if given.
    """
    scope, body = asgi_scope(method), BODY[method]
    times: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if seen is not None and message["type"] == "http.response.start":
            seen.append(message)

    clock = time.perf_counter_ns
    for _ in range(count):
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(pending: list[dict[str, Any]] = pending) -> dict[str, Any]:
            if pending:
                return pending.pop()
            # The client stays connected: Django cancels this wait when the
            # response is done.
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

        start = clock()
        await app(scope, receive, send)
        times.append(clock() - start)
    return times


class Runner:
    """Times blocks of requests for every (server, method, configuration)."""

    def __init__(self) -> None:
        self.handlers = build_handlers()
        self.loop = asyncio.new_event_loop()
        self.metrics = _Connected()

    def setup(self, config: str) -> contextlib.AbstractContextManager[object]:
        """What a configuration needs while its requests run."""
        if config == "ours + metrics":
            return self.metrics
        return contextlib.nullcontext()

    def serve(
        self,
        server: str,
        config: str,
        method: str,
        count: int,
        seen: list[Any] | None = None,
    ) -> list[int]:
        handler = self.handlers[server, config]
        with self.setup(config):
            if server == "WSGI":
                return wsgi_requests(handler, method, count, seen)
            return self.loop.run_until_complete(
                asgi_requests(handler, method, count, seen)
            )

    def block(self, server: str, config: str, method: str, count: int) -> float:
        """The median time of ``count`` requests, in nanoseconds.

        The median, not the mean: on a shared machine a request now and then
        waits milliseconds for a CPU, which says nothing about a middleware.
        """
        return statistics.median(self.serve(server, config, method, count))

    def check(self) -> None:
        """Every configuration answers 200, and sets the pin cookie iff it should."""
        for server in SERVERS:
            for method in METHODS:
                for config in CONFIGS:
                    seen: list[Any] = []
                    self.serve(server, config, method, 1, seen)
                    (answer,) = seen
                    if server == "WSGI":
                        status, headers = answer
                        ok = status.startswith("200")
                        cookies = [v for k, v in headers if k.lower() == "set-cookie"]
                    else:
                        ok = answer["status"] == 200
                        cookies = [
                            v.decode()
                            for k, v in answer["headers"]
                            if k.lower() == b"set-cookie"
                        ]
                    pins = any(c.strip().startswith(f"{COOKIE}=") for c in cookies)
                    expected = config != "none" and method == "POST"
                    if not ok or pins != expected:
                        raise RuntimeError(
                            f"{server} {method} with {config} middleware: status ok"
                            f" {ok}, pin cookie {pins} (expected {expected})"
                        )

    def close(self) -> None:
        self.loop.close()


class _Connected:
    """``multidb.contrib.prometheus``'s receivers, connected inside ``with``.

    Signals are process-wide: connected for good, they would be paid by the
    other configurations' requests too."""

    def __init__(self) -> None:
        from multidb.contrib.prometheus.metrics import Metrics

        # A registry of none: the counters count, nothing is exported.
        self.metrics = Metrics(None)

    def __enter__(self) -> object:
        self.metrics.connect()
        return self.metrics

    def __exit__(self, *exc_info: object) -> None:
        self.metrics.disconnect()


#: Requests in a run of one configuration: the first of a run follows
#: another configuration's (cold caches, other code), the median of a
#: round's requests leaves it out.
RUN = {"WSGI": 10, "ASGI": 5}


def measure_requests(
    runner: Runner, rounds: int, block_ns: dict[str, float]
) -> dict[str, Any]:
    keys = [(s, m, c) for s in SERVERS for m in METHODS for c in CONFIGS]
    runs = {}
    for server, method, config in keys:
        runner.block(server, config, method, 5)  # warm up
        per_request = runner.block(server, config, method, 20)
        requests = block_ns[server] / per_request
        runs[server, method, config] = max(1, round(requests / RUN[server]))
    samples: dict[tuple[str, str, str], list[float]] = {key: [] for key in keys}
    gc.collect()
    gc.disable()
    try:
        for round_number in range(rounds):
            # Every configuration's runs, in an order shuffled run by run:
            # each follows each of the others as often, and a drift of the
            # machine's speed within a round falls on all of them alike.
            shuffle = random.Random(round_number).shuffle
            for server in SERVERS:
                for method in METHODS:
                    times: dict[str, list[int]] = {c: [] for c in CONFIGS}
                    order = [c for c in CONFIGS for _ in range(runs[server, method, c])]
                    shuffle(order)
                    for config in order:
                        times[config] += runner.serve(
                            server, config, method, RUN[server]
                        )
                    for config, taken in times.items():
                        samples[server, method, config].append(statistics.median(taken))
            gc.collect()  # between rounds, untimed
    finally:
        gc.enable()
    results: dict[str, Any] = {}
    for server in SERVERS:
        for method in METHODS:
            base = samples[server, method, "none"]
            row: dict[str, Any] = {}
            for config in CONFIGS:
                values = samples[server, method, config]
                row[config] = {
                    **{f"{k}_ns": v for k, v in spread(values).items()},
                    "requests_per_round": runs[server, method, config] * RUN[server],
                }
                if config != "none":
                    added = [t - b for t, b in zip(values, base, strict=True)]
                    row[config]["added"] = {
                        f"{k}_ns": v for k, v in spread(added).items()
                    }
            seed_added = row["seed"]["added"]["median_ns"]
            for config, key in zip(OURS, RATIO_KEYS, strict=True):
                added = row[config]["added"]["median_ns"]
                row[key] = added / seed_added if seed_added > 0 else None
            results[f"{server} {method}"] = row
    return results


def _time_calls(
    candidates: dict[str, Callable[[], object]], rounds: int, calls: int = 500
) -> dict[str, dict[str, float]]:
    """Interleaved rounds of ``calls`` calls of each candidate, per call."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter_ns() - start) / calls)
    return {
        name: {f"{k}_ns": v for k, v in spread(values).items()}
        for name, values in samples.items()
    }


def stand_ins(rounds: int) -> dict[str, dict[str, float]]:
    """What a POST costs where the primary has positions, measured on SQLite.

    Not the real thing: SQLite has no position, so our middleware sets the
    legacy ``y`` and makes no query.  On PostgreSQL it signs the result of
    one ``pg_current_wal_insert_lsn()`` round trip; that round trip is measured on
    a real cluster in section 3.
    """
    from django.db import connections
    from django.test import override_settings

    from multidb import tokens

    connection = connections["default"]
    connection.ensure_connection()
    token = tokens.sign(0x16_B374_D848)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    plain = _time_calls(
        {
            "tokens.sign(position)": lambda: tokens.sign(0x16_B374_D848),
            "tokens.pin_for(token), next request": lambda: tokens.pin_for(token),
            "tokens.sign_time() (POST, no query)": tokens.sign_time,
            "SELECT 1, SQLite in-memory": select_one,
        },
        rounds,
    )
    with override_settings(MULTIDB_ENCRYPT_TOKENS=True):
        sealed_token = tokens.sign(0x16_B374_D848)
        sealed = _time_calls(
            {
                "tokens.sign(position), encrypted": lambda: tokens.sign(0x16_B374_D848),
                "tokens.pin_for(encrypted token)": lambda: tokens.pin_for(sealed_token),
            },
            rounds,
        )
    return {**plain, **sealed}


@contextlib.contextmanager
def request_end(method: str) -> Iterator[Callable[[], None]]:
    """The end of a ``method`` request, as our middleware counts it for the
    metrics (while they count): a GET that read a replica, or a POST."""
    from multidb import middleware, pinning, tallies

    ending = HttpRequest()
    ending.method = method
    token = middleware._begin(ending, False)
    state = getattr(ending, middleware._STATE)
    if method == "GET":
        state.pick()  # its reads' replica
    response = HttpResponse(b"ok")
    tallies.start()
    try:
        # As the middleware calls it, reading the state as it does.
        yield lambda: middleware._send_routed(ending._multidb_state, response)  # type: ignore[attr-defined]
    finally:
        tallies.stop()
        pinning.end_request(token)


#: The request end counted for the metrics, net of an empty call: the
#: issue's "a few hundred nanoseconds" a request, read as at most this.
REQUEST_END_NS = 500

EMPTY_CALL = "an empty call (in every row)"
END_GET = "request end, counted for the metrics: a GET that read"
END_POST = "request end, counted for the metrics: a POST"


def components(rounds: int) -> dict[str, dict[str, float]]:
    """Parts of our middleware's work on a GET, to explain its added cost."""
    request = HttpRequest()
    request.method = "GET"
    with request_end("GET") as end, request_end("POST") as end_post:
        return _request_parts(request, end, end_post, rounds)


def _request_parts(
    request: HttpRequest,
    end: Callable[[], None],
    end_post: Callable[[], None],
    rounds: int,
) -> dict[str, dict[str, float]]:
    from django.conf import settings

    from multidb import middleware, pinning
    from multidb.conf import conf

    return _time_calls(
        {
            EMPTY_CALL: lambda: None,
            "conf.PINNING_HEADER (unset: default)": lambda: conf.PINNING_HEADER,
            "conf.REPLICA_DATABASES (set)": lambda: conf.REPLICA_DATABASES,
            "getattr(settings, UNSET, default)": lambda: getattr(
                settings, "MULTIDB_UNSET", None
            ),
            "_incoming(GET request)": lambda: middleware._incoming(request),
            "begin_request + end_request": lambda: pinning.end_request(
                pinning.begin_request(pinning.NO_PIN)
            ),
            END_GET: end,
            END_POST: end_post,
        },
        rounds,
    )


def measure(quick: bool = False) -> dict[str, Any]:
    """Measure section 2; returns JSON-able results (``print_report`` prints them)."""
    install_seed()
    configure()
    # Time per configuration and round: an ASGI request costs about ten
    # WSGI ones, and varies more (thread hops).
    rounds, block_ms = (
        (21, {"WSGI": 10, "ASGI": 50}) if quick else (31, {"WSGI": 20, "ASGI": 80})
    )
    block_ns = {server: ms * 1e6 for server, ms in block_ms.items()}
    runner = Runner()
    try:
        runner.check()
        results = measure_requests(runner, rounds, block_ns)
    finally:
        runner.close()
    targets = []
    for config, key in zip(OURS, RATIO_KEYS, strict=True):
        for server in SERVERS:
            for method in METHODS:
                ratio = results[f"{server} {method}"][key]
                limit = TARGETS[server]
                targets.append(
                    {
                        "target": f"{server} {method}: {config}' added cost <="
                        f" {limit}x the seed's",
                        "ratio": ratio,
                        "limit": limit,
                        "verdict": "n/a" if ratio is None else verdict(ratio, limit),
                    }
                )
    counted, uncounted = None, "valgrind or setarch not found"
    if instructions.available():
        try:
            counted = instructions.per_request(
                list(SERVERS), [*CONFIGS, instructions.REQUEST_END], list(METHODS)
            )
        except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
            # A supplement to the timed figures: its failure is reported,
            # never a broken section.
            uncounted = f"valgrind failed: {str(error).splitlines()[0]}"
    if counted is not None:
        for config in OURS:
            for key, row in counted.items():
                ratio = _added_ratio(row, config)
                limit = TARGETS[key.split()[0]]
                targets.append(
                    {
                        "target": f"{key}: {config}' added instructions <="
                        f" {limit}x the seed's",
                        "ratio": ratio,
                        "limit": limit,
                        "verdict": "n/a" if ratio is None else verdict(ratio, limit),
                    }
                )
    parts = components(rounds)
    return {
        "rounds": rounds,
        "block_ms": block_ms,
        "results": results,
        "instructions": counted,
        "uncounted": uncounted,
        "targets": targets,
        "stand_ins": stand_ins(rounds),
        "components": parts,
        "request_end": _request_end_target(parts),
    }


def _request_end_target(parts: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The request end counted for the metrics, net of an empty call,
    against ``REQUEST_END_NS``."""
    empty = parts[EMPTY_CALL]["median_ns"]
    net = {
        method: parts[name]["median_ns"] - empty
        for method, name in (("GET", END_GET), ("POST", END_POST))
    }
    return {
        "net_ns": net,
        "limit_ns": REQUEST_END_NS,
        "verdict": verdict(max(net.values()), REQUEST_END_NS),
    }


def _added_ratio(row: dict[str, int], config: str) -> float | None:
    """``config``'s instructions added to a request, over the seed's."""
    seed_added = row["seed"] - row["none"]
    return (row[config] - row["none"]) / seed_added if seed_added > 0 else None


def run(quick: bool = False) -> dict[str, Any]:
    """Measure section 2 and print its table."""
    report = measure(quick)
    print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        header(
            "Section 2 - middleware: time per request through Django's handlers,"
            f" trivial view, SQLite; median of {report['rounds']} interleaved"
            " rounds (p10-p90 over rounds)"
        )
    )
    print(
        f"\n  {'request':10} {'no middleware':>14} {'seed added':>11}"
        f" {'p10-p90':>17} {'ours added':>11} {'p10-p90':>17} {'ours/seed':>9}"
        f" {'+metrics':>9} {'p10-p90':>17} {'+m/seed':>8}"
    )
    for key, row in report["results"].items():

        def added(config: str, row: dict[str, Any] = row) -> tuple[str, str]:
            figures = row[config]["added"]
            low, high = ns(figures["p10_ns"]), ns(figures["p90_ns"])
            return ns(figures["median_ns"]), f"{low}..{high}"

        seed, seed_spread = added("seed")
        ours, ours_spread = added("ours")
        metered, metered_spread = added("ours + metrics")
        ratio, metered_ratio = (
            "n/a" if row[k] is None else f"{row[k]:.2f}x" for k in RATIO_KEYS
        )
        print(
            f"  {key:10} {ns(row['none']['median_ns']):>14} {seed:>11}"
            f" {seed_spread:>17} {ours:>11} {ours_spread:>17} {ratio:>9}"
            f" {metered:>9} {metered_spread:>17} {metered_ratio:>8}"
        )
    counted = report.get("instructions")
    if counted is None:
        print(f"\n  Instructions per request: not counted ({report.get('uncounted')}).")
    else:
        print(
            "\n  Instructions per request (valgrind; the same in every run of"
            " the same code here, within a few thousand under ASGI):"
        )
        print(
            f"  {'request':10} {'no middleware':>14} {'seed added':>11}"
            f" {'ours added':>11} {'ours/seed':>9} {'+metrics':>9} {'+m/seed':>8}"
        )
        for key, counts in counted.items():
            plain, metered = (_times(_added_ratio(counts, c)) for c in OURS)
            extra = {c: counts[c] - counts["none"] for c in CONFIGS}
            print(
                f"  {key:10} {counts['none']:>14,} {extra['seed']:>11,}"
                f" {extra['ours']:>11,} {plain:>9}"
                f" {extra['ours + metrics']:>9,} {metered:>8}"
            )
        print(
            "  The request end counted for the metrics, per call: "
            + ", ".join(
                f"{method} {counted[f'WSGI {method}'][instructions.REQUEST_END]:,}"
                for method in METHODS
            )
            + " instructions\n  (with the loop and the call around it; counted"
            " apart: a request's own count moves by a few thousand with the"
            " modules loaded)."
        )
    print("\n  Targets (reported, never asserted):")
    for target in report["targets"]:
        ratio = "  n/a" if target["ratio"] is None else f"{target['ratio']:5.2f}x"
        print(f"  {target['verdict']}  {ratio}  {target['target']}")
    print(
        "\n  The position query after a write (pg_current_wal_insert_lsn()): NOT"
        " MEASURED HERE,\n  SQLite has none (our middleware sets the legacy"
        " 'y'); see section 3.\n  Stand-ins, on SQLite, per call:"
    )
    for name, figures in report["stand_ins"].items():
        print(f"    {name:40} {ns(figures['median_ns']):>8}")
    print("  Parts of ours (diagnostic), per call:")
    for name, figures in report["components"].items():
        print(f"    {name:54} {ns(figures['median_ns']):>8}")
    end = report["request_end"]
    print(
        f"  {end['verdict']}  the request end counted for the metrics, net of an"
        f" empty call: GET {ns(end['net_ns']['GET'])}, POST"
        f" {ns(end['net_ns']['POST'])} (target <= {end['limit_ns']} ns, reported)"
    )


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


if __name__ == "__main__":
    sys.exit(common.main(run, __doc__ or ""))
