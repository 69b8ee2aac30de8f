"""Run 0.11's suite ``--runs`` times with one settings module; exit 1 unless
every run passes all of its tests."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import unittest

#: The tests in 0.11's ``multidb/tests.py``.
EXPECTED_TESTS = 25
LABEL = "multidb_seed.tests"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.seed_suite")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    from benchmarks.seed import install_seed

    install_seed()
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    import django
    from django.test.runner import DiscoverRunner

    django.setup()
    failed_runs = []
    for run in range(1, args.runs + 1):
        runner = DiscoverRunner(verbosity=0, interactive=False)
        suite = runner.build_suite([LABEL])
        count = suite.countTestCases()
        if count != EXPECTED_TESTS:
            print(f"expected {EXPECTED_TESTS} tests in {LABEL}, found {count}")
            return 1
        runner.setup_test_environment()
        old_config = runner.setup_databases()
        try:
            # unittest's report of each passing run is noise: failures are
            # printed below.
            with contextlib.redirect_stderr(io.StringIO()):
                result: unittest.TestResult = runner.run_suite(suite)
        finally:
            runner.teardown_databases(old_config)
            runner.teardown_test_environment()
        bad = len(result.failures) + len(result.errors)
        if bad or result.testsRun != EXPECTED_TESTS:
            failed_runs.append(run)
            for test, trace in result.failures + result.errors:
                print(f"run {run}: {test}\n{trace}")
    passed = args.runs - len(failed_runs)
    print(
        f"0.11's suite with {args.settings}: {passed}/{args.runs} runs passed "
        f"all {EXPECTED_TESTS} tests"
    )
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
