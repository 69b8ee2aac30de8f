"""Test infrastructure shipped with the package, for its tests, demo and
benchmarks, and for developing a site: never imported by the router itself.

``multidb.testing.cluster`` starts a throw-away PostgreSQL primary with
streaming replicas (and PgBouncer) on loopback; ``multidb.testing.devcluster``
keeps one running for development (``python -m multidb.devcluster``).
"""
