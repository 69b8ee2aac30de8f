"""What the in-process benchmarks share: settings, the environment, statistics.

Each section runs in a process of its own (``python -m benchmarks`` spawns
one per section), configured here: SQLite in-memory databases (``default``
and ``replica1`` ... ``replicaN``), two replicas in rotation unless a
benchmark says otherwise, and no health prober (see ``configure``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings

#: Every replica alias configured; the replica-count benchmark uses prefixes.
REPLICAS = [f"replica{i}" for i in range(1, 33)]
#: The replicas in rotation for every benchmark but the replica-count one.
DEFAULT_REPLICAS = REPLICAS[:2]


def _sqlite() -> dict[str, Any]:
    # A dict per alias: Django and the seed both write into these.
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def configure(aliases: int = len(DEFAULT_REPLICAS)) -> None:
    """Configure Django once for the process, with ``aliases`` replica aliases.

    Only the replica-count benchmark needs many: Django walks every
    configured alias several times per request (``close_old_connections``,
    ``reset_queries``), which would inflate the per-request figures.
    """
    if settings.configured:
        return
    databases = {"default": _sqlite(), **{a: _sqlite() for a in REPLICAS[:aliases]}}
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmarks-only-not-secret",
        ALLOWED_HOSTS=["testserver"],
        DATABASES=databases,
        # Listed, so neither package takes its "no replicas" path (which warns).
        REPLICA_DATABASES=list(DEFAULT_REPLICAS),
        DATABASE_ROUTERS=["multidb.PinningReplicaRouter"],
        # The background prober would probe 33 SQLite databases every second
        # on this 2-CPU machine (noise), and would overwrite the replica
        # positions the token benchmark publishes.  Routing never waits for
        # it: with it off, every replica simply stays in rotation.
        MULTIDB_HEALTH_CHECK_INTERVAL=None,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        MIDDLEWARE=[],
        ROOT_URLCONF="benchmarks.middleware",
        USE_TZ=True,
    )
    django.setup()


def call_section(module: str, function: str, quick: bool) -> Any:
    """``module.function(quick)``: what ``python -m benchmarks`` runs in a child."""
    return getattr(importlib.import_module(module), function)(quick)


def environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.__version__,
        "platform": platform.platform(),
    }


def header(title: str) -> str:
    env = environment()
    return (
        f"{title}\n({env['cpus']} CPUs, Python {env['python']},"
        f" Django {env['django']}; shared machine: absolute times are noisy,"
        " ratios are the point)"
    )


def spread(values: list[float]) -> dict[str, float]:
    """Median and the 10th-90th percentile range of per-round figures."""
    if len(values) >= 2:
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        low, high = deciles[0], deciles[-1]
    else:
        low = high = values[0]
    return {"median": statistics.median(values), "p10": low, "p90": high}


def verdict(ratio: float, limit: float) -> str:
    return "PASS" if ratio <= limit else "MISS"


def ns(value: float) -> str:
    """A duration given in nanoseconds, in a readable unit."""
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}µs"
    return f"{value:.0f}ns"


def main(run: Callable[[bool], dict[str, Any]], doc: str) -> int:
    """The command line of a section: ``[--quick] [--json PATH]``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = run(args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
