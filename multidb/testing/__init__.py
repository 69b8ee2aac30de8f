"""Test infrastructure shipped with the package, for its tests, demo and
benchmarks: never imported by ``multidb`` itself.

``multidb.testing.cluster`` starts a throw-away PostgreSQL primary with
streaming replicas (and PgBouncer) on loopback.
"""
