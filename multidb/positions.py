"""Per-vendor write positions: where the primary is, and where a replica is.

A position is an integer that only grows (PostgreSQL: the WAL LSN as a
64-bit number).  A vendor without positions gets reachability checks only.
Add a vendor by writing an adapter and listing it in ``ADAPTERS``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Protocol


class ReplicaState(NamedTuple):
    #: False when the server is no longer a replica (it was promoted).
    is_replica: bool
    #: How far the replica has replayed the primary's writes, if known.
    replay_position: int | None
    #: Seconds since the last transaction the replica replayed was committed
    #: on the primary, by the replica's clock; None if unknown (none replayed
    #: since the replica started, or a vendor without it).  An idle primary
    #: makes it grow, so it only says something about a replica that is
    #: behind.
    replay_age: float | None = None


class Adapter(Protocol):
    #: Whether this vendor reports positions (and so lag in bytes).
    has_positions: bool

    def primary_position(self, cursor: Any) -> int | None: ...

    def replica_state(self, cursor: Any) -> ReplicaState: ...


#: Two halves of up to 8 hex digits each; ``int(..., 16)`` alone would also
#: take signs, spaces, ``0x``, underscores and non-ASCII digits.
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` → ``0x16B374D848``; raises ``ValueError`` if malformed."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a PostgreSQL LSN: {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


#: Sizes of a WAL page and of its headers (the long one starts a segment).
WAL_PAGE = 8192
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40


def record_end(insert: int, segment_offset: int) -> int:
    """The end of the last WAL record, from the insert position.

    When the last record ends exactly at a page boundary, the insert
    position is already past the next page's header, and a replica's replay
    position stops at the boundary until more WAL comes: a token there would
    keep its reads on the primary however long the primary stays idle.
    """
    if segment_offset == LONG_PAGE_HEADER:
        return insert - LONG_PAGE_HEADER
    if insert % WAL_PAGE == SHORT_PAGE_HEADER:
        return insert - SHORT_PAGE_HEADER
    return insert


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


class PostgreSQL:
    has_positions = True

    def primary_position(self, cursor: Any) -> int | None:
        # The insert position, not pg_current_wal_lsn() (the write position):
        # after an asynchronous commit (synchronous_commit = off) the commit
        # record is inserted but may not be written yet, so the write
        # position can point before the commit.
        cursor.execute(
            "SELECT lsn::text, (pg_walfile_name_offset(lsn)).file_offset"
            " FROM (SELECT pg_current_wal_insert_lsn() AS lsn) AS current"
        )
        lsn, segment_offset = cursor.fetchone()
        return record_end(parse_lsn(lsn), segment_offset)

    def replica_state(self, cursor: Any) -> ReplicaState:
        cursor.execute(
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
            " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
        )
        in_recovery, replay, age = cursor.fetchone()
        if not in_recovery:
            return ReplicaState(False, None)
        return ReplicaState(
            True,
            parse_lsn(replay) if replay else None,
            # numeric (a Decimal) since PostgreSQL 14, double precision before.
            None if age is None else float(age),
        )


class ReachabilityOnly:
    """MySQL, MariaDB, SQLite and others: can we run a query at all?"""

    has_positions = False

    def primary_position(self, cursor: Any) -> int | None:
        cursor.execute("SELECT 1")
        return None

    def replica_state(self, cursor: Any) -> ReplicaState:
        cursor.execute("SELECT 1")
        return ReplicaState(True, None)


ADAPTERS: dict[str, Adapter] = {"postgresql": PostgreSQL()}
_REACHABILITY_ONLY = ReachabilityOnly()


def adapter(vendor: str) -> Adapter:
    """The adapter for a Django ``connection.vendor``."""
    return ADAPTERS.get(vendor, _REACHABILITY_ONLY)
