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
write.  Both are looked for in upper or lower case (``For Update`` is not
seen), as every statement on the primary pays for the look.  A function
with side effects called from a ``SELECT`` is not seen: mark such a request
with ``db_write`` or ``response._db_write``.
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
#: What Django sends: these, upper-case, first.
_COMMON = {"SELECT": READ, "INSERT": WRITE, "UPDATE": WRITE, "DELETE": WRITE}
_LOCK_CLAUSE = re.compile(
    r"FOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b", re.IGNORECASE
)
_ANALYZE = re.compile(r"\bANALY[SZ]E\b", re.IGNORECASE)


def kind(sql: object) -> str:
    """``READ``, ``WRITE`` or ``LOCK`` for one statement's SQL."""
    if not isinstance(sql, str):
        return WRITE  # a composed statement: assume the worst
    word = sql[:6]
    common = _COMMON.get(word) if sql[6:7].isspace() else None
    if common is None:
        match = _FIRST_WORD.match(sql)
        if match is None:
            return WRITE
        word = match[1].upper()
        if word == "EXPLAIN":
            return WRITE if _ANALYZE.search(sql) else READ
        if word != "SELECT":
            return READ if word in _READS else WRITE
    elif common == WRITE:
        return WRITE
    return _select_kind(sql)


def _select_kind(sql: str) -> str:
    # A locking clause comes last: only its last "FOR" can start one, which
    # substring searches find far faster than a regular expression could.
    for keyword in ("FOR", "for"):
        at = sql.rfind(keyword)
        if at > 0 and _LOCK_CLAUSE.match(sql, at):
            return LOCK
    if " INTO " in sql or " into " in sql:
        return WRITE  # SELECT ... INTO makes a table
    return READ
