"""``python -m multidb.devcluster``: a local PostgreSQL primary with streaming
replicas to develop a site against, until Ctrl-C.  Run it with ``--help``;
the code is in ``multidb.testing.devcluster``, which no site imports."""

from multidb.testing.devcluster import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
