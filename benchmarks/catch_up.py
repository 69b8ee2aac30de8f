"""How long after a commit until a replica has replayed it, on loopback.

This is the window during which a position token keeps a user on the
primary; a time pin keeps them there for ``MULTIDB_PINNING_SECONDS``.

    .venv/bin/python -m benchmarks.catch_up [--quick] [--writes N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from multidb.testing.cluster import Cluster

#: Writes with ``--quick``.
QUICK_WRITES = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_WRITES} writes, not 300"
    )
    parser.add_argument("--writes", type=int, help="this many writes")
    args = parser.parse_args()
    writes = args.writes or (QUICK_WRITES if args.quick else 300)
    with Cluster(replicas=2) as cluster:
        primary = psycopg.connect(cluster.primary.dsn(), autocommit=True)
        replicas = [
            psycopg.connect(node.dsn(), autocommit=True) for node in cluster.replicas
        ]
        primary.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        cluster.wait_caught_up()
        waits: list[float] = []
        for _ in range(writes):
            primary.execute("INSERT INTO t (v) VALUES ('x')")
            token = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            start = time.perf_counter()
            deadline = start + 5
            while time.perf_counter() < deadline:
                if any(
                    r.execute(
                        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [token]
                    ).fetchone()[0]
                    for r in replicas
                ):
                    break
            waits.append((time.perf_counter() - start) * 1000)
        waits.sort()
        print(
            f"{writes} writes: first replica past the token after "
            f"median {statistics.median(waits):.2f} ms, "
            f"p95 {waits[int(len(waits) * 0.95)]:.2f} ms, max {waits[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
