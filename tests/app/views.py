"""Views that report where their reads went."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async
from django.db import connections, router
from django.http import HttpRequest, HttpResponse, JsonResponse

import multidb
from multidb import db_write, pinning, this_thread_is_pinned
from multidb.conf import conf
from multidb.pinning import mark_as_write, pin_this_thread

from .models import Item


def read(request: HttpRequest) -> JsonResponse:
    dbs = [Item.objects.all().db for _ in range(3)]
    return JsonResponse({"dbs": dbs, "pinned": this_thread_is_pinned()})


def write_then_read(request: HttpRequest) -> JsonResponse:
    before = Item.objects.all().db
    Item.objects.create(name="written")
    after = Item.objects.all().db
    return JsonResponse({"before": before, "after": after})


async def async_read(request: HttpRequest) -> JsonResponse:
    count = await Item.objects.acount()
    return JsonResponse(
        {"db": Item.objects.all().db, "count": count, "pinned": this_thread_is_pinned()}
    )


async def async_write_then_read(request: HttpRequest) -> JsonResponse:
    before = Item.objects.all().db
    await Item.objects.acreate(name="written")
    after = Item.objects.all().db
    return JsonResponse({"before": before, "after": after})


@db_write
def decorated_write(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"db": Item.objects.all().db})


@db_write
async def async_decorated_write(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"db": Item.objects.all().db})


# --- views for the pinning, middleware and ASGI-server tests ------------------

#: Optional ``asyncio.Barrier`` that ``async_read_many`` waits on between its
#: reads, so that a test can force concurrent requests to interleave.
READ_BARRIER: asyncio.Barrier | None = None
#: Bounds every wait on ``READ_BARRIER``, in seconds.
BARRIER_TIMEOUT = 5.0


def _routing() -> dict[str, object]:
    return {"pinned": this_thread_is_pinned(), "thread": threading.get_ident()}


def read_many(request: HttpRequest) -> JsonResponse:
    """Five routing decisions, without touching the database."""
    dbs = [Item.objects.all().db for _ in range(5)]
    return JsonResponse({"dbs": dbs, **_routing()})


async def async_read_many(request: HttpRequest) -> JsonResponse:
    """Five routing decisions with awaits (and the optional barrier) between."""
    dbs = []
    for _ in range(5):
        dbs.append(Item.objects.all().db)
        await asyncio.sleep(0)
        if READ_BARRIER is not None:
            await asyncio.wait_for(READ_BARRIER.wait(), BARRIER_TIMEOUT)
    return JsonResponse({"dbs": dbs, **_routing()})


async def async_query_many(request: HttpRequest) -> JsonResponse:
    """Three real queries (run in a worker thread) with awaits between."""
    counts = []
    for _ in range(3):
        counts.append(await Item.objects.acount())
        await asyncio.sleep(0)
    return JsonResponse({"counts": counts, "db": Item.objects.all().db, **_routing()})


def get_or_create_then_read(request: HttpRequest) -> JsonResponse:
    before = Item.objects.all().db
    Item.objects.get_or_create(name="got-or-created")
    after = Item.objects.all().db
    return JsonResponse({"before": before, "after": after})


def save_then_read(request: HttpRequest) -> JsonResponse:
    item = Item(name="unsaved")
    before = Item.objects.all().db
    item.save()
    after = Item.objects.all().db
    return JsonResponse({"before": before, "after": after})


async def async_create_then_query(request: HttpRequest) -> JsonResponse:
    """A write then reads in the worker thread: the reads must follow the write."""
    before = Item.objects.all().db
    created = await Item.objects.acreate(name="written")
    count = await Item.objects.acount()
    item = await Item.objects.aget(pk=created.pk)
    return JsonResponse(
        {
            "before": before,
            "after": Item.objects.all().db,
            "count": count,
            "pk": item.pk,
        }
    )


def marked_write(request: HttpRequest) -> JsonResponse:
    """Marks its response as a write, then keeps reading."""
    response = mark_as_write(JsonResponse({}))
    dbs = [Item.objects.all().db for _ in range(3)]
    response.content = JsonResponse({"dbs": dbs, **_routing()}).content
    return response


def pin_then_fail(request: HttpRequest) -> HttpResponse:
    """Pins its context, then fails with a 500."""
    pin_this_thread()
    Item.objects.all().db  # noqa: B018  (a routing decision)
    raise RuntimeError("view failed after pinning")


def thread_info(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_routing())


async def async_thread_info(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {**_routing(), "in_request": pinning.current_request() is not None}
    )


def _write_scratch() -> str:
    alias = router.db_for_write(Item)
    with connections[alias].cursor() as cursor:
        # A write of this connection's own: SQLite locks no shared table.
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS multidb_scratch (x integer)")
    return alias


async def async_write(request: HttpRequest) -> JsonResponse:
    """Runs a statement that writes, to a temporary table of its own
    connection (concurrent writers into SQLite's shared-cache in-memory test
    database fail with "database table is locked")."""
    before = Item.objects.all().db
    await asyncio.sleep(0)
    write = await sync_to_async(_write_scratch)()
    await asyncio.sleep(0)
    return JsonResponse(
        {"before": before, "write": write, "after": Item.objects.all().db}
    )


# --- views for the token tests (tests/test_tokens.py) -------------------------


def write_token_view(request: HttpRequest) -> JsonResponse:
    """``write_token()``, after creating ``name`` if given."""
    if "name" in request.GET:
        Item.objects.create(name=request.GET["name"])
    return JsonResponse({"token": multidb.write_token(), **_routing()})


async def async_write_token_view(request: HttpRequest) -> JsonResponse:
    """``awrite_token()``, after creating ``name`` if given."""
    if "name" in request.GET:
        await Item.objects.acreate(name=request.GET["name"])
    return JsonResponse({"token": await multidb.awrite_token()})


# --- views for the fuzz tests (tests/test_fuzz.py) -----------------------------


def _seen(request: HttpRequest) -> dict[str, object]:
    """The pin cookie and token header as the middleware saw them, and the
    pin it gave the request ("TIME_PIN", None, or a position)."""
    header = conf.PINNING_HEADER
    state = pinning.current_request()
    return {
        "cookie": request.COOKIES.get(conf.PINNING_COOKIE),
        "header": request.headers.get(header) if header else None,
        # TIME_PIN is no JSON value: its name stands for it.
        "pin": None if state is None else _json_pin(state.pinned),
    }


def _json_pin(pin: pinning.Pin) -> object:
    return "TIME_PIN" if pin is pinning.TIME_PIN else pin


def fuzz_read_many(request: HttpRequest) -> JsonResponse:
    """``read_many``, and what the middleware made of the request."""
    dbs = [Item.objects.all().db for _ in range(5)]
    return JsonResponse({"dbs": dbs, **_routing(), **_seen(request)})


async def async_fuzz_read_many(request: HttpRequest) -> JsonResponse:
    """``fuzz_read_many`` with awaits between the routing decisions."""
    dbs = []
    for _ in range(5):
        dbs.append(Item.objects.all().db)
        await asyncio.sleep(0)
    return JsonResponse({"dbs": dbs, **_routing(), **_seen(request)})


def names(request: HttpRequest) -> JsonResponse:
    """The names of all items, read where the router says, and that database."""
    items = Item.objects.order_by("name")
    return JsonResponse({"db": items.db, "names": [item.name for item in items]})
