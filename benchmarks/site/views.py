"""Sync views (Django runs them in a thread per request under ASGI).

Every read reports the server that answered it: its port
(``current_setting('port')``, which names the server behind a pooler too)
asked over the very connection that ran the read's SELECT, the alias of
that connection (which is the router's answer for the read), when the
SELECT was sent (``time.monotonic()``, a clock shared by every process on
Linux) and the process that served it.  A write reports the server that
took it the same way, and the primary's position once it has committed.  A
request that raises gets a JSON 500 (``server_error``) naming the error and
the alias of the database connection it failed on.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse

from . import TABLE
from .models import Row


class _Recorder:
    """An execute wrapper that remembers the connection that ran the read."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.at = 0.0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any
    ) -> Any:
        if TABLE in sql:
            self.connection = ctx["connection"]
            self.at = time.monotonic()
        return execute(sql, params, many, ctx)


#: The server's own port, wherever the client connected (a pooler, a socket).
PORT = "current_setting('port')::integer"


def _observe(queryset: QuerySet[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    recorder = _Recorder()
    with ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(recorder))
        result = list(queryset)
    connection = recorder.connection
    with connection.cursor() as cursor:
        # The newest row anyone wrote, as this server shows it just after
        # the read: monotonic reads compare it across a user's requests.
        cursor.execute(f"SELECT {PORT}, (SELECT coalesce(max(id), 0) FROM {TABLE})")
        port, newest = cursor.fetchone()
    seen = {
        "claim": connection.alias,
        "port": port,
        "at": recorder.at,
        "newest": newest,
    }
    return result, {**seen, "pid": os.getpid()}


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def rows(request: HttpRequest) -> HttpResponse:
    """``POST owner=U``: add a row; ``GET ?owner=U``: U's newest 20 rows' ids."""
    if request.method == "POST":
        row = Row.objects.create(owner=int(request.POST["owner"]), body="x" * 64)
        response = HttpResponse(status=201, content_type="application/json")
        # At once in autocommit; under ATOMIC_REQUESTS once the view's
        # transaction has committed, after the view returns.
        transaction.on_commit(lambda: _written(row, response), using=row._state.db)
        return response
    owner = int(request.GET["owner"])
    if settings.BENCH_GET_OR_CREATE:
        # A profile or a cart, on every page: found after the first visit.
        Row.objects.get_or_create(owner=owner, body="profile")
    page = Row.objects.filter(owner=owner).order_by("-id")[:20]
    ids, seen = _observe(page.values_list("id", flat=True))
    return JsonResponse({"ids": ids, **seen})


#: The end of the last WAL record inserted: the insert position, less the
#: page header it may already be past (40 bytes at the start of a segment,
#: 24 at the start of another page), which no replay position reaches until
#: more WAL comes.  Worked out here, not by the package under test.
RECORD_END = """
    SELECT pg_wal_lsn_diff(lsn, '0/0') - CASE
        WHEN (pg_walfile_name_offset(lsn)).file_offset = 40 THEN 40
        WHEN pg_wal_lsn_diff(lsn, '0/0')::bigint % 8192 = 24 THEN 24
        ELSE 0 END
    FROM (SELECT pg_current_wal_insert_lsn() AS lsn) AS current
"""


def _written(row: Row, response: HttpResponse) -> None:
    """The row's answer: the position a replica must replay to have it.

    From the insert position, not ``pg_current_wal_lsn()`` (the write
    position): after an asynchronous commit (``synchronous_commit = off``)
    the commit record may not be written yet, so only the insert position
    is sure to cover it.
    """
    with connections[row._state.db].cursor() as cursor:
        cursor.execute(f"SELECT ({RECORD_END}), {PORT}")
        lsn, port = cursor.fetchone()
    answer = {"id": row.pk, "lsn": int(lsn), "port": port, "claim": row._state.db}
    response.content = json.dumps(answer).encode()


def row(request: HttpRequest, pk: int) -> HttpResponse:
    """``GET``: whether row ``pk`` is there."""
    ids, seen = _observe(Row.objects.filter(pk=pk).values_list("id", flat=True))
    return JsonResponse({"found": bool(ids), **seen})


def probes(request: HttpRequest) -> HttpResponse:
    """This process, whether its health prober's thread runs, and the server
    backend behind each of the prober's connections (by alias).

    For the fork check of ``benchmarks.consistency``: forked workers must
    each probe over connections of their own.  It reads
    ``multidb.health``'s internals; ``backends`` is empty where they are
    not found.
    """
    from multidb import health

    backends = {}
    for alias, probe in getattr(health.registry, "_connections", {}).items():
        raw = getattr(getattr(probe, "wrapper", None), "connection", None)
        if raw is not None and not raw.closed:
            backends[alias] = raw.info.backend_pid
    running = any(t.name == "multidb-health" for t in threading.enumerate())
    return JsonResponse({"pid": os.getpid(), "prober": running, "backends": backends})


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: the error, and the alias of the connection it came from.

    Django calls it while handling the exception (after sending
    ``got_request_exception``, which multidb's health module listens to), so
    ``sys.exc_info()`` still holds it.
    """
    error = sys.exc_info()[1]
    alias = None
    traceback = error.__traceback__ if error is not None else None
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        # A connection, a cursor wrapper (.db), or Django's error wrapper.
        for candidate in (owner, getattr(owner, "db", None)):
            if isinstance(candidate, BaseDatabaseWrapper):
                alias = candidate.alias
        traceback = traceback.tb_next
    text = str(error).strip().splitlines()
    return JsonResponse(
        {
            "error": f"{type(error).__name__}: {text[0] if text else ''}",
            "alias": alias,
        },
        status=500,
    )
