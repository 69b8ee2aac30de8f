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
import json
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import call_section, environment, header

RESULTS = Path(__file__).resolve().parent / "results"
SECTION_3 = "benchmarks.consistency"


def in_child(module: str, function: str, quick: bool) -> Any:
    """``module.function(quick)`` in a fresh interpreter; its result, or its error."""
    sys.stdout.flush()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(call_section, module, function, quick).result()


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def run_in_process_section(number: int, module: str, quick: bool) -> dict[str, Any]:
    """Section 1 or 2: measure in a child, print the table here."""
    started = time.monotonic()
    try:
        report: dict[str, Any] = in_child(module, "measure", quick)
    except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
        print(f"\nsection {number} FAILED to run: {_error(exc)}", file=sys.stderr)
        return {"error": _error(exc), "seconds": round(time.monotonic() - started, 1)}
    importlib.import_module(module).print_report(report)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"  (section {number}: {report['seconds']:.1f} s)")
    return report


def run_section_3(quick: bool) -> dict[str, Any]:
    """``benchmarks.consistency.run(quick)``, if the module exists."""
    print()
    if importlib.util.find_spec(SECTION_3) is None:
        print("section 3: not available")
        return {"available": False, "failures": []}
    print(header("Section 3 - consistency under load, real PostgreSQL cluster"))
    sys.stdout.flush()
    started = time.monotonic()
    try:
        data = in_child(SECTION_3, "run", quick)
    except Exception as exc:  # noqa: BLE001 - reported as a failure
        error = _error(exc)
        print(f"section 3 FAILED to run: {error}", file=sys.stderr)
        return {
            "available": True,
            "error": error,
            "failures": [f"section 3 did not complete: {error}"],
            "seconds": round(time.monotonic() - started, 1),
        }
    if not isinstance(data, dict) or not isinstance(data.get("failures"), list):
        data = {"result": data, "failures": []}
        data["failures"].append("section 3 returned no 'failures' list")
    data.setdefault("available", True)
    data["seconds"] = round(time.monotonic() - started, 1)
    try:
        print(importlib.import_module(SECTION_3).table(data))
    except Exception:  # noqa: BLE001 - no table of its own: a plain listing
        for key, value in data.items():
            if key != "failures" and not isinstance(value, (dict, list)):
                print(f"  {key}: {value}")
    print(f"  failures: {'; '.join(map(str, data['failures'])) or 'none'}")
    print(f"  (section 3: {data['seconds']:.1f} s)")
    return data


def print_summary(sections: dict[str, dict[str, Any]]) -> None:
    print()
    print(header("Summary: ratios against the seed (targets reported, not asserted)"))
    for key in ("1_hot_path", "2_middleware"):
        report = sections[key]
        if "error" in report:
            print(f"  section {key[0]}: did not run ({report['error']})")
            continue
        for target in report["targets"]:
            ratio = target["ratio"]
            shown = "  n/a" if ratio is None else f"{ratio:5.2f}x"
            where = target.get("group", "")
            where = " (via django.db.router)" if "django.db.router" in where else ""
            print(
                f"  {key[0]}  {target['verdict']:4}  {shown}  {target['target']}{where}"
            )
    third = sections["3_consistency"]
    if not third.get("available"):
        print("  3  section 3: not available")
    else:
        hard = third.get("hard_failures", third.get("failures")) or []
        share = third.get("share_failures") or []
        print(f"  3  hard failures: {'; '.join(hard) or 'none'}")
        print(f"  3  offload targets missed: {'; '.join(share) or 'none'}")


def write_results(data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    ignore = RESULTS / ".gitignore"
    if not ignore.exists():
        # Results are machine-specific: never committed.
        ignore.write_text("*\n")
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


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
    env = environment()
    print(
        f"django-replica-router benchmarks{' (quick)' if args.quick else ''}:"
        f" {env['cpus']} CPUs, Python {env['python']}, Django {env['django']},"
        f" {env['platform']}"
    )
    sections = {
        "1_hot_path": run_in_process_section(1, "benchmarks.hot_path", args.quick),
        "2_middleware": run_in_process_section(2, "benchmarks.middleware", args.quick),
        "3_consistency": run_section_3(args.quick),
    }
    print_summary(sections)
    failures = list(sections["3_consistency"].get("failures") or [])
    broken = [key for key in ("1_hot_path", "2_middleware") if "error" in sections[key]]
    path = write_results(
        {
            "environment": env,
            "quick": args.quick,
            "check": args.check,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "failures": failures,
            "sections": sections,
        }
    )
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
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
