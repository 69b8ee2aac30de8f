"""What a statement sent to the primary does: read, write, or lock rows.

A request pins itself to the primary when it *writes*, not when Django
routes something through ``db_for_write``: ``get_or_create`` that finds its
row, ``update_or_create`` with nothing to change and ``select_for_update``
are routed as writes but write nothing.  ``multidb.pinning`` asks
:func:`kind` about every statement on a connection to the primary.

The rule errs towards "write": a statement is a read only when its first
keyword is one that cannot change data (``SELECT``, ``SHOW``, ``EXPLAIN``
without ``ANALYZE``, transaction control...).  ``INSERT``, ``UPDATE``,
``DELETE``, ``MERGE``, ``COPY``, DDL, ``CALL``, ``DO`` and a ``WITH`` (which
may hold any of them) are writes, and so is anything not recognised.  A
``SELECT`` that locks rows (``FOR UPDATE``, ``FOR SHARE``...) is a lock: its
transaction pins the request when it commits; ``SELECT ... INTO`` is a
write.  A function with side effects
called from a ``SELECT`` is not seen: mark such a request with ``db_write``
or ``response._db_write``.
"""

from __future__ import annotations

import re
from typing import Final

READ: Final = "read"
WRITE: Final = "write"
LOCK: Final = "lock"

#: First keywords of statements that change no data.
_READS = frozenset(
    {
        "SELECT", "SHOW", "VALUES", "TABLE", "FETCH", "MOVE", "CLOSE",
        "SET", "RESET", "BEGIN", "START", "COMMIT", "END", "ROLLBACK",
        "SAVEPOINT", "RELEASE", "PRAGMA", "LISTEN", "UNLISTEN", "DISCARD",
        "DEALLOCATE",
    }
)  # fmt: skip
# Leading comments (Django's query comments, sqlcommenter) and blanks, then
# the first word.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.S)
# What makes a SELECT more than a read: a row lock, or SELECT ... INTO (which
# creates a table).
_NOT_ONLY_READ = re.compile(
    r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b|\b(INTO)\b", re.I
)
_ANALYZE = re.compile(r"\bANALY[SZ]E\b", re.I)


def kind(sql: object) -> str:
    """``READ``, ``WRITE`` or ``LOCK`` for one statement's SQL."""
    if not isinstance(sql, str):
        return WRITE  # a composed statement: assume the worst
    match = _FIRST_WORD.match(sql)
    if match is None:
        return WRITE
    word = match[1].upper()
    if word == "SELECT":
        found = _NOT_ONLY_READ.search(sql)
        if found is None:
            return READ
        return WRITE if found[1] else LOCK
    if word == "EXPLAIN":
        return WRITE if _ANALYZE.search(sql) else READ
    return READ if word in _READS else WRITE
