"""Section 1: the cost of one routing decision, ours against the seed.

The seed is django-multidb-router 0.11, loaded side by side as
``multidb_seed`` (see ``benchmarks/seed.py``).  Interleaved rounds: every
candidate runs one timed block per round, in the same process, so machine
noise hits all of them alike.  Each figure is the median over rounds of the
time per call, with the 10th-90th percentile range over rounds.

Three groups:

* ``db_for_read(Model)`` called on the router directly;
* the same through ``django.db.router.db_for_read(Model)``, Django's
  ``ConnectionRouter`` loop, which every query goes through;
* ours with 1, 2, 8 and 32 replicas in rotation;
* the watcher every statement on the primary passes through (which
  statements write, and so pin the request), against the statement's
  executor alone: the cost each query on the primary pays.

    ./run.sh bench            # all sections; or, this one alone:
    .venv/bin/python -m benchmarks.hot_path [--quick]
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/hot_path.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import (
    DEFAULT_REPLICAS,
    REPLICAS,
    configure,
    header,
    ns,
    spread,
    verdict,
)
from benchmarks.seed import install_seed

#: A call: the bound method and the model it routes.
Call = tuple[Callable[[Any], object], Any]
#: Puts the routing state in place (untimed) and returns the call to time.
Setup = Callable[[], Call]

DIRECT = "db_for_read(Model) on the router"
THROUGH_DJANGO = "django.db.router.db_for_read(Model) (ConnectionRouter loop)"
BY_COUNT = "ours against the number of replicas in rotation"
WATCHER = "each statement on the primary: what wrote? (ours only)"
WATCHER_FLOOR = "no watcher: the executor alone"
#: Statements as Django sends them, for the watcher rows.
SELECT = (
    'SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login",'
    ' "auth_user"."is_superuser", "auth_user"."username" FROM "auth_user"'
    ' WHERE "auth_user"."id" = %s LIMIT 21'
)
INSERT = (
    'INSERT INTO "auth_user" ("password", "username") VALUES (%s, %s)'
    ' RETURNING "auth_user"."id"'
)
LOCKING = SELECT.replace(" LIMIT 21", " LIMIT 21 FOR UPDATE")
REPLICA_COUNTS = (1, 2, 8, 32)

#: A made-up primary position for the token benchmarks (an LSN as an int).
POSITION = 0x16_B374_D848


class ConstantRouter:
    """The floor: a router that decides nothing."""

    def db_for_read(self, model: object, **hints: object) -> str:
        return "replica1"


def use_replicas(aliases: list[str]) -> None:
    """Put exactly ``aliases`` in our rotation (the seed's is built once)."""
    from django.conf import settings
    from django.core.signals import setting_changed

    if list(settings.REPLICA_DATABASES) != aliases:
        settings.REPLICA_DATABASES = aliases
        setting_changed.send(
            sender=type(settings),
            setting="REPLICA_DATABASES",
            value=aliases,
            enter=True,
        )


#: The replica groups of the "2 groups" rows: ``auth``'s models (the
#: benchmarked ``User``) stay on ``default``, the ``billing`` app does not.
TWO_GROUPS = {"billing": ["billing_r1"]}


def use_groups(aliases: list[str] | None) -> None:
    """Two replica groups, ``default``'s replicas being ``aliases``; or none."""
    from django.conf import settings
    from django.core.signals import setting_changed

    groups = None if aliases is None else {"default": aliases, **TWO_GROUPS}
    primary_for = None if aliases is None else {"billing": "billing"}
    for name, value in [
        ("MULTIDB_REPLICA_GROUPS", groups),
        ("MULTIDB_PRIMARY_FOR", primary_for),
    ]:
        if getattr(settings, name, None) != value:
            setattr(settings, name, value)
            setting_changed.send(
                sender=type(settings), setting=name, value=value, enter=True
            )


def publish_positions(aliases: list[str], position: int) -> None:
    """Make our health registry believe ``aliases`` have replayed ``position``.

    A stand-in for the prober, for timing only: the routing code reads these
    statuses exactly as it reads the prober's, and no claim about real
    replication is made from it (that is section 3's job, on a real cluster).
    """
    from multidb import health
    from multidb.positions import format_lsn

    statuses = {
        alias: health.DatabaseStatus(
            alias,
            "replica",
            health.OK,
            reachable=True,
            is_replica=True,
            replay_position=format_lsn(position),
        )
        for alias in aliases
    }
    with health.registry._lock:
        health.registry._statuses.clear()
        health.registry._statuses.update(statuses)
        health.registry._positions = health._positions(health.registry._statuses)


def candidates() -> list[tuple[str, str, Setup]]:
    """``(group, name, setup)`` for every candidate, in table order."""
    import django.db
    import multidb_seed  # type: ignore[import-not-found]
    import multidb_seed.pinning  # type: ignore[import-not-found]
    from django.contrib.auth.models import User
    from django.db import connections, transaction

    from multidb import PinningReplicaRouter, rotation
    from multidb import pinning as ours_pinning

    connections["default"].ensure_connection()
    floor = ConstantRouter()
    seed_replica = multidb_seed.ReplicaRouter()
    seed = multidb_seed.PinningReplicaRouter()
    ours = PinningReplicaRouter()
    django_router = django.db.router

    def via_django(router: object) -> Callable[[Any], object]:
        # Replace what DATABASE_ROUTERS gave the global ConnectionRouter: the
        # timed call is django.db.router.db_for_read itself.
        django_router.__dict__["routers"] = [router]
        return django_router.db_for_read

    def direct(router: object) -> Callable[[Any], object]:
        return router.db_for_read  # type: ignore[attr-defined, no-any-return]

    def constant(wrap: Callable[[object], Callable[[Any], object]]) -> Setup:
        return lambda: (wrap(floor), User)

    def seed_state(
        router: object, pinned: bool, wrap: Callable[[object], Callable[[Any], object]]
    ) -> Setup:
        def setup() -> Call:
            if pinned:
                multidb_seed.pinning.pin_this_thread()
            else:
                multidb_seed.pinning.unpin_this_thread()
            return wrap(router), User

        return setup

    def ours_state(
        state: str,
        wrap: Callable[[object], Callable[[Any], object]] = direct,
        aliases: list[str] = DEFAULT_REPLICAS,
        grouped: bool = False,
    ) -> Setup:
        def setup() -> Call:
            use_replicas(aliases)
            use_groups(aliases if grouped else None)
            rotation.rotation()  # built: the registry is warm
            ours_pinning._scope.set(ours_pinning._ROOT)
            if state == "unpinned":
                pass
            elif state == "pinned":
                ours_pinning.pin_this_thread()
            elif state == "request":
                ours_pinning.begin_request(ours_pinning.NO_PIN)
            elif state == "request pinned":
                ours_pinning.begin_request(ours_pinning.TIME_PIN)
            elif state == "atomic view":
                # Django's handler runs the view in atomic() on the primary
                # (ATOMIC_REQUESTS); the middleware has noted it.
                ours_pinning.begin_request(ours_pinning.NO_PIN)
                ours_pinning.current_request().atomic_view = True  # type: ignore[union-attr]
                _view_block.append(transaction.atomic())
                _view_block[-1].__enter__()
            elif state == "token settled":
                publish_positions(aliases, POSITION + 1)
                ours_pinning.begin_request(POSITION)
            elif state == "token waiting":
                # No replica has replayed the token yet, and the one check
                # by query is done (as after a first read in a worker
                # thread): every read asks the registry again, then reads
                # the primary.
                publish_positions(aliases, POSITION - 1)
                ours_pinning.begin_request(POSITION)
                ours_pinning.current_request().checked = True  # type: ignore[union-attr]
            else:  # pragma: no cover - a typo in this file
                raise ValueError(state)
            call = wrap(ours)
            first = call(User)  # the request picks (and settles on) its replica
            request = ours_pinning.current_request()
            if state == "token settled":
                assert first in aliases and request and request.settled == POSITION
            elif state == "token waiting":
                assert first == "default" and request and request.pinned == POSITION
            return call, User

        return setup

    rows: list[tuple[str, str, Setup]] = [
        (DIRECT, "floor: constant router", constant(direct)),
        (DIRECT, "seed ReplicaRouter", lambda: (seed_replica.db_for_read, User)),
        (DIRECT, "seed unpinned", seed_state(seed, False, direct)),
        (DIRECT, "seed pinned", seed_state(seed, True, direct)),
        (DIRECT, "ours unpinned", ours_state("unpinned")),
        (DIRECT, "ours unpinned, in a request", ours_state("request")),
        (DIRECT, "ours, 2 groups, unpinned", ours_state("unpinned", grouped=True)),
        (
            DIRECT,
            "ours, 2 groups, unpinned, in a request",
            ours_state("request", grouped=True),
        ),
        (
            DIRECT,
            "ours unpinned, in an ATOMIC_REQUESTS view",
            ours_state("atomic view"),
        ),
        (DIRECT, "ours pinned", ours_state("pinned")),
        (DIRECT, "ours pinned, in a request", ours_state("request pinned")),
        (DIRECT, "ours token, settled on a replica", ours_state("token settled")),
        (DIRECT, "ours token, no replica caught up", ours_state("token waiting")),
        (THROUGH_DJANGO, "floor: constant router", constant(via_django)),
        (THROUGH_DJANGO, "seed unpinned", seed_state(seed, False, via_django)),
        (THROUGH_DJANGO, "seed pinned", seed_state(seed, True, via_django)),
        (THROUGH_DJANGO, "ours unpinned", ours_state("unpinned", via_django)),
        (
            THROUGH_DJANGO,
            "ours unpinned, in a request",
            ours_state("request", via_django),
        ),
        (
            THROUGH_DJANGO,
            "ours unpinned, in an ATOMIC_REQUESTS view",
            ours_state("atomic view", via_django),
        ),
        (
            THROUGH_DJANGO,
            "ours pinned, in a request",
            ours_state("request pinned", via_django),
        ),
    ]

    def noop(sql: str, params: object, many: bool, context: object) -> None:
        return None

    def watched(sql: str, in_request: bool, wrote: bool = False) -> Setup:
        context = {"connection": connections["default"]}

        def setup() -> Call:
            ours_pinning._scope.set(ours_pinning._ROOT)
            if in_request:
                ours_pinning.begin_request(ours_pinning.NO_PIN)
            if wrote:
                ours_pinning.note_write(ours_pinning.current_request())
            watcher = ours_pinning._note_primary_use
            return (
                lambda statement: watcher(noop, statement, None, False, context)
            ), sql

        return setup

    rows += [
        (
            WATCHER,
            WATCHER_FLOOR,
            lambda: ((lambda sql: noop(sql, None, False, {})), SELECT),
        ),
        (WATCHER, "ours, a SELECT outside a request", watched(SELECT, False)),
        (WATCHER, "ours, a SELECT in a request", watched(SELECT, True)),
        (WATCHER, "ours, an INSERT in a request", watched(INSERT, True)),
        (WATCHER, "ours, a SELECT FOR UPDATE in a request", watched(LOCKING, True)),
        (
            WATCHER,
            "ours, a SELECT in a request that wrote",
            watched(SELECT, True, True),
        ),
    ]
    for count in REPLICA_COUNTS:
        aliases = REPLICAS[:count]
        for state, label in [
            ("unpinned", "unpinned"),
            ("request", "in a request"),
            ("token waiting", "token, none caught up"),
        ]:
            name = f"{count:2} replicas, {label}"
            rows.append((BY_COUNT, name, ours_state(state, aliases=aliases)))
    return [(group, name, _outside_the_view(setup)) for group, name, setup in rows]


#: The atomic() block an "ATOMIC_REQUESTS view" row has open.
_view_block: list[Any] = []


def _outside_the_view(setup: Setup) -> Setup:
    """``setup``, after closing the block a previous row left open."""

    def fresh() -> Call:
        while _view_block:
            _view_block.pop().__exit__(None, None, None)
        return setup()

    return fresh


def _time_block(call: Call, calls: int) -> float:
    """Nanoseconds per call over ``calls`` calls."""
    fn, model = call
    loop = range(calls)
    start = time.perf_counter_ns()
    for _ in loop:
        fn(model)
    return (time.perf_counter_ns() - start) / calls


def measure_rows(
    rows: list[tuple[str, str, Setup]], rounds: int, block_ns: float
) -> dict[str, dict[str, Any]]:
    """Per-call figures for every row; each timed block lasts about ``block_ns``.

    A first, untimed round sizes each row's block (so a slow path gets as
    much wall time as a fast one), then ``rounds`` interleaved rounds.
    """
    calls: dict[tuple[str, str], int] = {}
    for group, name, setup in rows:
        per_call = _time_block(setup(), 2000)
        calls[group, name] = max(200, min(200_000, int(block_ns / per_call)))
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for group, name, setup in rows:
                call = setup()
                samples[group, name].append(_time_block(call, calls[group, name]))
    finally:
        gc.enable()
        use_groups(None)
        use_replicas(DEFAULT_REPLICAS)
    return {
        f"{group} | {name}": {
            **{f"{k}_ns": v for k, v in spread(values).items()},
            "calls_per_round": calls[group, name],
        }
        for (group, name), values in samples.items()
    }


def _median(results: dict[str, dict[str, float]], group: str, name: str) -> float:
    return results[f"{group} | {name}"]["median_ns"]


def measure(quick: bool = False) -> dict[str, Any]:
    """Measure section 1; returns JSON-able results (``print_report`` prints them)."""
    install_seed()
    configure(aliases=max(REPLICA_COUNTS))
    rounds, block_ns = (31, 2e6) if quick else (61, 6e6)
    rows = candidates()
    results = measure_rows(rows, rounds, block_ns)

    def m(group: str, name: str) -> float:
        return _median(results, group, name)

    # Ratios: each row against its seed counterpart, and against the floor.
    comparisons: dict[str, dict[str, str]] = {}
    for group, name, _ in rows:
        if group == WATCHER:
            if name != WATCHER_FLOOR:
                comparisons[f"{group} | {name}"] = {"floor": WATCHER_FLOOR}
            continue
        if group == BY_COUNT:
            label = name.partition(" replicas, ")[2]
            comparisons[f"{group} | {name}"] = {
                "vs": f"{REPLICA_COUNTS[0]:2} replicas, {label}"
            }  # shown as "1 replica"
            continue
        entry = {"floor": "floor: constant router"}
        if name.startswith("ours"):
            pinned = "pinned" in name and "unpinned" not in name
            entry["vs"] = "seed pinned" if pinned else "seed unpinned"
        comparisons[f"{group} | {name}"] = entry
    for key, entry in comparisons.items():
        group, _, name = key.partition(" | ")
        figures = results[key]
        if "vs" in entry:
            figures["vs"] = entry["vs"]  # type: ignore[assignment]
            figures["ratio_vs"] = figures["median_ns"] / m(group, entry["vs"])
        if "floor" in entry:
            figures["ratio_floor"] = figures["median_ns"] / m(group, entry["floor"])

    targets = []
    for group in (DIRECT, THROUGH_DJANGO):
        for name, versus in [
            ("ours unpinned", "seed unpinned"),
            ("ours unpinned, in a request", "seed unpinned"),
            ("ours, 2 groups, unpinned", "seed unpinned"),
            ("ours, 2 groups, unpinned, in a request", "seed unpinned"),
            ("ours unpinned, in an ATOMIC_REQUESTS view", "seed unpinned"),
            ("ours pinned", "seed pinned"),
            ("ours pinned, in a request", "seed pinned"),
        ]:
            if f"{group} | {name}" not in results:
                continue
            ratio = m(group, name) / m(group, versus)
            targets.append(
                {
                    "group": group,
                    "target": f"{name} <= 1.0x {versus}",
                    "ratio": ratio,
                    "limit": 1.0,
                    "verdict": verdict(ratio, 1.0),
                }
            )
    for name in [
        "ours unpinned",
        "ours unpinned, in a request",
        "ours pinned",
        "ours pinned, in a request",
        "ours token, settled on a replica",
    ]:
        ratio = m(DIRECT, name) / m(DIRECT, "floor: constant router")
        targets.append(
            {
                "group": DIRECT,
                "target": f"{name} <= 2.0x the constant-router floor",
                "ratio": ratio,
                "limit": 2.0,
                "verdict": verdict(ratio, 2.0),
            }
        )
    return {
        "rounds": rounds,
        "block_ms": block_ns / 1e6,
        "results": results,
        "targets": targets,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure section 1 and print its table."""
    report = measure(quick)
    print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    results = report["results"]
    print()
    print(
        header(
            "Section 1 - hot path: time per routing decision, median of"
            f" {report['rounds']} interleaved rounds (p10-p90 over rounds)"
        )
    )
    group_now = None
    for key in results:
        group, _, name = key.partition(" | ")
        if group != group_now:
            group_now = group
            print(f"\n  {group}")
            print(
                f"  {'candidate':36} {'median':>8} {'p10-p90':>17}"
                f" {'ratio':>7}  {'to':24} {'x floor':>7}"
            )
        figures = results[f"{group} | {name}"]
        spread_text = f"{ns(figures['p10_ns'])}-{ns(figures['p90_ns'])}"
        ratio = f"{figures['ratio_vs']:6.2f}x" if "ratio_vs" in figures else ""
        versus = figures.get("vs", "") if ratio else ""
        if group == BY_COUNT:
            versus = f"{REPLICA_COUNTS[0]} replica(s), same state"
        floor = f"{figures['ratio_floor']:6.2f}x" if "ratio_floor" in figures else ""
        print(
            f"  {name:36} {ns(figures['median_ns']):>8} {spread_text:>17}"
            f" {ratio:>7}  {versus:24} {floor:>7}"
        )
    print("\n  Targets (reported, never asserted):")
    for target in report["targets"]:
        where = "direct" if target["group"] == DIRECT else "via django.db.router"
        print(
            f"  {target['verdict']}  {target['ratio']:5.2f}x  {target['target']}"
            f" ({where})"
        )


if __name__ == "__main__":
    sys.exit(common.main(run, __doc__ or ""))
