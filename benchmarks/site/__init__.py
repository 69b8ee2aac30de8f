"""The Django site that ``benchmarks.consistency`` and ``benchmarks.faults``
serve with uvicorn or gunicorn.

One settings module for every configuration: the router (the seed's or
ours), the pin length and the pinning mode come from the JSON in the
environment variable ``MULTIDB_BENCH_SITE``, which the benchmark sets.  The
views import neither router, so both run the same code (``probes``, routed
for ours only, reads the state of ours' prober).

``benchmarks.concurrency`` serves other views from here, under settings of
its own: ``concurrent.py`` (the views, also served by ``tests/postgres``),
``concurrent_urls.py`` and the ``Item`` model.
"""

#: The benchmark's table: created (and dropped) by ``benchmarks.consistency``.
TABLE = "bench_row"
