"""django-multidb-router 0.11's own test suite, run unchanged against ``multidb``.

The 0.11 wheel is downloaded at run time (``benchmarks.seed``); none of its
code is committed.  Its ``multidb/tests.py`` imports ``multidb``, which is
this package, and runs under Django's test runner with each settings module
here, many times in one process:

    python -m tests.seed_suite --settings tests.seed_suite.settings_011 --runs 20
"""
