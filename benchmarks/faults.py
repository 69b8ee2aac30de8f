"""Faults under load: a real cluster is broken while 50 users use the site.

A real PostgreSQL primary and two streaming replicas on loopback (a cluster
from ``multidb.testing.cluster``) behind the benchmark site (``benchmarks.site``,
``multidb.PinningReplicaRouter``, position pins) under uvicorn (ASGI) or
gunicorn with threads (WSGI, ``-k gthread --threads 8 -w 1``), each in a
process of its own.  Fifty users, all concurrent, each with its own cookie
jar, write a row now and then (and read it back by id) and otherwise read a
page of their own newest rows.  After a baseline, one fault is injected,
left in place, then repaired, while the load goes on:

``replica_killed``    ``pg_ctl stop -m immediate`` on replica A; restarted.
``replica_frozen``    SIGSTOP on replica A's postmaster and backends; SIGCONT.
``replay_paused``     ``pg_wal_replay_pause()`` on replica A; resumed.
``replica_promoted``  ``pg_promote()`` on replica A (a split: two primaries);
                      rebuilt as a replica afterwards.
``primary_stopped``   ``pg_ctl stop -m immediate`` on the primary; restarted.

Every request is recorded: failed (non-2xx or no answer), stale (a user's
read missing that user's own last write), misrouted (the answering server's
port, ``current_setting('port')``, is not the port of the alias the router
chose), and its latency; a monitor polls the site's ``/health/db/`` view.  Each
scenario checks its must-hold list (``CHECKS``); ``tests/postgres/
test_faults.py`` runs the short versions in the test suite.

    .venv/bin/python -m benchmarks.faults [--short] [--scenario NAME]
        [--server uvicorn|gunicorn] [--json]

writes ``benchmarks/results/faults.json`` and, when ``benchmarks.concurrency``
exists, runs ``benchmarks.concurrency.run(full)`` and includes its result.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.common import in_child, machine, machine_line, write_results
from benchmarks.load import (
    ROOT,
    SERVERS,
    Server,
    clients,
    jar,
    percentile,
    reset_table,
)

CONCURRENCY = "benchmarks.concurrency"

SCENARIOS = (
    "replica_killed",
    "replica_frozen",
    "replay_paused",
    "replica_promoted",
    "primary_stopped",
)
#: Run by ``./run.sh faults`` too, to measure what the recommended settings
#: avoid: replicas read through Django's connection pool (Django 5.1+), so a
#: request can get a connection opened before the freeze.
EXTRA_SCENARIOS = ("replica_frozen_pooled",)
#: The pool of the replicas in ``replica_frozen_pooled``.
POOL = {"min_size": 2, "max_size": 16, "timeout": 5}
#: What each scenario must hold (asserted by the tests, reported here).
CHECKS = {
    "replica_killed": "failed reads only those in flight at the kill or sent "
    "within the detection window (interval + timeout), all on the killed "
    "replica; none after it; back in rotation after the restart",
    "replica_frozen": "no request sent after the freeze waits longer than "
    "connect_timeout + margin; the replica leaves the rotation; back after "
    "SIGCONT",
    "replay_paused": "0 stale reads for pinned users; the replica leaves the "
    "rotation once past the lag limit and returns after resume",
    "replica_promoted": "no read answered by it later than one probe "
    "(interval + timeout) after the promotion; no write goes to it",
    "primary_stopped": "writes fail with an OperationalError; unpinned reads "
    "all succeed on the replicas; after the restart writes succeed again, "
    "without restarting the app",
    "replica_frozen_pooled": "not a guarantee, a measurement: with a pool, a "
    "request that gets a connection opened before the freeze waits until "
    "SIGCONT; checked: it leaves the rotation and comes back",
}
#: The site's aliases: ``default`` is the primary; replica A takes the faults.
PRIMARY, REPLICA_A, REPLICA_B = "default", "replica_a", "replica_b"
PIN_COOKIE = "multidb_pin_writes"

#: libpq options for every database of the site: the recommended settings
#: (README, "Reliability").  ``connect_timeout`` bounds a new connection to a
#: frozen server; keepalives and ``tcp_user_timeout`` notice a dead host or
#: a broken network (not a stopped process on a live host, whose kernel
#: still acknowledges); ``statement_timeout`` bounds a slow query on a live
#: replica.  ``CONN_MAX_AGE = 0`` (a new connection per request) keeps a
#: request from inheriting a connection that was open before a freeze.
RECOMMENDED_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
RECOMMENDED_REPLICA_OPTIONS: dict[str, Any] = {"options": "-c statement_timeout=5s"}


def parameters(full: bool) -> dict[str, Any]:
    """The full-size run (``./run.sh faults``) or the short one (the tests)."""
    return {
        "users": 50,
        "think_ms": [300, 700],
        "write_probability": 0.1,
        "rows_per_user_at_start": 5,
        "pin_seconds": 15,
        "health_check_interval_s": 1.0,
        "health_check_timeout_s": 1.0,
        "connect_timeout_s": RECOMMENDED_OPTIONS["connect_timeout"],
        "conn_max_age": 0,
        # Lag limit for replay_paused: well under the pause.
        "max_lag_s": 5.0 if full else 1.0,
        "baseline_s": 8.0 if full else 1.0,
        # How long each fault stays in place before the repair.
        "fault_s": {
            "replica_killed": 20.0 if full else 2.5,
            "replica_frozen": 20.0 if full else 3.5,
            "replica_frozen_pooled": 20.0 if full else 3.5,
            "replay_paused": 20.0 if full else 3.0,
            "replica_promoted": 20.0 if full else 2.5,
            "primary_stopped": 20.0 if full else 2.5,
        },
        "recovery_s": 8.0 if full else 2.5,
        # Longer than a freeze, so requests stuck on it are seen to end.
        "request_timeout_s": 40.0 if full else 15.0,
        # Slack for a loaded 2-CPU machine in the timing checks.
        "margin_s": 1.0,
        "monitor_every_s": 0.1,
        "max_requests_per_user": 20_000,
    }


# ------------------------------------------------------------ the load


@dataclass
class Sample:
    """One request: what was sent, when, and what came back."""

    user: int
    kind: str  # "read" or "write"
    start: float  # time.monotonic() when sent
    end: float
    #: HTTP status, or None when no response came (timeout, reset).
    status: int | None
    #: The answering server's port and the alias the router chose (for a
    #: failure: the alias of the connection it failed on, when known).
    port: int | None
    claim: str | None
    #: Whether the user's last write was there (None: never wrote, or failed).
    visible: bool | None
    #: The live pin cookie the request carried: ``"token"`` (a position),
    #: ``"time"`` (a time pin, e.g. after a write whose position could not be
    #: read), or None.
    pin: str | None
    error: str | None

    @property
    def pinned(self) -> bool:
        return self.pin is not None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def latency(self) -> float:
        return self.end - self.start


def _time_pin(cookie: str) -> bool:
    """Whether a pin cookie pins by time: the legacy ``y``, or a signed token
    without a position (``tokens.sign_time()``: the payload ``default:``)."""
    return cookie == "y" or cookie.startswith("default::")


async def _send(
    client: Any,
    user: int,
    kind: str,
    method: str,
    url: str,
    samples: list[Sample],
    last_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """One request, recorded; its JSON body when it succeeded."""
    import httpx

    cookies = jar(client)
    # httpx copies the jar for each request into a plain CookieJar, which
    # judges expiry in whole seconds: drop expired cookies first, precisely.
    cookies.clear_expired_cookies()
    cookie = cookies.live(PIN_COOKIE)
    pin = None if cookie is None else "time" if _time_pin(cookie) else "token"
    start = time.monotonic()
    status = port = claim = error = None
    body: dict[str, Any] | None = None
    visible = None
    try:
        response = await client.request(method, url, data=data)
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            port, claim = body.get("port"), body.get("claim") or body.get("alias")
            error = body.get("error")
            if kind == "read" and status == 200 and last_id is not None:
                visible = body["found"] if "found" in body else last_id in body["ids"]
        if status >= 300 and error is None:
            error = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    samples.append(
        Sample(
            user,
            kind,
            start,
            time.monotonic(),
            status,
            port,
            claim,
            visible,
            pin,
            error,
        )
    )
    return body if status is not None and 200 <= status < 300 else None


async def _user(
    client: Any,
    user: int,
    p: dict[str, Any],
    clock: dict[str, float],
    samples: list[Sample],
) -> None:
    rng = random.Random(user)
    last_id: int | None = None
    low, high = (ms / 1000 for ms in p["think_ms"])
    for _ in range(p["max_requests_per_user"]):
        await asyncio.sleep(rng.uniform(low, high))
        if time.monotonic() >= clock["deadline"]:
            return
        if rng.random() < p["write_probability"]:
            body = await _send(
                client,
                user,
                "write",
                "POST",
                "/rows/",
                samples,
                data={"owner": user},
            )
            if body is not None:
                last_id = body["id"]
                await _send(
                    client, user, "read", "GET", f"/rows/{last_id}/", samples, last_id
                )
        else:
            await _send(
                client, user, "read", "GET", f"/rows/?owner={user}", samples, last_id
            )


async def _monitor(
    client: Any, every: float, clock: dict[str, float], seen: list[dict[str, Any]]
) -> None:
    """Poll ``/health/db/``: the app's own view of each database, in time."""
    import httpx

    for _ in range(100_000):
        if time.monotonic() >= clock["deadline"]:
            return
        sent = time.monotonic()
        try:
            body = (await client.get("/health/db/")).json()
            statuses = [body["primary"], *body["replicas"]]
            # Stamped on arrival: the state held at the latest by then.
            seen.append(
                {
                    "at": time.monotonic(),
                    "sent": sent,
                    "states": {x["alias"]: x["state"] for x in statuses},
                    # When the app decided it (a probe, or a failed request).
                    "decided": {
                        x["alias"]: _monotonic(x["last_checked"]) for x in statuses
                    },
                    "reasons": {x["alias"]: x["reason"] for x in statuses},
                }
            )
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        await asyncio.sleep(max(0.0, every - (time.monotonic() - sent)))


def _monotonic(iso: str | None) -> float | None:
    """A wall-clock ISO timestamp of this machine on the monotonic clock."""
    if iso is None:
        return None
    from datetime import datetime

    ago = time.time() - datetime.fromisoformat(iso).timestamp()
    return time.monotonic() - ago


async def _wait_probed(client: Any, timeout: float) -> None:
    """Until the site's prober has seen every database ``ok``."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = (await client.get("/health/db/")).json()
            if body["primary"]["state"] == "ok" and all(
                r["state"] == "ok" for r in body["replicas"]
            ):
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the site's prober did not see every database ok in {timeout}s")


async def _drive(
    url: str,
    p: dict[str, Any],
    fault_s: float,
    inject: Callable[[], Any],
    repair: Callable[[], Any],
) -> tuple[list[Sample], list[dict[str, Any]], dict[str, float]]:
    """Load, then the fault (``inject`` in a thread), then ``repair``, then
    more load; the requests, the monitor's samples and the marks."""
    import httpx

    samples: list[Sample] = []
    seen: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    users = clients(url, p["users"], p["request_timeout_s"])
    watcher = httpx.AsyncClient(base_url=url, timeout=5.0, trust_env=False)
    marks["begin"] = time.monotonic()
    try:
        # Warm-up, not measured: imports, first connections, the prober.
        await asyncio.gather(*(c.get(f"/rows/?owner={u}") for u, c in enumerate(users)))
        await _wait_probed(watcher, 15)
        # Users stop at the deadline, set once the repair is done.
        budget = (
            p["baseline_s"] + fault_s + p["recovery_s"] + 120 + p["request_timeout_s"]
        )
        clock = {"deadline": time.monotonic() + budget}
        marks["load"] = time.monotonic()
        load = [
            asyncio.ensure_future(_user(c, u, p, clock, samples))
            for u, c in enumerate(users)
        ]
        monitor = asyncio.ensure_future(
            _monitor(watcher, p["monitor_every_s"], clock, seen)
        )
        try:
            await asyncio.sleep(p["baseline_s"])
            marks["fault"] = time.monotonic()
            await asyncio.to_thread(inject)
            marks["fault_done"] = time.monotonic()
            await asyncio.sleep(fault_s)
            marks["repair"] = time.monotonic()
            await asyncio.to_thread(repair)
            marks["repair_done"] = time.monotonic()
            clock["deadline"] = marks["repair_done"] + p["recovery_s"]
            await asyncio.wait_for(
                asyncio.gather(*load, monitor),
                p["recovery_s"] + p["request_timeout_s"] + 10,
            )
        finally:
            clock["deadline"] = 0.0
            for task in (*load, monitor):
                task.cancel()
            await asyncio.gather(*load, monitor, return_exceptions=True)
        marks["end"] = time.monotonic()
    finally:
        await asyncio.gather(
            *(c.aclose() for c in [*users, watcher]), return_exceptions=True
        )
    return samples, seen, marks


# ------------------------------------------------------------ one scenario


def _faults(cluster: Any, scenario: str) -> tuple[Any, Callable[[], Any], Any]:
    """The node a scenario breaks, how to break it, and how to repair it."""
    replica = cluster.replicas[0]
    if scenario == "replica_killed":
        return replica, lambda: cluster.stop_node(replica), cluster.start_node
    if scenario in ("replica_frozen", "replica_frozen_pooled"):
        return replica, lambda: cluster.freeze(replica), cluster.thaw
    if scenario == "replay_paused":
        return replica, lambda: cluster.pause_replay(replica), cluster.resume_replay
    if scenario == "replica_promoted":
        return replica, lambda: cluster.promote(replica), cluster.rebuild_replica
    if scenario == "primary_stopped":
        primary = cluster.primary
        return primary, lambda: cluster.stop_node(primary), cluster.start_node
    raise ValueError(f"unknown scenario {scenario!r}; one of {SCENARIOS}")


def site_settings(
    cluster: Any, p: dict[str, Any], scenario: str = ""
) -> dict[str, Any]:
    """``MULTIDB_BENCH_SITE`` for the site in front of ``cluster``."""
    primary, replica_a, replica_b = cluster.nodes
    replica_options = dict(RECOMMENDED_REPLICA_OPTIONS)
    if scenario == "replica_frozen_pooled":
        replica_options["pool"] = POOL
    return {
        "router": "ours",
        "mode": "auto",
        "pin_seconds": p["pin_seconds"],
        "ports": {
            PRIMARY: primary.port,
            REPLICA_A: replica_a.port,
            REPLICA_B: replica_b.port,
        },
        "health_interval": p["health_check_interval_s"],
        "health_timeout": p["health_check_timeout_s"],
        "max_lag": p["max_lag_s"],
        "conn_max_age": p["conn_max_age"],
        "options": {**RECOMMENDED_OPTIONS, "connect_timeout": p["connect_timeout_s"]},
        "replica_options": replica_options,
    }


def ensure_healthy(cluster: Any) -> None:
    """Put a cluster that an earlier scenario broke back, if it is not."""
    for node in cluster.nodes:
        if node.frozen:
            cluster.thaw(node)
        if not node.running:
            cluster.start_node(node)
    for node in cluster.replicas:
        if node.role != "replica":
            cluster.rebuild_replica(node)
        elif node.paused:
            cluster.resume_replay(node)
    cluster.wait_caught_up(timeout=15)


def run_scenario(
    cluster: Any,
    scenario: str,
    server_kind: str,
    p: dict[str, Any],
    workdir: Path,
) -> dict[str, Any]:
    """One scenario under one server, on a running ``cluster`` (put back as
    it was afterwards); its figures and its must-hold checks."""
    from benchmarks.site import TABLE

    ensure_healthy(cluster)
    node, inject, repair_node = _faults(cluster, scenario)
    server = Server.of_site(
        site_settings(cluster, p, scenario),
        None,
        workdir / f"{scenario}-{server_kind}.log",
        server_kind,
    )
    counts: dict[str, int] = {}

    def count_rows(key: str) -> None:
        if scenario == "replica_promoted":
            counts[key] = int(node.scalar(f"SELECT count(*) FROM {TABLE}"))

    def fault() -> None:
        inject()
        count_rows("after_promotion")

    def repair() -> None:
        count_rows("before_rebuild")
        repair_node(node)

    timings = {"begin": time.monotonic()}
    try:
        server.spawn()  # Django starts up while the table is made
        reset_table(cluster, p["users"], p["rows_per_user_at_start"])
        server.wait_ready()
        timings["ready"] = time.monotonic()
        samples, seen, marks = asyncio.run(
            _drive(server.url, p, p["fault_s"][scenario], fault, repair)
        )
    finally:
        timings["stop"] = time.monotonic()
        server.stop()
        ensure_healthy(cluster)
        timings["end"] = time.monotonic()
    site = site_settings(cluster, p, scenario)
    result = analyse(scenario, samples, seen, marks, site, p)
    result["server"] = server_kind
    result["setup_s"] = round(timings["ready"] - timings["begin"], 2)
    result["warmup_s"] = round(marks["load"] - marks["begin"], 2)
    result["teardown_s"] = round(timings["end"] - timings["stop"], 2)
    if counts:
        result["rows_on_promoted_node"] = counts
        written = counts["before_rebuild"] - counts["after_promotion"]
        result["writes_on_promoted_node"] = written
        result["checks"]["no write went to the promoted node"] = {
            "pass": written == 0 and result["writes_answered_by_target"] == 0,
            "value": written + result["writes_answered_by_target"],
        }
    result["pass"] = all(c["pass"] for c in result["checks"].values())
    if not result["pass"] or result["failed"]:
        result["server_log_tail"] = server.tail(25)
    return result


# ------------------------------------------------------------ the figures


def _first(times: list[float]) -> float | None:
    return min(times) if times else None


def _last(times: list[float]) -> float | None:
    return max(times) if times else None


def _since(t: float | None, mark: float) -> float | None:
    return None if t is None else round(t - mark, 3)


def analyse(
    scenario: str,
    samples: list[Sample],
    seen: list[dict[str, Any]],
    marks: dict[str, float],
    site: dict[str, Any],
    p: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one run, and its must-hold checks (``CHECKS``)."""
    ports: dict[str, int] = site["ports"]
    target = PRIMARY if scenario == "primary_stopped" else REPLICA_A
    target_port = ports[target]
    fault, fault_done = marks["fault"], marks["fault_done"]
    repair, repair_done = marks["repair"], marks["repair_done"]
    interval, timeout = p["health_check_interval_s"], p["health_check_timeout_s"]
    margin, connect = p["margin_s"], p["connect_timeout_s"]
    detection = interval + timeout
    slow_bound = connect + margin

    failed = [s for s in samples if not s.ok]
    stale = [s for s in samples if s.visible is False]
    misrouted = [
        s
        for s in samples
        if s.ok and s.port is not None and ports.get(s.claim or "") != s.port
    ]
    reads = [s for s in samples if s.kind == "read"]
    writes = [s for s in samples if s.kind == "write"]
    on_target = [s for s in reads if s.ok and s.port == target_port]
    # In flight at the fault: sent before it was in place, answered after
    # it began.
    in_flight = [s for s in samples if s.start < fault_done and s.end > fault]
    during = [s for s in samples if fault_done <= s.start < repair]
    # A failed request's answer comes after the app has heard of the failure
    # (``got_request_exception`` runs before the response is sent).
    first_failure = _first([s.end for s in failed if s.start >= fault])
    informed = max(fault_done, first_failure or fault_done)

    # The app's own view (/health/db/): when the target left, and came back.
    def state_at(x: dict[str, Any]) -> str:
        return str(x["states"].get(target))

    out = [x for x in seen if x["sent"] >= fault and state_at(x) != "ok"]
    left = _first([x["at"] for x in out])
    # When the app took it out (the status's own time), and why.
    decided = _first([x["decided"][target] for x in out if x["decided"][target]])
    why = sorted({x["reasons"][target].split(":")[0] for x in out})
    states_seen = sorted({state_at(x) for x in seen if fault <= x["sent"] < repair})
    back_seen = _first(
        [x["at"] for x in seen if x["sent"] >= repair_done and state_at(x) == "ok"]
    )
    if target == PRIMARY:
        back = _first([s.start for s in writes if s.ok and s.start >= repair_done])
    else:
        back = _first([s.start for s in on_target if s.start >= repair_done])
    latencies = [s.latency for s in samples]
    result: dict[str, Any] = {
        "scenario": scenario,
        "target": target,
        "sent": len(samples),
        "reads": len(reads),
        "writes": len(writes),
        "failed": len(failed),
        "failed_reads": sum(s.kind == "read" for s in failed),
        "failed_writes": sum(s.kind == "write" for s in failed),
        "failed_by_pin": {
            pin or "none": sum(s.pin == pin for s in failed if s.kind == "read")
            for pin in (None, "token", "time")
        },
        "stale_reads": len(stale),
        "stale_pinned_reads": sum(s.pinned for s in stale),
        "misrouted": len(misrouted),
        "in_flight_at_fault": len(in_flight),
        "in_flight_on_target": sum(
            s.port == target_port or s.claim == target for s in in_flight
        ),
        "failed_in_flight": sum(not s.ok for s in in_flight),
        "failed_sent_after_fault": sum(
            not s.ok for s in samples if s.start >= fault_done
        ),
        "errors_by_kind": _error_kinds(failed),
        # Up to 10 failures, unpinned reads first: when (seconds from the
        # fault's start), what, and why.
        "failure_examples": [
            {
                "sent_s": round(s.start - fault, 3),
                "answered_s": round(s.end - fault, 3),
                "kind": s.kind,
                "pin": s.pin,
                "alias": s.claim,
                "error": s.error,
            }
            for s in sorted(failed, key=lambda s: (s.kind, s.pinned, s.start))[:10]
        ],
        "error_examples": sorted({s.error or "" for s in failed})[:5],
        "target_states_seen": states_seen,
        # Every database's states from the fault to the repair, with why.
        "states_during_fault": {
            alias: sorted(
                {
                    f"{x['states'][alias]}: {x['reasons'][alias]}"
                    if x["reasons"].get(alias)
                    else str(x["states"][alias])
                    for x in seen
                    if fault <= x["sent"] < repair and alias in x["states"]
                }
            )[:6]
            for alias in ports
        },
        # Seconds from the fault's start until the app's health view showed
        # the target not ok; from the repair until a read was answered by
        # it again (the primary: until a write succeeded); from the fault's
        # start until the last failed request ended.
        "out_s": _since(decided if decided is not None else left, fault),
        "out_seen_s": _since(left, fault),
        "out_reasons": why,
        "back_s": _since(back, repair_done),
        "back_seen_s": _since(back_seen, repair_done),
        "errors_until_s": _since(_last([s.end for s in failed]), fault),
        "first_failure_s": _since(first_failure, fault),
        "last_target_read_s": _since(
            _last([s.end for s in on_target if fault_done <= s.start < repair]),
            fault_done,
        ),
        # The slowest request sent while the fault was in place, and the
        # slowest of those in flight when it began.
        "max_wait_s": round(max([s.latency for s in during] or [0.0]), 3),
        "max_wait_in_flight_s": round(max([s.latency for s in in_flight] or [0.0]), 3),
        # Requests that took longer than connect_timeout + margin.
        "hung": sum(s.latency > slow_bound for s in samples),
        "writes_answered_by_target": 0
        if target == PRIMARY
        else sum(s.ok and s.port == target_port for s in writes),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "requests_per_s": round(
            len(samples) / max(1e-9, marks["end"] - marks["load"]), 1
        ),
        "injection_s": round(fault_done - fault, 3),
        "repair_s": round(repair_done - repair, 3),
        "fault_in_place_s": round(repair - fault_done, 2),
        "load_s": round(marks["end"] - marks["load"], 2),
        "health_samples": len(seen),
        "during_fault": {
            "sent": len(during),
            "failed": sum(not s.ok for s in during),
            "answered_by_target": sum(s.ok and s.port == target_port for s in during),
        },
    }
    checks: dict[str, dict[str, Any]] = {}
    out_s = result["out_s"]

    def check(name: str, passed: bool, value: Any, bound: Any = None) -> None:
        checks[name] = {"pass": bool(passed), "value": value}
        if bound is not None:
            checks[name]["bound"] = bound

    check("no misrouted read or write", not misrouted, len(misrouted))
    check(
        "no stale read for a pinned user",
        result["stale_pinned_reads"] == 0,
        result["stale_pinned_reads"],
    )

    def only_reads_on_target() -> None:
        elsewhere = [s for s in failed if s.claim != target or s.kind != "read"]
        check(f"every failure is a read on {target}", not elsewhere, len(elsewhere))

    def none_after(name: str, until: float, bound: str) -> None:
        late = [s for s in failed if s.start >= until]
        check(name, not late, len(late), bound)

    def back_within(bound: float) -> None:
        value = _since(back, repair_done)
        check(
            "back after the repair",
            value is not None and value <= bound,
            value,
            f"<= {bound:g} s",
        )

    if scenario == "replica_killed":
        only_reads_on_target()
        none_after(
            "failed reads: only those in flight at the kill or racing the first"
            " failure's report",
            informed,
            "sent before the kill was done or the first failure answered",
        )
        none_after(
            "no failure sent after the detection window",
            fault_done + detection,
            f"sent < kill + {detection:g} s",
        )
        check("the app saw it down", "down" in states_seen, states_seen)
        back_within(detection + margin)
    elif scenario in ("replica_frozen", "replica_frozen_pooled"):
        slow = [s for s in during if s.latency > slow_bound]
        if scenario == "replica_frozen":
            check(
                "no request sent after the freeze waits past connect_timeout",
                not slow,
                result["max_wait_s"],
                f"<= {slow_bound:g} s",
            )
        only_reads_on_target()
        none_after(
            "no failure sent after the detection window",
            fault_done + detection + margin,
            f"sent < freeze + {detection + margin:g} s",
        )
        if scenario == "replica_frozen":
            # (With the pool, every gunicorn thread can be stuck on it, and
            # then not even /health/db/ answers to say when it left.)
            check(
                "it leaves the rotation",
                out_s is not None and out_s <= detection + margin,
                out_s,
                f"<= {detection + margin:g} s",
            )
        back_within(detection + margin)
    elif scenario == "replay_paused":
        max_lag = p["max_lag_s"]
        low, high = max_lag - interval, max_lag + detection + margin
        check(
            "it leaves the rotation once past the lag limit",
            out_s is not None and low <= out_s <= high and "lagging" in states_seen,
            result["out_s"],
            f"{low:g}..{high:g} s, lagging",
        )
        late_reads = [s for s in on_target if fault + high <= s.start < repair]
        check("no read on it once out of rotation", not late_reads, len(late_reads))
        check("no failure", not failed, len(failed))
        back_within(detection + margin)
    elif scenario == "replica_promoted":
        bound = interval + margin
        last = result["last_target_read_s"]
        check(
            "no read answered by it later than one probe interval after the promotion",
            last is None or last <= bound,
            last,
            f"<= {bound:g} s",
        )
        check("the app saw it promoted", "promoted" in states_seen, states_seen)
        split = [s for s in failed if fault <= s.start < repair]
        check("no failure during the split", not split, len(split))
    elif scenario == "primary_stopped":
        # Answered before the restart began: a write sent just before it may
        # wait in the server's queue and run on the restarted primary.
        down_writes = [s for s in writes if fault_done <= s.start and s.end < repair]
        # Django's database errors: refused connections, and connections that
        # died in use ("connection already closed").
        unclear = [
            s
            for s in failed
            if s.kind == "write"
            and not (s.error or "").startswith(("OperationalError", "InterfaceError"))
        ]
        check(
            "writes fail while it is down",
            bool(down_writes) and not any(s.ok for s in down_writes),
            len(down_writes),
        )
        check(
            "every failed write is a database error",
            not unclear,
            sorted({s.error or "?" for s in unclear})[:5],
        )
        unpinned = [s for s in reads if not s.pinned and not s.ok]
        check("every unpinned read succeeds", not unpinned, len(unpinned))
        none_after("no failure after the restart", repair_done, "sent < restart")
        back_within(margin)
    result["checks"] = checks
    return result


def _error_kinds(failed: list[Sample]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in failed:
        key = f"{s.kind} {s.claim or '?'}: {(s.error or '').split(':')[0]}"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


# ------------------------------------------------------------ run


def run_concurrency(full: bool) -> dict[str, Any]:
    """``benchmarks.concurrency.run(full)``, if that module exists."""
    if importlib.util.find_spec(CONCURRENCY) is None:
        return {"available": False}
    started = time.monotonic()
    try:
        data = in_child(CONCURRENCY, "run", full)
    except Exception as exc:  # reported as a failure
        return {
            "available": True,
            "error": f"{type(exc).__name__}: {exc}",
            "seconds": round(time.monotonic() - started, 1),
        }
    if not isinstance(data, dict):
        data = {"result": data}
    data.setdefault("available", True)
    data["seconds"] = round(time.monotonic() - started, 1)
    return data


def run(
    full: bool = True,
    scenarios: tuple[str, ...] | None = None,
    servers: tuple[str, ...] = SERVERS,
    concurrency: bool = True,
) -> dict[str, Any]:
    """Every scenario (the full run: and ``EXTRA_SCENARIOS``) under every
    server, on one cluster, removed afterwards."""
    from multidb.testing.cluster import Cluster

    p = parameters(full)
    if scenarios is None:
        scenarios = SCENARIOS + EXTRA_SCENARIOS if full else SCENARIOS
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="mdb-faults-"))
    cluster = Cluster(replicas=2)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    server_version = ""
    try:
        cluster.start()
        server_version = cluster.primary.scalar("SHOW server_version").split()[0]
        for scenario in scenarios:
            for kind in servers:
                name = f"{scenario}/{kind}"
                print(f"  {name} ...", file=sys.stderr, flush=True)
                try:
                    results[name] = run_scenario(cluster, scenario, kind, p, workdir)
                except Exception as exc:  # reported, the run goes on
                    results[name] = {
                        "scenario": scenario,
                        "server": kind,
                        "pass": False,
                        "error": f"{type(exc).__name__}: {exc}",
                        "checks": {},
                    }
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    failures = []
    for name, result in results.items():
        if "error" in result:
            failures.append(f"{name}: did not run: {result['error']}")
        for check, outcome in result["checks"].items():
            if not outcome["pass"]:
                failures.append(f"{name}: {check} (got {outcome['value']})")
    data: dict[str, Any] = {
        "benchmark": "faults",
        "full": full,
        "parameters": p,
        "recommended_options": {
            "all": RECOMMENDED_OPTIONS,
            "replicas": RECOMMENDED_REPLICA_OPTIONS,
            "CONN_MAX_AGE": p["conn_max_age"],
        },
        "must_hold": CHECKS,
        "machine": machine(server_version),
        "scenarios": results,
        "wall_seconds": round(time.monotonic() - started, 1),
        "failures": failures,
    }
    if concurrency:
        data["concurrency"] = run_concurrency(full)
        if data["concurrency"].get("error"):
            failures.append(f"concurrency: {data['concurrency']['error']}")
        theirs = [str(f) for f in data["concurrency"].get("failures") or []]
        failures.extend(f"concurrency: {f}" for f in theirs[:3])
        if len(theirs) > 3:
            failures.append(f"concurrency: {len(theirs) - 3} more (see faults.json)")
    return data


def _cell(value: Any, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.2f}"
    return f"{value:>{width}}"


def table(data: dict[str, Any]) -> str:
    p, m = data["parameters"], data["machine"]
    head = (
        f"{'scenario':<21} {'server':<8} {'sent':>5} {'failed':>6} {'stale':>5} "
        f"{'misrt':>5} {'inflt':>5} {'out s':>5} {'err s':>5} {'back s':>6} "
        f"{'max wait':>8} {'hung':>4} {'must hold':>9}"
    )
    lines = [
        f"Faults under load: {p['users']} users, think {p['think_ms'][0]}-"
        f"{p['think_ms'][1]} ms, p(write)={p['write_probability']}; "
        f"{p['baseline_s']:g} s baseline, faults held "
        f"{max(p['fault_s'].values()):g} s, {p['recovery_s']:g} s after repair",
        f"probe every {p['health_check_interval_s']:g} s (timeout "
        f"{p['health_check_timeout_s']:g} s), connect_timeout "
        f"{p['connect_timeout_s']} s, CONN_MAX_AGE {p['conn_max_age']}, "
        f"max lag {p['max_lag_s']:g} s (replay_paused)",
        f"{machine_line(m)} (gthread, 8 threads, 1 worker)",
        head,
        "-" * len(head),
    ]
    for r in data["scenarios"].values():
        if "error" in r:
            lines.append(f"{r['scenario']:<21} {r['server']:<8} ERROR {r['error']}")
            continue
        lines.append(
            f"{r['scenario']:<21} {r['server']:<8} {r['sent']:>5} "
            f"{r['failed']:>6} {r['stale_reads']:>5} {r['misrouted']:>5} "
            f"{r['in_flight_on_target']:>5} {_cell(r['out_s'], 5)} "
            f"{_cell(r['errors_until_s'], 5)} {_cell(r['back_s'], 6)} "
            f"{_cell(r['max_wait_s'], 8)} {r['hung']:>4} "
            f"{'PASS' if r['pass'] else 'FAIL':>9}"
        )
    lines += [
        "inflt: requests in flight on the faulted server when the fault began;"
        " out s: fault -> the app's",
        "health view shows it not ok; err s: fault -> last failed request"
        " answered; back s: repair -> first",
        "read answered by it (primary: first successful write); max wait: slowest"
        " request sent while the",
        f"fault was in place; hung: requests slower than connect_timeout +"
        f" {p['margin_s']:g} s",
    ]
    concurrency = data.get("concurrency")
    if concurrency is not None:
        if not concurrency.get("available"):
            lines.append("concurrency: benchmarks.concurrency not available")
        else:
            lines.append(_concurrency_table(concurrency))
    lines.append(
        f"wall clock {data['wall_seconds']:.1f} s; failures: "
        + ("; ".join(data["failures"]) or "none")
    )
    return "\n".join(lines)


def _concurrency_table(data: dict[str, Any]) -> str:
    """``benchmarks.concurrency.table(data)``; a plain listing without it."""
    if "error" not in data:
        try:
            text: str = importlib.import_module(CONCURRENCY).table(data)
            return text
        except Exception:  # no table of its own: a plain listing
            pass
    shown = {
        k: v
        for k, v in data.items()
        if not isinstance(v, (dict, list)) and k != "available"
    }
    return f"concurrency: {json.dumps(shown, default=str)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--short",
        "--quick",
        action="store_true",
        help="the short versions (as in the tests)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS + EXTRA_SCENARIOS,
        help="only these",
    )
    parser.add_argument("--server", action="append", choices=SERVERS, help="only these")
    parser.add_argument(
        "--no-concurrency",
        action="store_true",
        help="skip benchmarks.concurrency even if it exists",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON too")
    args = parser.parse_args(argv)
    load.exit_on_sigterm()
    data = run(
        full=not args.short,
        scenarios=tuple(args.scenario) if args.scenario else None,
        servers=tuple(args.server or SERVERS),
        concurrency=not args.no_concurrency,
    )
    print(table(data))
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    print(f"Results: {write_results('faults.json', data)}")
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
