"""What every benchmark shares: the machine, results, running in a child;
and for the in-process sections, settings and statistics.

Each section runs in a process of its own (``python -m benchmarks`` spawns
one per section, ``in_child``).  The in-process ones are configured here:
SQLite in-memory databases (``default`` and ``replica1`` ... ``replicaN``),
two replicas in rotation unless a benchmark says otherwise, and no health
prober (see ``configure``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
#: Where results are written (``write_results``); it ignores itself in git.
RESULTS = ROOT / "benchmarks" / "results"

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
    """``module.function(quick)``: what ``in_child`` runs in the child."""
    return getattr(importlib.import_module(module), function)(quick)


def in_child(module: str, function: str, quick: bool) -> Any:
    """``module.function(quick)`` in a fresh interpreter; its result, or its
    error raised here."""
    sys.stdout.flush()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(call_section, module, function, quick).result()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _commit() -> str | None:
    """The commit the package was measured at (``git describe``), if known."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


#: The packages whose versions ``machine`` names.
PACKAGES = ("django", "psycopg", "uvicorn", "gunicorn", "httpx")


def machine(postgresql: str | None = None) -> dict[str, Any]:
    """What the figures were measured on and with: CPUs, versions (``None``
    for a package not installed), the platform and the package's commit;
    ``postgresql``, the server version, for a section with a cluster."""
    described: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "commit": _commit(),
    }
    if postgresql is not None:
        described["postgresql"] = postgresql
    return described


def machine_line(m: dict[str, Any]) -> str:
    """``machine()`` in a line: CPUs and versions, with PostgreSQL and the
    servers for a section with a cluster."""
    line = f"{m['cpu_count']} CPUs, Python {m['python']}, Django {m['django']}"
    if "postgresql" in m:
        line += (
            f", PostgreSQL {m['postgresql']}, uvicorn {m['uvicorn']},"
            f" gunicorn {m['gunicorn']}"
        )
    return line


def header(title: str) -> str:
    return (
        f"{title}\n({machine_line(machine())}; shared machine: absolute times"
        " are noisy, ratios are the point)"
    )


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``RESULTS/name``; the path, relative to the current
    directory when it is below it (for printing)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    ignore = RESULTS / ".gitignore"
    if not ignore.exists():
        # Results are machine-specific: never committed.
        ignore.write_text("*\n")
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


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
