"""The views of ``benchmarks.concurrency``: which server every read ran on.

Made by ``views_for(model)`` for any model with a ``name`` field, so that
``tests/postgres`` serves the same views over its own table; the benchmark's
server serves them over ``benchmarks.site.models.Item``
(``benchmarks/site/concurrent_urls.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.db.models import BooleanField, IntegerField, Model, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, JsonResponse

from multidb import this_thread_is_pinned
from multidb.pinning import RequestState, current_request

#: The one row every concurrency read selects (with the answering server's
#: port): a plain ``QuerySet`` read, so the instance's ``_state.db`` is the
#: alias of the very connection that ran the SELECT.
SENTINEL = "concurrency-sentinel"
#: Reads per request.
CONCURRENT_READS = 4


def _observed(row: Any, state: RequestState | None) -> dict[str, object]:
    return {
        "db": row._state.db,
        "port": row.port,
        "found": row.found,
        "pinned": this_thread_is_pinned(),
        # The routing state is still this request's own, not another's.
        "own": state is not None and current_request() is state,
    }


def _write_requested(request: HttpRequest) -> bool:
    return "write" in request.GET or "write" in request.POST


def views_for(model: type[Model]) -> tuple[Any, Any]:
    """The sync and the async view, reading and writing rows of ``model``."""
    manager: Any = model._default_manager

    def probe(name: str) -> QuerySet[Any]:
        """The sentinel, with the port of the server that answered and
        whether a row named ``name`` exists there."""
        queryset: QuerySet[Any] = manager.filter(name=SENTINEL).annotate(
            port=RawSQL("inet_server_port()", (), output_field=IntegerField()),
            found=RawSQL(
                f"EXISTS (SELECT 1 FROM {model._meta.db_table} WHERE name = %s)",
                (name,),
                output_field=BooleanField(),
            ),
        )
        return queryset

    def concurrent_reads(request: HttpRequest) -> JsonResponse:
        """``CONCURRENT_READS`` reads, after creating a row named ``name`` if
        ``write`` is given (in the query string or the form)."""
        state = current_request()
        name = request.GET["name"]
        if _write_requested(request):
            manager.create(name=name)
        reads = [_observed(probe(name).get(), state) for _ in range(CONCURRENT_READS)]
        return JsonResponse({"rid": request.GET["rid"], "reads": reads})

    async def async_concurrent_reads(request: HttpRequest) -> JsonResponse:
        """``concurrent_reads`` with the async ORM, yielding to the event loop
        before every read."""
        state = current_request()
        name = request.GET["name"]
        if _write_requested(request):
            await manager.acreate(name=name)
        reads = []
        for _ in range(CONCURRENT_READS):
            await asyncio.sleep(0)
            reads.append(_observed(await probe(name).aget(), state))
        return JsonResponse({"rid": request.GET["rid"], "reads": reads})

    return concurrent_reads, async_concurrent_reads
