"""Offload against consistency: stale reads and replica share on a real cluster.

A real PostgreSQL primary and two streaming replicas on loopback: replica A
applies WAL 200 ms late (``recovery_min_apply_delay``), replica B pauses
replay in bursts.  N users, all concurrent, drive a Django site
(``benchmarks.site``, sync views, ASGI under uvicorn in its own process)
over HTTP, each with its own cookie jar: with probability p a user writes a
row and reads it back by id, otherwise it reads a page of its own newest
rows.  Every read is checked for the user's last write (a *stale read* if
missing) and reports the server that answered it.

The configurations run one after the other on the same cluster, each with a
fresh table: the seed (django-multidb-router 0.11) with 15 s pins, the
baseline; then the configuration matrix, ours pinning by position
(``auto``) under each configuration users run (``MATRIX``: a, the defaults;
b, ``synchronous_commit = off`` for the app's role; c, ``ATOMIC_REQUESTS``;
d, ``CONN_MAX_AGE = 60``; e, Django's pool; f, PgBouncer in transaction
mode; g, gunicorn ``--preload`` with 2 workers).  Then m, ours with
``MULTIDB_MONOTONIC_READS``; and the catch-up trade-off: both replicas
applying WAL 20 ms late, no pauses, without a catch-up wait (w0) and with
a 50 ms one (w50), with 4 users writing half the time (so that a
read-back follows its write within the 20 ms), compared on the primary's
share of reads and the reads' p99 latency.  Then the offload of pinning
on writes that happen: every page read first runs ``get_or_create`` of the
user's profile row (found after the first visit), pinning on write routing
as the package did (o0), then on writes (o).  ``--quick`` runs the
baseline, rows a to c, m, w0 and w50 (those two 5 s each); the full run
adds rows d to g, o0 and o, and the seed with 1 s pins and ours pinning
by time (15 s) for reference.

Every read also reports the newest row anyone wrote, as its server showed
it: a *monotonic-read violation* is a read that showed an older one than an
earlier read of the same user did (data going back in time between its
requests), counted for every configuration.

The *oracle share* is the physical ceiling: the fraction of reads for which
some replica had already replayed that user's last write when the read
started, judged from both replicas' replay positions sampled every few ms.

    .venv/bin/python -m benchmarks.consistency [--quick] [--rows a,f] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.common import machine, machine_line
from benchmarks.load import (  # noqa: F401 - PreciseCookieJar: kept importable here
    GUNICORN_THREADS,
    ROOT,
    PreciseCookieJar,
    Server,
    percentile,
    reset_table,
)
from benchmarks.load import clients as make_clients

#: Ours, pinning by position: every row of the matrix.
_AUTO = {"router": "ours", "mode": "auto", "pin_seconds": 15}
#: Django's pool (``OPTIONS["pool"]``, Django 5.1+) in row e: psycopg_pool's
#: options, sized for 50 users on one process.
POOL_OPTIONS = {"min_size": 2, "max_size": 8, "timeout": 10}

#: Every configuration, in the order they run, by the id ``--rows`` takes.
#: ``name`` heads the row; ``quick``: in ``--quick`` too; ``site``: added to
#: the site's settings (``benchmarks/site/settings.py``); ``role``: settings
#: of a role made for the site (``ALTER ROLE ... SET``); ``pgbouncer``: the
#: pool mode of a PgBouncer in front of every server; ``server``: the
#: site's server, as ``load.Server.of_site`` takes it; ``django``: the least
#: Django.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "seed15": {"name": "seed, 15 s pins", "router": "seed", "pin_seconds": 15,
               "quick": True},
    "seed1": {"name": "seed, 1 s pins", "router": "seed", "pin_seconds": 1},
    "time": {"name": "ours, time (15 s)", "router": "ours", "mode": "time",
             "pin_seconds": 15},
    "a": {**_AUTO, "name": "a: auto, defaults", "quick": True},
    "b": {**_AUTO, "name": "b: auto, sync commit off", "quick": True,
          "role": {"synchronous_commit": "off"}},
    "c": {**_AUTO, "name": "c: auto, ATOMIC_REQUESTS", "quick": True,
          "site": {"atomic_requests": True}},
    # Under WSGI: Django documents persistent connections as not for ASGI,
    # where each request runs in a new thread and opens a new connection.
    "d": {**_AUTO, "name": "d: auto, CONN_MAX_AGE=60",
          "site": {"conn_max_age": 60}, "server": {"kind": "gunicorn"}},
    "e": {**_AUTO, "name": "e: auto, Django pool", "django": (5, 1),
          "site": {"options": {"pool": POOL_OPTIONS}}},
    "f": {**_AUTO, "name": "f: auto, PgBouncer (txn)", "pgbouncer": "transaction"},
    "g": {**_AUTO, "name": "g: auto, gunicorn preload",
          "server": {"kind": "gunicorn", "workers": 2, "preload": True},
          "site": {"warm_up": True}},
    "m": {**_AUTO, "name": "m: auto, monotonic reads", "quick": True,
          "site": {"monotonic_reads": True}},
    # The catch-up trade-off: both replicas CATCH_UP_DELAY_MS behind, no
    # pauses; without a wait, then with one.
    "w0": {**_AUTO, "name": "w0: +20 ms, no wait", "quick": True,
           "scenario": "catch_up"},
    "w50": {**_AUTO, "name": "w50: +20 ms, 50 ms wait", "quick": True,
            "scenario": "catch_up", "site": {"catch_up_wait": 50}},
    # Every page read runs get_or_create (found after the first visit):
    # pinning on write routing, as the package did, then on writes.
    "o0": {**_AUTO, "name": "o0: get_or_create, pin on routing",
           "site": {"get_or_create": True, "pin_on_write_routing": True}},
    "o": {**_AUTO, "name": "o: get_or_create, pin on writes",
          "site": {"get_or_create": True}},
}  # fmt: skip
#: The configuration matrix (issue 9): its rows' targets are checked.
MATRIX = ["a", "b", "c", "d", "e", "f", "g"]
BASELINE = "seed15"
#: Rows whose reads must never go back in time (``MULTIDB_MONOTONIC_READS``).
MONOTONIC = ["m"]
#: The catch-up trade-off's rows: without the wait, and with it.
CATCH_UP = ("w0", "w50")
#: Row c's replica share must stay this close to row a's.
C_VS_A = 0.05
#: The role row b's site connects as (made, and dropped, by the benchmark).
APP_ROLE = "bench_app"


def selected(quick: bool, rows: list[str] | None = None) -> list[str]:
    """The configurations to run, in order: ``rows``, or the quick or full set."""
    if rows is None:
        return [k for k, c in CONFIGURATIONS.items() if c.get("quick") or not quick]
    unknown = sorted(set(rows) - set(CONFIGURATIONS))
    if unknown:
        raise ValueError(f"unknown rows {unknown}; choose from {list(CONFIGURATIONS)}")
    return [key for key in CONFIGURATIONS if key in rows]


def parameters(quick: bool) -> dict[str, Any]:
    return {
        "users": 50,
        "load_seconds": 10.0 if quick else 45.0,
        "write_probability": 0.1,
        "think_ms": [20, 50],
        "replica_a_apply_delay_ms": 200,
        # Pauses longer than the seed's 1 s pin, or it could never read stale.
        "replica_b_pause_every_s": 5.0 if quick else 10.0,
        "replica_b_pause_for_s": 2.0 if quick else 3.0,
        "sample_every_ms": 3,
        "health_check_interval_s": 0.25,
        "rows_per_user_at_start": 5,
        "request_timeout_s": 10.0,
        "max_iterations_per_user": 5000,
        # The catch-up rows (w0, w50): both replicas this far behind.
        "catch_up_delay_ms": 20,
        "catch_up_load_seconds": 5.0 if quick else 20.0,
        # Few users, so that a read-back follows its write within the
        # replicas' 20 ms (50 users on 2 CPUs take hundreds of ms per request).
        "catch_up_users": 4,
        "catch_up_write_probability": 0.5,
    }


# ------------------------------------------------------------ measurement


@dataclass
class Read:
    #: When the client sent it, and when the server ran the read's SELECT
    #: (``time.monotonic()``: CLOCK_MONOTONIC, the same in every process).
    start: float
    queried: float
    latency: float
    port: int
    claim: str
    #: Whether the user's last write was there; None if it never wrote.
    visible: bool | None
    #: The primary's position right after the user's last write.
    token: int | None
    #: The server process that answered the request.
    pid: int
    user: int = 0
    #: The newest row anyone wrote, as the answering server showed it.
    newest: int = 0


@dataclass
class Load:
    reads: list[Read] = field(default_factory=list)
    write_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0


class Sampler(threading.Thread):
    """Both replicas' replay positions, with the time they were known by."""

    def __init__(self, dsns: list[str], every: float) -> None:
        super().__init__(name="replay-sampler", daemon=True)
        self.dsns, self.every = dsns, every
        self.times: list[float] = []
        self.best: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg

        query = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')"
        try:
            conns = [psycopg.connect(dsn, autocommit=True) for dsn in self.dsns]
            try:
                while not self.stop.is_set():
                    best = max(int(c.execute(query).fetchone()[0]) for c in conns)
                    # Known by now: both values were read before this instant.
                    self.times.append(time.monotonic())
                    self.best.append(best)
                    self.stop.wait(self.every)
            finally:
                for conn in conns:
                    conn.close()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def replayed(self, token: int | None, before: float) -> bool:
        if token is None:
            return True
        i = bisect.bisect_left(self.times, before) - 1
        return i >= 0 and self.best[i] >= token


class PauseCycle(threading.Thread):
    """Pause replica B's replay for ``pause_for`` s in every ``every`` s."""

    def __init__(self, cluster: Any, node: Any, every: float, pause_for: float):
        super().__init__(name="pause-cycle", daemon=True)
        self.cluster, self.node = cluster, node
        self.every, self.pause_for = every, pause_for
        self.stop = threading.Event()
        self.paused_seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        start = time.monotonic()
        try:
            for k in range(10_000):
                due = start + (k + 1) * self.every - self.pause_for
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
                self.cluster.pause_replay(self.node)
                paused = time.monotonic()
                try:
                    self.stop.wait(self.pause_for)
                finally:
                    self.cluster.resume_replay(self.node)
                    self.paused_seconds += time.monotonic() - paused
        except BaseException as exc:  # reported by the caller
            self.error = exc


async def _user(
    client: Any, user: int, p: dict[str, Any], deadline: float, load: Load
) -> None:
    import httpx

    rng = random.Random(user)
    last_id: int | None = None
    token: int | None = None

    async def read(url: str) -> None:
        start = time.monotonic()
        response = await client.get(url)
        latency = time.monotonic() - start
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
        body = response.json()
        visible = None
        if last_id is not None:
            visible = body["found"] if "found" in body else last_id in body["ids"]
        where = body["at"], latency, body["port"], body["claim"]
        load.reads.append(
            Read(start, *where, visible, token, body["pid"], user, body["newest"])
        )

    low, high = (ms / 1000 for ms in p["think_ms"])
    for _ in range(p["max_iterations_per_user"]):
        await asyncio.sleep(rng.uniform(low, high))
        if time.monotonic() >= deadline:
            return
        try:
            if rng.random() < p["write_probability"]:
                start = time.monotonic()
                response = await client.post("/rows/", data={"owner": user})
                load.write_latencies.append(time.monotonic() - start)
                if response.status_code != 201:
                    raise RuntimeError(f"POST /rows/: {response.status_code}")
                written = response.json()
                last_id, token = written["id"], written["lsn"]
                await read(f"/rows/{last_id}/")
            else:
                await read(f"/rows/?owner={user}")
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
            load.errors.append(f"{type(exc).__name__}: {exc}")


async def _drive(url: str, p: dict[str, Any], on_start: Any) -> Load:
    load = Load()
    clients = make_clients(url, p["users"], p["request_timeout_s"])
    try:
        # Warm-up, not measured: imports, first connections, the prober.
        await asyncio.gather(
            *(c.get(f"/rows/?owner={u}") for u, c in enumerate(clients))
        )
        on_start()
        start = time.monotonic()
        deadline = start + p["load_seconds"]
        users = (_user(c, u, p, deadline, load) for u, c in enumerate(clients))
        await asyncio.wait_for(
            asyncio.gather(*users), p["load_seconds"] + 2 * p["request_timeout_s"]
        )
        load.duration = time.monotonic() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    return load


# ------------------------------------------------------------ one configuration


def _median_gap_ms(times: list[float]) -> float | None:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return round(1000 * statistics.median(gaps), 2) if gaps else None


def unavailable(key: str) -> str | None:
    """Why configuration ``key`` cannot run here (an "n/a" row), or None."""
    import django

    from multidb.testing import cluster

    spec = CONFIGURATIONS[key]
    least = spec.get("django")
    if least and least > django.VERSION[:2]:
        wanted = ".".join(map(str, least))
        return f"n/a (Django {django.get_version()}; the pool needs {wanted}+)"
    if "pgbouncer" in spec and not hasattr(cluster, "PgBouncer"):
        return "n/a (PgBouncer harness missing)"
    return None


@contextlib.contextmanager
def app_role(cluster: Any, settings: dict[str, str]) -> Iterator[dict[str, str]]:
    """A login role for the site (``APP_ROLE``) with ``ALTER ROLE ... SET``
    ``settings``, allowed to read and add rows; reset and dropped afterwards.

    Yields the settings as a new session of the role sees them.
    """
    import psycopg

    from benchmarks.site import TABLE

    primary = cluster.primary
    primary.query(f"CREATE ROLE {APP_ROLE} LOGIN")
    try:
        primary.query(f"GRANT SELECT, INSERT ON {TABLE} TO {APP_ROLE}")
        primary.query(f"GRANT USAGE ON SEQUENCE {TABLE}_id_seq TO {APP_ROLE}")
        for name, value in settings.items():
            primary.query(f"ALTER ROLE {APP_ROLE} SET {name} = '{value}'")
        with psycopg.connect(primary.dsn(), user=APP_ROLE, autocommit=True) as conn:
            seen = {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in settings}
        if seen != settings:
            raise RuntimeError(f"a session of {APP_ROLE} has {seen}, not {settings}")
        cluster.wait_caught_up(timeout=15)  # the role is on the replicas too
        yield seen
    finally:
        primary.query(f"ALTER ROLE {APP_ROLE} RESET ALL")
        primary.query(f"DROP OWNED BY {APP_ROLE}")
        primary.query(f"DROP ROLE {APP_ROLE}")


@contextlib.contextmanager
def pgbouncer(
    cluster: Any, pool_mode: str, nodes: dict[str, Any]
) -> Iterator[dict[str, dict[str, Any]]]:
    """A PgBouncer (``multidb.testing.cluster.PgBouncer``) in front of every server.

    Yields the site's ``databases``: each alias' settings through it.
    """
    from multidb.testing.cluster import PgBouncer  # type: ignore[attr-defined]

    bouncer = PgBouncer(cluster, pool_mode=pool_mode).start()
    try:
        yield {alias: bouncer.django_settings(node) for alias, node in nodes.items()}
    finally:
        bouncer.stop()


def fork_check(url: str, workers: int, attempts: int = 60) -> dict[str, Any]:
    """Ask the site's ``/probes/`` until each of its ``workers`` has answered.

    Forked workers (``gunicorn --preload``, after the master read and probed
    at import) must each run a prober of their own, over connections no
    other process uses: what ``multidb.health``'s at-fork handlers are for.
    ``pass`` is None if the site could not tell (``/probes/`` found no
    prober connections).
    """
    import httpx

    seen: dict[int, dict[str, Any]] = {}
    for _ in range(attempts):
        # A new connection each time, so that any worker may accept it.
        answer = httpx.get(
            f"{url}/probes/", timeout=5, headers={"Connection": "close"}
        ).json()
        seen[answer["pid"]] = answer
        if len(seen) >= workers:
            break
    owners: dict[int, set[int]] = {}
    for pid, answer in seen.items():
        for backend in answer["backends"].values():
            owners.setdefault(backend, set()).add(pid)
    shared = sorted(backend for backend, pids in owners.items() if len(pids) > 1)
    probing = sum(answer["prober"] for answer in seen.values())
    checked = any(answer["backends"] for answer in seen.values())
    passed = len(seen) == workers == probing and not shared
    return {
        "workers": workers,
        "workers_seen": len(seen),
        "probers_running": probing,
        "shared_backends": shared,
        "pass": passed if checked else None,
        "answers": list(seen.values()),
    }


def _measure(
    key: str,
    cluster: Any,
    p: dict[str, Any],
    seed_path: Path,
    workdir: Path,
) -> dict[str, Any]:
    spec = CONFIGURATIONS[key]
    _, replica_a, replica_b = cluster.nodes
    server_options = spec.get("server", {})
    extra: dict[str, Any] = {"server": server_options.get("kind", "uvicorn")}
    if server_options.get("workers", 1) > 1:
        extra["server"] += f", {server_options['workers']} workers"
    if server_options.get("preload"):
        extra["server"] += ", --preload"
    catch_up = spec.get("scenario") == "catch_up"
    if catch_up:
        p = {
            **p,
            "load_seconds": p["catch_up_load_seconds"],
            "users": p["catch_up_users"],
            "write_probability": p["catch_up_write_probability"],
        }
        for node in (replica_a, replica_b):
            cluster.set_apply_delay(node, p["catch_up_delay_ms"])
        extra["apply_delay_ms"] = p["catch_up_delay_ms"]
    try:
        return _measure_on(key, cluster, p, seed_path, workdir, catch_up, extra)
    finally:
        if catch_up:
            cluster.set_apply_delay(replica_a, p["replica_a_apply_delay_ms"])
            cluster.set_apply_delay(replica_b, 0)


def _measure_on(
    key: str,
    cluster: Any,
    p: dict[str, Any],
    seed_path: Path,
    workdir: Path,
    catch_up: bool,
    extra: dict[str, Any],
) -> dict[str, Any]:
    began = time.monotonic()
    marks: dict[str, float] = {}
    spec = CONFIGURATIONS[key]
    primary, replica_a, replica_b = cluster.nodes
    nodes = {"default": primary, "replica_a": replica_a, "replica_b": replica_b}
    ports = {alias: node.port for alias, node in nodes.items()}
    site = {k: spec[k] for k in ("router", "mode", "pin_seconds") if k in spec}
    site.update(spec.get("site", {}))
    site.update(ports=ports, health_interval=p["health_check_interval_s"])
    server_options = spec.get("server", {})
    kind = server_options.get("kind", "uvicorn")
    reset_table(cluster, p["users"], p["rows_per_user_at_start"])
    seed = seed_path if spec["router"] == "seed" else None
    sampler = Sampler([replica_a.dsn(), replica_b.dsn()], p["sample_every_ms"] / 1000)
    pauses = PauseCycle(
        cluster, replica_b, p["replica_b_pause_every_s"], p["replica_b_pause_for_s"]
    )

    def on_start() -> None:
        marks["load"] = time.monotonic()
        if not catch_up:
            pauses.start()

    with contextlib.ExitStack() as stack:
        if "role" in spec:
            role = app_role(cluster, spec["role"])
            extra["role_settings"] = stack.enter_context(role)
            site["user"] = APP_ROLE
        if "pgbouncer" in spec:
            pooled = pgbouncer(cluster, spec["pgbouncer"], nodes)
            site["databases"] = stack.enter_context(pooled)
            extra["databases"] = site["databases"]
        log = workdir / f"{kind}-{key}.log"
        server = Server.of_site(site, seed, log, **server_options)
        try:
            server.start()
            sampler.start()
            load = asyncio.run(_drive(server.url, p, on_start))
            if server_options.get("workers", 1) > 1:
                extra["fork_check"] = fork_check(server.url, server_options["workers"])
        finally:
            pauses.stop.set()
            sampler.stop.set()
            if pauses.ident is not None:
                pauses.join(15)
            if sampler.ident is not None:
                sampler.join(5)
            server.stop()
    marks["end"] = time.monotonic()
    for thread in (sampler, pauses):
        if thread.error is not None:
            raise RuntimeError(f"{thread.name} failed: {thread.error!r}")

    by_port = {port: alias for alias, port in ports.items()}
    reads = load.reads
    served = dict.fromkeys(ports, 0)
    misrouted = stale = on_replica = oracle = oracle_at_query = 0
    stale_by_server: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    misrouted_examples: list[dict[str, str]] = []
    missed = 0
    for r in reads:
        answered = by_port.get(r.port, f"port {r.port}")
        served[answered] = served.get(answered, 0) + 1
        if r.visible is False:
            stale_by_server[answered] = stale_by_server.get(answered, 0) + 1
            if len(examples) < 5:
                examples.append(
                    {
                        "server": answered,
                        "claim": r.claim,
                        "token": r.token,
                        "replicas_had_it_at_query": sampler.replayed(
                            r.token, r.queried
                        ),
                        "seconds_into_load": round(r.start - marks["load"], 3),
                    }
                )
        if ports.get(r.claim) != r.port:
            misrouted += 1
            if len(misrouted_examples) < 5:
                misrouted_examples.append({"claim": r.claim, "server": answered})
        stale += r.visible is False
        on_replica += r.port != primary.port
        oracle += sampler.replayed(r.token, r.start)
        could = sampler.replayed(r.token, r.queried)
        oracle_at_query += could
        missed += could and r.port == primary.port
    n = max(1, len(reads))
    violations, violation_examples = _went_back(reads, by_port)
    latencies = [r.latency for r in reads] + load.write_latencies
    result = {
        "reads": len(reads),
        "writes": len(load.write_latencies),
        "errors": len(load.errors),
        "error_examples": sorted(set(load.errors))[:5],
        "stale_reads": stale,
        "misrouted_reads": misrouted,
        "misrouted_examples": misrouted_examples,
        # A read that showed an older newest row than an earlier read of the
        # same user did: data going back in time between its requests.
        "monotonic_violations": violations,
        "monotonic_examples": violation_examples,
        "stale_reads_by_server": stale_by_server,
        "stale_examples": examples,
        "replica_share": round(on_replica / n, 4),
        "oracle_share": round(oracle / n, 4),
        "share_vs_oracle": round(on_replica / max(1, oracle), 4),
        "oracle_share_at_query": round(oracle_at_query / n, 4),
        "reads_by_server": served,
        "primary_share": round(served["default"] / n, 4),
        # Read the primary although a replica had replayed the user's last
        # write before the SELECT was sent: offload left on the table.
        "primary_reads_a_replica_could_serve": missed,
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "read_p99_ms": round(percentile([r.latency for r in reads], 0.99) * 1000, 1),
        "primary_reads_per_s": round(served["default"] / load.duration, 1),
        "requests_per_s": round(len(latencies) / load.duration, 1),
        # Server processes that answered reads (gunicorn's workers).
        "processes": len({r.pid for r in reads}),
        "duration_s": round(load.duration, 2),
        "replica_b_paused_s": round(pauses.paused_seconds, 2),
        "setup_s": round(marks["load"] - began, 2),
        "teardown_s": round(marks["end"] - marks["load"] - load.duration, 2),
        "position_samples": len(sampler.times),
        "sample_interval_ms": _median_gap_ms(sampler.times),
        **extra,
    }
    if load.errors:
        result["server_log_tail"] = server.tail()
    return result


def _went_back(
    reads: list[Read], by_port: dict[int, str]
) -> tuple[int, list[dict[str, Any]]]:
    """Monotonic-read violations: reads, each user's in the order it sent
    them, that showed an older newest row than one of its earlier reads."""
    seen: dict[int, tuple[int, str]] = {}
    count = 0
    examples: list[dict[str, Any]] = []
    for r in sorted(reads, key=lambda r: (r.user, r.start)):
        best, where = seen.get(r.user, (0, ""))
        answered = by_port.get(r.port, f"port {r.port}")
        if r.newest < best:
            count += 1
            if len(examples) < 5:
                examples.append(
                    {"user": r.user, "saw": best, "on": where, "then": r.newest,
                     "on_then": answered}
                )  # fmt: skip
        else:
            seen[r.user] = (r.newest, answered)
    return count, examples


def _row(
    key: str, cluster: Any, p: dict[str, Any], seed_path: Path, workdir: Path
) -> dict[str, Any]:
    """One configuration's figures; ``na`` if it cannot run here, ``error``
    if it broke (the run goes on with the next one)."""
    spec = CONFIGURATIONS[key]
    head = {"name": spec["name"], "matrix": key in MATRIX}
    reason = unavailable(key)
    if reason is not None:
        return {**head, "na": reason}
    started = time.monotonic()
    try:
        result = _measure(key, cluster, p, seed_path, workdir)
    except Exception as exc:  # reported as a failure of the row
        result = {"error": f"{type(exc).__name__}: {exc}"}
    return {**head, **result, "seconds": round(time.monotonic() - started, 1)}


# ------------------------------------------------------------ run


def _target(kind: str, row: str, passed: bool, text: str, **figures: Any) -> Any:
    """``kind``: ``"hard"`` (a correctness failure), ``"share"`` (an offload
    target, which fails ``--check`` too) or ``"reported"`` (never fails)."""
    return {"kind": kind, "row": row, "pass": passed, "text": text, **figures}


def _verdicts(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    measured = {key: r for key, r in results.items() if "reads" in r}
    targets = {}
    for key in MATRIX:
        if key not in measured:
            continue
        r = measured[key]
        stale, share, oracle = r["stale_reads"], r["replica_share"], r["oracle_share"]
        targets[f"{key}_no_stale_reads"] = _target(
            "hard", key, stale == 0, f"{key}: {stale} stale reads (target 0)",
            value=stale, target=0,
        )  # fmt: skip
        floor = round(0.95 * oracle, 4)
        targets[f"{key}_share_vs_oracle"] = _target(
            "share", key, share >= floor,
            f"{key}: replica share {share:.3f} = {r['share_vs_oracle']:.3f} x oracle"
            f" (target >= 0.95 x {oracle:.3f} = {floor:.3f})",
            value=share, target=floor, ratio=r["share_vs_oracle"],
        )  # fmt: skip
        if "fork_check" in r:
            fork = r["fork_check"]
            targets[f"{key}_fork"] = _target(
                "reported" if fork["pass"] is None else "hard", key, bool(fork["pass"]),
                f"{key}: {fork['workers_seen']} of {fork['workers']} workers answered,"
                f" {fork['probers_running']} probing, {len(fork['shared_backends'])}"
                " prober connections shared (target: all, all, 0)"
                + (" - could not be checked" if fork["pass"] is None else ""),
            )  # fmt: skip
    for key in [*MONOTONIC, *CATCH_UP]:
        if key not in measured:
            continue
        stale = measured[key]["stale_reads"]
        targets[f"{key}_no_stale_reads"] = _target(
            "hard", key, stale == 0, f"{key}: {stale} stale reads (target 0)",
            value=stale, target=0,
        )  # fmt: skip
    for key in MONOTONIC:
        if key in measured:
            back = measured[key]["monotonic_violations"]
            targets[f"{key}_monotonic"] = _target(
                "hard", key, back == 0,
                f"{key}: {back} monotonic-read violations (target 0)",
                value=back, target=0,
            )  # fmt: skip
    if all(key in measured for key in CATCH_UP):
        without, wait = (measured[key] for key in CATCH_UP)
        shares = without["primary_share"], wait["primary_share"]
        p99s = without["read_p99_ms"], wait["read_p99_ms"]
        targets["catch_up_trade_off"] = _target(
            "reported", CATCH_UP[1], shares[1] < shares[0],
            "catch-up wait (50 ms, replicas +20 ms): primary read share"
            f" {shares[0]:.3f} -> {shares[1]:.3f}, read p99 {p99s[0]:.1f} ->"
            f" {p99s[1]:.1f} ms (expected: the share falls, p99 rises)",
            primary_share=shares, read_p99_ms=p99s,
        )  # fmt: skip
    if "a" in measured and "c" in measured:
        a, c = measured["a"]["replica_share"], measured["c"]["replica_share"]
        targets["c_share_vs_a"] = _target(
            "share", "c", abs(c - a) <= C_VS_A,
            f"c: replica share {c:.3f}, row a's {a:.3f}: {c - a:+.3f}"
            f" (target within {C_VS_A})",
            value=c, target=a, difference=round(c - a, 4),
        )  # fmt: skip
    if "a" in measured and BASELINE in measured:
        a, seed = measured["a"]["replica_share"], measured[BASELINE]["replica_share"]
        targets["a_share_vs_seed_15s"] = _target(
            "reported", "a", a > seed,
            f"a: replica share {a:.3f} > the seed's at 15 s, {seed:.3f}",
            value=a, target=seed,
        )  # fmt: skip
    return targets


def _failures(
    results: dict[str, dict[str, Any]], targets: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """What fails ``--check``: ``hard`` (stale or misrouted reads, workers
    sharing prober connections, a matrix row that did not run or read
    nothing) and ``share`` (offload targets)."""
    hard = [t["text"] for t in _of(targets, "hard") if not t["pass"]]
    for key, result in results.items():
        if "error" in result:
            hard.append(f"{key}: did not run: {result['error']}")
        elif result.get("misrouted_reads"):
            hard.append(
                f"{key}: {result['misrouted_reads']} misrouted reads (answered by"
                f" another server than the router's alias)"
            )
        elif result["matrix"] and result.get("reads") == 0:
            hard.append(f"{key}: no reads: every request failed")
    share = [t["text"] for t in _of(targets, "share") if not t["pass"]]
    return {"hard": hard, "share": share}


def _of(targets: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [t for t in targets.values() if t["kind"] == kind]


def run(quick: bool, rows: list[str] | None = None) -> dict[str, Any]:
    """Run the configurations (``selected``) on one fresh cluster; everything
    is removed after."""
    from benchmarks.seed import install_seed
    from multidb.testing.cluster import Cluster

    p = parameters(quick)
    keys = selected(quick, rows)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    seed_path = install_seed().parent
    workdir = Path(tempfile.mkdtemp(prefix="mdb-consistency-"))
    cluster = Cluster(replicas=2)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    try:
        cluster.start()
        cluster.set_apply_delay(cluster.replicas[0], p["replica_a_apply_delay_ms"])
        server_version = cluster.primary.scalar("SHOW server_version").split()[0]
        for key in keys:
            results[key] = _row(key, cluster, p, seed_path, workdir)
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    targets = _verdicts(results)
    failures = _failures(results, targets)
    return {
        "benchmark": "consistency",
        "quick": quick,
        "rows": keys,
        "parameters": p,
        "machine": machine(server_version),
        "configurations": results,
        "targets": targets,
        "wall_seconds": round(time.monotonic() - started, 1),
        "hard_failures": failures["hard"],
        "share_failures": failures["share"],
        "failures": failures["hard"] + failures["share"],
    }


def table(data: dict[str, Any]) -> str:
    p, m = data["parameters"], data["machine"]
    head = (
        f"{'configuration':<26} {'reads':>6} {'stale':>5} {'misrt':>5} {'mono':>5} "
        f"{'replica':>7} {'oracle':>6} {'/orcl':>5} {'@query':>6} {'p50 ms':>6} "
        f"{'p99 ms':>7} {'prim rd/s':>9} {'procs':>5} {'err':>3}"
    )
    lines = [
        f"Consistency: {p['users']} users, {p['load_seconds']:g} s each, "
        f"p(write)={p['write_probability']}, think {p['think_ms'][0]}-"
        f"{p['think_ms'][1]} ms; replica A +{p['replica_a_apply_delay_ms']} ms, "
        f"replica B paused {p['replica_b_pause_for_s']:g} s every "
        f"{p['replica_b_pause_every_s']:g} s",
        f"{machine_line(m)}; package at {m['commit']}",
        "Rows a-g: ours in auto mode (position tokens) under each configuration;"
        " the seed at 15 s is the baseline.  Under uvicorn, except d (gunicorn"
        f" -k gthread, {GUNICORN_THREADS} threads) and g (the same, 2 workers,"
        " --preload).  m: monotonic reads on.  w0, w50: both replicas"
        f" +{p['catch_up_delay_ms']} ms, no pauses, {p['catch_up_users']} users,"
        f" p(write)={p['catch_up_write_probability']:g},"
        f" {p['catch_up_load_seconds']:g} s; w50 with a 50 ms catch-up wait."
        "  o0, o: get_or_create on every page read, pinning on write routing"
        " (o0) or on writes (o).  mono: monotonic-read violations",
        head,
        "-" * len(head),
    ]
    for r in data["configurations"].values():
        if "reads" not in r:
            lines.append(f"{r['name']:<26} {r.get('na') or 'ERROR: ' + r['error']}")
            continue
        lines.append(
            f"{r['name']:<26} {r['reads']:>6} {r['stale_reads']:>5} "
            f"{r['misrouted_reads']:>5} {r['monotonic_violations']:>5} "
            f"{r['replica_share']:>7.3f} "
            f"{r['oracle_share']:>6.3f} {r['share_vs_oracle']:>5.2f} "
            f"{r['oracle_share_at_query']:>6.3f} {r['latency_p50_ms']:>6.1f} "
            f"{r['latency_p99_ms']:>7.1f} {r['primary_reads_per_s']:>9.1f} "
            f"{r['processes']:>5} {r['errors']:>3}"
        )
    ok = {True: "PASS", False: "MISS"}
    tag = {"hard": "hard  ", "share": "share ", "reported": "report"}
    lines.append("Targets (hard: fails --check; share: an offload target, fails"
                 " --check too; report: never fails):")  # fmt: skip
    lines += [
        f"  {ok[t['pass']]} {tag[t['kind']]} {t['text']}"
        for t in data["targets"].values()
    ]
    lines += [
        f"hard failures: {'; '.join(data['hard_failures']) or 'none'}",
        f"offload targets missed: {'; '.join(data['share_failures']) or 'none'}",
        f"wall clock {data['wall_seconds']:.1f} s",
    ]
    return "\n".join(lines)


def measure(quick: bool) -> dict[str, Any]:
    """Section 3 of ``python -m benchmarks``: the quick or the full set of rows."""
    return run(quick)


def print_report(data: dict[str, Any]) -> None:
    print(table(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="the baseline and rows a-c, 10 s each"
    )
    parser.add_argument(
        "--rows",
        type=lambda text: text.split(","),
        help=f"only these, comma-separated, of: {','.join(CONFIGURATIONS)}",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON too")
    args = parser.parse_args(argv)
    load.exit_on_sigterm()
    data = run(args.quick, args.rows)
    print(table(data))
    if args.json:
        print(json.dumps(data, indent=2))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
