"""Cost of one routing decision, ours against the seed (django-multidb-router 0.11).

Interleaved rounds: every candidate runs once per round, in the same
process, so machine noise hits all of them alike.  Prints the median time
per call and the ratio to the seed's ``PinningReplicaRouter``.

    ./run.sh bench            # or: python benchmarks/hot_path.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks.seed import install_seed  # noqa: E402

_SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def configure() -> None:
    settings.configure(
        DATABASES={"default": _SQLITE, "replica1": _SQLITE, "replica2": _SQLITE},
        REPLICA_DATABASES=["replica1", "replica2"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    )
    django.setup()


def measure(
    candidates: dict[str, Callable[[], object]], calls: int, rounds: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    gc.disable()
    try:
        for _ in range(rounds):
            for name, setup_and_run in candidates.items():
                run = setup_and_run()
                start = time.perf_counter_ns()
                for _ in range(calls):
                    run()
                samples[name].append((time.perf_counter_ns() - start) / calls)
    finally:
        gc.enable()
    return {
        name: {
            "median_ns": statistics.median(values),
            "p10_ns": statistics.quantiles(values, n=10)[0],
            "p90_ns": statistics.quantiles(values, n=10)[-1],
        }
        for name, values in samples.items()
    }


def candidates() -> dict[str, Callable[[], object]]:
    import multidb_seed  # type: ignore[import-not-found]
    import multidb_seed.pinning  # type: ignore[import-not-found]
    from django.contrib.auth.models import User
    from django.db import connections

    from multidb import PinningReplicaRouter
    from multidb import pinning as ours_pinning

    connections["default"].ensure_connection()
    seed, ours = multidb_seed.PinningReplicaRouter(), PinningReplicaRouter()

    class ConstantRouter:
        def db_for_read(self, model: object, **hints: object) -> str:
            return "replica1"

    floor, seed_replica = ConstantRouter(), multidb_seed.ReplicaRouter()

    def seed_state(pinned: bool) -> Callable[[], object]:
        def setup() -> Callable[[], object]:
            if pinned:
                multidb_seed.pinning.pin_this_thread()
            else:
                multidb_seed.pinning.unpin_this_thread()
            return lambda: seed.db_for_read(User)

        return setup

    def ours_state(request: bool, pinned: bool) -> Callable[[], object]:
        def setup() -> Callable[[], object]:
            ours_pinning._scope.set(ours_pinning._ROOT)
            if request:
                ours_pinning.begin_request(pinned)
            elif pinned:
                ours_pinning.pin_this_thread()
            ours.db_for_read(User)
            return lambda: ours.db_for_read(User)

        return setup

    return {
        "floor: constant router": lambda: lambda: floor.db_for_read(User),
        "seed ReplicaRouter": lambda: lambda: seed_replica.db_for_read(User),
        "seed PinningReplicaRouter unpinned": seed_state(False),
        "seed PinningReplicaRouter pinned": seed_state(True),
        "ours unpinned": ours_state(request=False, pinned=False),
        "ours unpinned, in a request": ours_state(request=True, pinned=False),
        "ours pinned": ours_state(request=False, pinned=True),
        "ours pinned, in a request": ours_state(request=True, pinned=True),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    install_seed()
    configure()
    rounds, calls = (15, 20_000) if args.quick else (41, 50_000)
    results = measure(candidates(), calls, rounds)

    base_unpinned = results["seed PinningReplicaRouter unpinned"]["median_ns"]
    base_pinned = results["seed PinningReplicaRouter pinned"]["median_ns"]
    print(
        f"db_for_read(Model): median of {rounds} interleaved rounds of {calls} calls"
        f" (Python {platform.python_version()}, Django {django.__version__},"
        f" {os.cpu_count()} CPUs)"
    )
    print(f"{'candidate':40} {'median':>9} {'p10-p90':>15} {'vs seed':>8}")
    for name, figures in results.items():
        base = (
            base_pinned
            if "pinned" in name and "unpinned" not in name
            else base_unpinned
        )
        print(
            f"{name:40} {figures['median_ns']:7.0f}ns"
            f" {figures['p10_ns']:6.0f}-{figures['p90_ns']:<6.0f}ns"
            f" {figures['median_ns'] / base:7.2f}x"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
