"""Run every benchmark section: ``python -m benchmarks [--quick] [--check]``.

1. the routing hot path (``benchmarks.hot_path``), in-process;
2. the middleware per request (``benchmarks.middleware``), in-process;
3. consistency under load on a real cluster (``benchmarks.consistency``),
   if that module exists.

Each section runs in a fresh interpreter of its own (sections 1 and 2 need
different Django settings, and section 3 configures its own), and its
results come back here to be printed and written, with everything else, to
``benchmarks/results/latest.json``.

Timing ratios are reported, never asserted.  ``--check`` makes the exit
status non-zero only for correctness: a non-empty ``failures`` list from
section 3 (its hard failures: stale reads in a row of its configuration
matrix, misrouted reads, forked workers sharing connections; and its
offload targets: a row's replica share against the oracle's), or section 3
failing to produce one.  Exit status 2 means that section 1 or 2
itself broke (a bug in the benchmark), whatever the options.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from benchmarks.common import (
    header,
    in_child,
    machine,
    machine_line,
    write_results,
)


@dataclass(frozen=True)
class Section:
    """A section of the run: a module with ``measure(quick) -> dict``, run in
    a fresh interpreter, and ``print_report(result)``, run here."""

    number: int
    #: Its key in ``latest.json``'s ``sections``.
    key: str
    module: str
    #: A correctness section: its result's ``failures`` list (strings) is what
    #: ``--check`` checks, and failing to run is one of them.  A timing
    #: section's targets are reported only, and failing to run is a bug in the
    #: benchmark (exit status 2).
    checked: bool = False
    #: Printed before it runs, for a long section; a timing section's report
    #: heads its own table.
    title: str | None = None


#: Every section, in the order they run.
SECTIONS = (
    Section(1, "1_hot_path", "benchmarks.hot_path"),
    Section(2, "2_middleware", "benchmarks.middleware"),
    Section(
        3,
        "3_consistency",
        "benchmarks.consistency",
        checked=True,
        title="Section 3 - consistency under load, real PostgreSQL cluster",
    ),
)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _print_plainly(result: dict[str, Any]) -> None:
    """A listing of a result that its module could not print."""
    for key, value in result.items():
        if key != "failures" and not isinstance(value, (dict, list)):
            print(f"  {key}: {value}")


def run_section(section: Section, quick: bool) -> dict[str, Any]:
    """Measure ``section`` in a child and print its report here; its result."""
    if section.checked:
        print()
        if importlib.util.find_spec(section.module) is None:
            print(f"section {section.number}: not available")
            return {"available": False, "failures": []}
    if section.title:
        print(header(section.title))
    started = time.monotonic()
    try:
        result = in_child(section.module, "measure", quick)
    except Exception as exc:  # reported, and the run goes on
        error = _error(exc)
        gap = "" if section.checked else "\n"
        print(f"{gap}section {section.number} FAILED to run: {error}", file=sys.stderr)
        failed: dict[str, Any] = {"error": error}
        if section.checked:
            failed = {
                "available": True,
                **failed,
                "failures": [f"section {section.number} did not complete: {error}"],
            }
        return {**failed, "seconds": round(time.monotonic() - started, 1)}
    if section.checked:
        if not isinstance(result, dict) or not isinstance(result.get("failures"), list):
            result = {"result": result, "failures": []}
            result["failures"].append(
                f"section {section.number} returned no 'failures' list"
            )
        result.setdefault("available", True)
    result["seconds"] = round(time.monotonic() - started, 1)
    try:
        importlib.import_module(section.module).print_report(result)
    except Exception:  # no report of its own: a plain listing
        _print_plainly(result)
    if section.checked:
        print(f"  failures: {'; '.join(map(str, result['failures'])) or 'none'}")
    print(f"  (section {section.number}: {result['seconds']:.1f} s)")
    return result


def print_summary(sections: dict[str, dict[str, Any]]) -> None:
    print()
    print(header("Summary: ratios against the seed (targets reported, not asserted)"))
    for section in SECTIONS:
        result = sections[section.key]
        if section.checked:
            if not result.get("available"):
                print(f"  {section.number}  section {section.number}: not available")
                continue
            hard = result.get("hard_failures", result.get("failures")) or []
            share = result.get("share_failures") or []
            print(f"  {section.number}  hard failures: {'; '.join(hard) or 'none'}")
            print(
                f"  {section.number}  offload targets missed:"
                f" {'; '.join(share) or 'none'}"
            )
            continue
        if "error" in result:
            print(f"  section {section.number}: did not run ({result['error']})")
            continue
        for target in result["targets"]:
            ratio = target["ratio"]
            shown = "  n/a" if ratio is None else f"{ratio:5.2f}x"
            where = target.get("group", "")
            where = " (via django.db.router)" if "django.db.router" in where else ""
            print(
                f"  {section.number}  {target['verdict']:4}  {shown}"
                f"  {target['target']}{where}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, shorter rounds: sections 1 and 2 in well under a minute",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit non-zero if a correctness figure (section 3) fails",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    env = machine()
    print(
        f"django-replica-router benchmarks{' (quick)' if args.quick else ''}:"
        f" {machine_line(env)}, {env['platform']}"
    )
    sections = {section.key: run_section(section, args.quick) for section in SECTIONS}
    print_summary(sections)
    failures = [
        failure
        for section in SECTIONS
        if section.checked
        for failure in sections[section.key].get("failures") or []
    ]
    broken = [
        section.key
        for section in SECTIONS
        if not section.checked and "error" in sections[section.key]
    ]
    shown = write_results(
        "latest.json",
        {
            "environment": env,
            "quick": args.quick,
            "check": args.check,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "failures": failures,
            "sections": sections,
        },
    )
    print(f"\nResults: {shown}")
    print(f"Total: {time.monotonic() - started:.1f} s")
    if broken:
        print(f"ERROR: {', '.join(broken)} did not run", file=sys.stderr)
        return 2
    if args.check and failures:
        print("CHECK FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
