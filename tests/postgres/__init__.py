"""Tests against a real PostgreSQL primary and two streaming replicas.

Run as their own pytest session (``./run.sh test`` does)::

    python -m pytest --ds=tests.postgres.settings tests/postgres
"""
