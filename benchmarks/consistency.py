"""Offload against consistency: stale reads and replica share on a real cluster.

A real PostgreSQL primary and two streaming replicas on loopback: replica A
applies WAL 200 ms late (``recovery_min_apply_delay``), replica B pauses
replay in bursts.  N users, all concurrent, drive a Django site
(``benchmarks.site``, sync views, ASGI under uvicorn in its own process)
over HTTP, each with its own cookie jar: with probability p a user writes a
row and reads it back by id, otherwise it reads a page of its own newest
rows.  Every read is checked for the user's last write (a *stale read* if
missing) and reports the server that answered it.  Four configurations run
one after the other on the same cluster, each with a fresh table: the seed
(django-multidb-router 0.11) with 15 s and 1 s pins, ours pinning by time
(15 s) and ours pinning by position (``auto``).

The *oracle share* is the physical ceiling: the fraction of reads for which
some replica had already replayed that user's last write when the read
started, judged from both replicas' replay positions sampled every few ms.

    .venv/bin/python -m benchmarks.consistency [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import load
from benchmarks.load import (  # noqa: F401 - PreciseCookieJar: kept importable here
    ROOT,
    PreciseCookieJar,
    Server,
    percentile,
    reset_table,
)
from benchmarks.load import clients as make_clients

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "seed, 15 s pins": {"router": "seed", "pin_seconds": 15},
    "seed, 1 s pins": {"router": "seed", "pin_seconds": 1},
    "ours, time (15 s)": {"router": "ours", "mode": "time", "pin_seconds": 15},
    "ours, auto (position)": {"router": "ours", "mode": "auto", "pin_seconds": 15},
}
SEED_15, SEED_1, OURS_TIME, OURS_AUTO = CONFIGURATIONS


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
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
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
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
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
        load.reads.append(
            Read(
                start, body["at"], latency, body["port"], body["claim"], visible, token
            )
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


def _measure(
    name: str,
    cluster: Any,
    p: dict[str, Any],
    seed_path: Path,
    workdir: Path,
) -> dict[str, Any]:
    began = time.monotonic()
    marks: dict[str, float] = {}
    spec = CONFIGURATIONS[name]
    primary, replica_a, replica_b = cluster.nodes
    ports = {"default": primary.port, "replica_a": replica_a.port}
    ports["replica_b"] = replica_b.port
    site = {**spec, "ports": ports, "health_interval": p["health_check_interval_s"]}
    reset_table(cluster, p["users"], p["rows_per_user_at_start"])
    seed = seed_path if spec["router"] == "seed" else None
    server = Server(site, seed, workdir / f"uvicorn-{spec['router']}.log")
    sampler = Sampler([replica_a.dsn(), replica_b.dsn()], p["sample_every_ms"] / 1000)
    pauses = PauseCycle(
        cluster, replica_b, p["replica_b_pause_every_s"], p["replica_b_pause_for_s"]
    )

    def on_start() -> None:
        marks["load"] = time.monotonic()
        pauses.start()

    try:
        server.start()
        sampler.start()
        load = asyncio.run(_drive(server.url, p, on_start))
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
    latencies = [r.latency for r in reads] + load.write_latencies
    result = {
        "reads": len(reads),
        "writes": len(load.write_latencies),
        "errors": len(load.errors),
        "error_examples": sorted(set(load.errors))[:5],
        "stale_reads": stale,
        "misrouted_reads": misrouted,
        "misrouted_examples": misrouted_examples,
        "stale_reads_by_server": stale_by_server,
        "stale_examples": examples,
        "replica_share": round(on_replica / n, 4),
        "oracle_share": round(oracle / n, 4),
        "oracle_share_at_query": round(oracle_at_query / n, 4),
        "reads_by_server": served,
        # Read the primary although a replica had replayed the user's last
        # write before the SELECT was sent: offload left on the table.
        "primary_reads_a_replica_could_serve": missed,
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "primary_reads_per_s": round(served["default"] / load.duration, 1),
        "requests_per_s": round(len(latencies) / load.duration, 1),
        "duration_s": round(load.duration, 2),
        "replica_b_paused_s": round(pauses.paused_seconds, 2),
        "setup_s": round(marks["load"] - began, 2),
        "teardown_s": round(marks["end"] - marks["load"] - load.duration, 2),
        "position_samples": len(sampler.times),
        "sample_interval_ms": _median_gap_ms(sampler.times),
    }
    if load.errors:
        result["server_log_tail"] = server.tail()
    return result


# ------------------------------------------------------------ run


def _verdicts(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours, seed = results[OURS_AUTO], results[SEED_15]
    ceiling = round(0.95 * ours["oracle_share"], 4)
    return {
        "ours_auto_no_stale_reads": {
            "pass": ours["stale_reads"] == 0, "value": ours["stale_reads"],
        },
        "ours_auto_share_vs_oracle": {
            "pass": ours["replica_share"] >= ceiling,
            "value": ours["replica_share"], "target": ceiling,
            "ratio": round(ours["replica_share"] / max(1e-9, ours["oracle_share"]), 4),
        },
        "ours_auto_share_vs_seed_15s": {
            "pass": ours["replica_share"] > seed["replica_share"],
            "value": ours["replica_share"], "target": seed["replica_share"],
        },
    }  # fmt: skip


def run(quick: bool) -> dict[str, Any]:
    """Run every configuration on one fresh cluster; everything is removed after."""
    from benchmarks.seed import install_seed
    from tests.cluster import Cluster

    p = parameters(quick)
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
        for name in CONFIGURATIONS:
            results[name] = _measure(name, cluster, p, seed_path, workdir)
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    failures = []
    ours = results[OURS_AUTO]
    if ours["stale_reads"]:
        failures.append(
            f"{OURS_AUTO}: {ours['stale_reads']} stale reads of {ours['reads']}"
        )
    for name, result in results.items():
        if result["misrouted_reads"]:
            failures.append(
                f"{name}: {result['misrouted_reads']} reads answered by another "
                f"server than the router's alias"
            )
    return {
        "benchmark": "consistency",
        "quick": quick,
        "parameters": p,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "django": version("django"),
            "psycopg": version("psycopg"),
            "uvicorn": version("uvicorn"),
            "httpx": version("httpx"),
            "postgresql": server_version,
            "platform": platform.platform(),
        },
        "configurations": results,
        "targets": _verdicts(results),
        "wall_seconds": round(time.monotonic() - started, 1),
        "failures": failures,
    }


def table(data: dict[str, Any]) -> str:
    p, m = data["parameters"], data["machine"]
    head = (
        f"{'configuration':<22} {'reads':>6} {'stale':>5} {'misrt':>5} "
        f"{'replica':>7} {'oracle':>6} {'@query':>6} {'p50 ms':>6} {'p99 ms':>7} "
        f"{'prim rd/s':>9} {'err':>3}"
    )
    lines = [
        f"Consistency: {p['users']} users, {p['load_seconds']:g} s each, "
        f"p(write)={p['write_probability']}, think {p['think_ms'][0]}-"
        f"{p['think_ms'][1]} ms; replica A +{p['replica_a_apply_delay_ms']} ms, "
        f"replica B paused {p['replica_b_pause_for_s']:g} s every "
        f"{p['replica_b_pause_every_s']:g} s",
        f"{m['cpu_count']} CPUs, Python {m['python']}, Django {m['django']}, "
        f"PostgreSQL {m['postgresql']}, uvicorn {m['uvicorn']}",
        head,
        "-" * len(head),
    ]
    for name, r in data["configurations"].items():
        lines.append(
            f"{name:<22} {r['reads']:>6} {r['stale_reads']:>5} "
            f"{r['misrouted_reads']:>5} {r['replica_share']:>7.3f} "
            f"{r['oracle_share']:>6.3f} {r['oracle_share_at_query']:>6.3f} "
            f"{r['latency_p50_ms']:>6.1f} "
            f"{r['latency_p99_ms']:>7.1f} {r['primary_reads_per_s']:>9.1f} "
            f"{r['errors']:>3}"
        )
    t = data["targets"]
    ok = {True: "PASS", False: "MISS"}
    share = t["ours_auto_share_vs_oracle"]
    lines += [
        f"ours auto: stale reads = {t['ours_auto_no_stale_reads']['value']} "
        f"(target 0): {ok[t['ours_auto_no_stale_reads']['pass']]}",
        f"ours auto: replica share {share['value']:.3f} = {share['ratio']:.3f} x "
        f"oracle (target >= 0.95 x oracle = {share['target']:.3f}): "
        f"{ok[share['pass']]}",
        f"ours auto: replica share {t['ours_auto_share_vs_seed_15s']['value']:.3f} "
        f"> seed 15 s {t['ours_auto_share_vs_seed_15s']['target']:.3f}: "
        f"{ok[t['ours_auto_share_vs_seed_15s']['pass']]}",
        f"wall clock {data['wall_seconds']:.1f} s; failures: "
        + ("; ".join(data["failures"]) or "none"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run")
    parser.add_argument("--json", action="store_true", help="print the JSON too")
    args = parser.parse_args(argv)
    load.exit_on_sigterm()
    data = run(args.quick)
    print(table(data))
    if args.json:
        print(json.dumps(data, indent=2))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
