"""Views that report which server their database work ran on."""

from __future__ import annotations

import dataclasses
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, router, transaction
from django.db.models import Max
from django.http import HttpRequest, JsonResponse

import multidb
from benchmarks.site.concurrent import views_for
from multidb import this_thread_is_pinned
from tests.app.models import Item


def server_port(alias: str) -> int:
    """``inet_server_port()`` of the server behind ``alias``."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def create(request: HttpRequest) -> JsonResponse:
    """Create an item named ``name`` (from a POST, or the query string of a GET)."""
    name = (request.POST or request.GET)["name"]
    item = Item.objects.create(name=name)
    alias = router.db_for_write(Item)
    return JsonResponse({"pk": item.pk, "db": alias, "port": server_port(alias)})


def find(request: HttpRequest) -> JsonResponse:
    """Whether an item named ``name`` exists, read where the router says."""
    items = Item.objects.filter(name=request.GET["name"])
    found = items.exists()
    # A request reads from one database for its whole life, so this is the
    # database the query above went to.
    alias = items.db
    return JsonResponse(
        {
            "found": found,
            "db": alias,
            "port": server_port(alias),
            "pinned": this_thread_is_pinned(),
        }
    )


# --- views for the read-your-writes-by-position tests (test_tokens.py) ---------


def _lookup(name: str) -> dict[str, object]:
    """``find``'s answer, computed wherever it is called (a worker thread in
    the async views, so that routing runs there too)."""
    items = Item.objects.filter(name=name)
    found = items.exists()
    alias = items.db
    return {"found": found, "db": alias, "port": server_port(alias)}


def find_many(request: HttpRequest) -> JsonResponse:
    """``times`` separate reads of ``name``; where each one ran."""
    reads = []
    for _ in range(int(request.GET.get("times", "5"))):
        (row,) = Item.objects.raw(
            "SELECT inet_server_port() AS id, EXISTS"
            f" (SELECT 1 FROM {Item._meta.db_table} WHERE name = %s) AS found",
            [request.GET["name"]],
        )
        reads.append({"port": int(row.id), "found": row.found})
    return JsonResponse({"reads": reads})


def get_or_create_item(request: HttpRequest) -> JsonResponse:
    """A GET that writes through ``get_or_create``."""
    item, created = Item.objects.get_or_create(name=request.GET["name"])
    return JsonResponse({"pk": item.pk, "created": created})


def get_or_create_then_find(request: HttpRequest) -> JsonResponse:
    """``get_or_create`` (a cart, a profile), then a read of the same name:
    whether it created, and where the read went."""
    name = request.GET["name"]
    _, created = Item.objects.get_or_create(name=name)
    return JsonResponse({"created": created, **_lookup(name)})


async def async_get_or_create_then_find(request: HttpRequest) -> JsonResponse:
    name = request.GET["name"]
    _, created = await Item.objects.aget_or_create(name=name)
    return JsonResponse({"created": created, **await sync_to_async(_lookup)(name)})


def lock_then_find(request: HttpRequest) -> JsonResponse:
    """``select_for_update`` of ``name`` in a transaction that commits, or
    rolls back with ``rollback=1``; then where a read goes."""
    name = request.GET["name"]
    with transaction.atomic():
        locked = Item.objects.select_for_update().filter(name=name).exists()
        if request.GET.get("rollback"):
            transaction.set_rollback(True)
    return JsonResponse({"locked": locked, **_lookup(name)})


def save_item(request: HttpRequest) -> JsonResponse:
    """A GET that writes through ``Model.save()``."""
    item = Item(name=request.GET["name"])
    item.save()
    return JsonResponse({"pk": item.pk})


def token(request: HttpRequest) -> JsonResponse:
    """``write_token()``, after creating ``name`` if given (an API response)."""
    if "name" in request.GET:
        Item.objects.create(name=request.GET["name"])
    return JsonResponse({"token": multidb.write_token()})


async def async_token(request: HttpRequest) -> JsonResponse:
    """``awrite_token()``, after creating ``name`` if given."""
    if "name" in request.GET:
        await Item.objects.acreate(name=request.GET["name"])
    return JsonResponse({"token": await multidb.awrite_token()})


async def async_find(request: HttpRequest) -> JsonResponse:
    """``find`` in an async view: the read runs in the ORM's worker thread."""
    return JsonResponse(await sync_to_async(_lookup)(request.GET["name"]))


async def async_find_routed_on_the_loop(request: HttpRequest) -> JsonResponse:
    """Asks the router on the event loop thread first (``QuerySet.db``), then
    reads in the worker thread."""
    on_loop = Item.objects.all().db
    return JsonResponse(
        {"on_loop": on_loop, **await sync_to_async(_lookup)(request.GET["name"])}
    )


async def async_read_after(request: HttpRequest) -> JsonResponse:
    """Reads ``name`` inside ``read_after(token)``, in an async view."""
    with multidb.read_after(request.GET.get("token")):
        return JsonResponse(await sync_to_async(_lookup)(request.GET["name"]))


def read_then_time_out_on_the_primary(request: HttpRequest) -> JsonResponse:
    """Read from a replica, then hit a statement timeout on the primary: an
    ``OperationalError`` (SQLSTATE 57014) that says nothing about the replica."""
    Item.objects.exists()
    # SET LOCAL in a transaction: a plain SET could stay behind on a server
    # connection that PgBouncer (transaction pooling) hands to someone else.
    with transaction.atomic(using="default"), connections["default"].cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '10ms'")
        cursor.execute("SELECT pg_sleep(1)")
    return JsonResponse({})


# --- views for the concurrency tests (test_concurrency.py), the benchmark's own

concurrent_reads, async_concurrent_reads = views_for(Item)


# --- views for the configuration tests (test_configurations.py) -----------------


def create_with_async_commit(request: HttpRequest) -> JsonResponse:
    """``create``, committed asynchronously (``SET LOCAL synchronous_commit``)."""
    with transaction.atomic():
        with connections["default"].cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
        item = Item.objects.create(name=(request.POST or request.GET)["name"])
    return JsonResponse({"pk": item.pk})


def find_in_own_transaction(request: HttpRequest) -> JsonResponse:
    """``find``, inside a transaction the view opens itself."""
    with transaction.atomic():
        return find(request)


@transaction.non_atomic_requests
def find_non_atomic(request: HttpRequest) -> JsonResponse:
    """``find``, opted out of ``ATOMIC_REQUESTS``."""
    return find(request)


def write_then_find(request: HttpRequest) -> JsonResponse:
    """Create ``name``, then ``find`` it: the write pins the rest of the request."""
    Item.objects.create(name=request.GET["name"])
    return find(request)


# --- requests that cost the primary nothing, and writes the router never sees --


def validate_form(request: HttpRequest) -> JsonResponse:
    """A form that fails validation: 400, without touching a database."""
    from django import forms

    class NameForm(forms.Form):
        name = forms.CharField()

    form = NameForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    return JsonResponse({"name": form.cleaned_data["name"]})


def _raw_insert(name: str) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("INSERT INTO app_item (name) VALUES (%s)", [name])


def raw_insert(request: HttpRequest) -> JsonResponse:
    """Insert ``name`` with raw SQL on the primary's connection: the router
    never hears of it."""
    _raw_insert(request.POST["name"])
    return JsonResponse({"inserted": True})


async def async_raw_insert(request: HttpRequest) -> JsonResponse:
    await sync_to_async(_raw_insert)(request.POST["name"])
    return JsonResponse({"inserted": True})


# --- staleness bounds and the no-replica policy (test_levels.py) ---------------


def _lookup_or_503(name: str) -> JsonResponse:
    """``find``'s answer, or 503 when no replica may take the read."""
    try:
        return JsonResponse(_lookup(name))
    except multidb.NoReplicaAvailable as error:
        return JsonResponse({"error": str(error)}, status=503)


@multidb.use_replica(max_lag=2)
def find_within_2s(request: HttpRequest) -> JsonResponse:
    """``find``, for a whole view bounded to replicas at most 2 s behind."""
    return _lookup_or_503(request.GET["name"])


@multidb.use_replica(max_lag=2)
async def async_find_within_2s(request: HttpRequest) -> JsonResponse:
    """``find_within_2s`` as an async view (the ORM reads in a worker thread)."""
    return await sync_to_async(_lookup_or_503)(request.GET["name"])


def find_or_503(request: HttpRequest) -> JsonResponse:
    """``find``, answering 503 when ``MULTIDB_NO_REPLICA = "error"`` raises."""
    return _lookup_or_503(request.GET["name"])


async def async_find_or_503(request: HttpRequest) -> JsonResponse:
    return await sync_to_async(_lookup_or_503)(request.GET["name"])


# --- catch-up waits and monotonic reads (test_waits.py) -----------------------


def _newest() -> dict[str, object]:
    """The newest item's pk where the router sends the read, and that
    server's port; computed wherever it is called."""
    items = Item.objects.all()
    newest = items.aggregate(newest=Max("pk"))["newest"] or 0
    alias = items.db
    return {"newest": newest, "db": alias, "port": server_port(alias)}


def newest(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_newest())


async def async_newest(request: HttpRequest) -> JsonResponse:
    """``newest`` in an async view: the read runs in the ORM's worker thread."""
    return JsonResponse(await sync_to_async(_newest)())


# --- background tasks that carry the writes (test_celery.py) -------------------


def _enqueue_args(request: HttpRequest) -> tuple[str, str, bool]:
    data = request.POST or request.GET
    return data["name"], data["report"], data.get("until_replica") == "1"


def create_and_enqueue(request: HttpRequest) -> JsonResponse:
    """Create item ``name`` (unless ``read_only``), then queue a Celery task
    that reads it and appends where it read to the file ``report``."""
    from tests.postgres.tasks import read_item

    name, report, until_replica = _enqueue_args(request)
    if "read_only" not in request.GET:
        Item.objects.create(name=name)
    read_item.delay(name, report, until_replica)
    return JsonResponse({})


async def async_create_and_enqueue(request: HttpRequest) -> JsonResponse:
    """``create_and_enqueue`` in an async view: the task is queued from a
    worker thread, or with ``on_loop`` on the event loop itself."""
    from tests.postgres.tasks import read_item

    name, report, until_replica = _enqueue_args(request)
    await Item.objects.acreate(name=name)
    if "on_loop" in request.GET:
        read_item.delay(name, report, until_replica)
    else:
        await sync_to_async(read_item.delay)(name, report, until_replica)
    return JsonResponse({})


def _stored(result: Any) -> JsonResponse:
    """What a backend stores of an enqueued Django task, as JSON."""
    return JsonResponse(
        {
            "path": result.task.module_path,
            "args": list(result.args),
            "kwargs": result.kwargs,
        }
    )


def create_and_enqueue_django_task(request: HttpRequest) -> JsonResponse:
    """Create item ``name``, then enqueue a Django task that reads it."""
    from tests.app.jobs import read_item

    name = request.POST["name"]
    Item.objects.create(name=name)
    return _stored(read_item.enqueue(name))


async def async_create_and_enqueue_django_task(request: HttpRequest) -> JsonResponse:
    """The same from an async view, with ``aenqueue`` and an async task."""
    from tests.app.jobs import aread_item

    name = request.POST["name"]
    await Item.objects.acreate(name=name)
    return _stored(await aread_item.aenqueue(name))


# --- multidb.explain() in a view (test_explain.py) --------------------------------


def _explained(found: multidb.Explanation, alias: str) -> dict[str, Any]:
    """``found``'s fields and outcome, and the port of the server behind
    ``alias`` (where the view's read went)."""
    return {
        **dataclasses.asdict(found),
        "outcome": found.outcome,
        "db": alias,
        "port": server_port(alias),
        "pinned": this_thread_is_pinned(),
    }


def explain_find(request: HttpRequest) -> JsonResponse:
    """Read ``name``, then ``multidb.explain()`` (``explain=before``: first)."""
    before = multidb.explain()
    items = Item.objects.filter(name=request.GET["name"])
    items.exists()
    found = before if request.GET.get("explain") == "before" else multidb.explain()
    return JsonResponse(_explained(found, items.db))


def explain_write(request: HttpRequest) -> JsonResponse:
    """Create ``name`` (a POST), then ``multidb.explain()``."""
    Item.objects.create(name=request.POST["name"])
    items = Item.objects.filter(name=request.POST["name"])
    items.exists()
    return JsonResponse(_explained(multidb.explain(), items.db))


def explain_in_own_transaction(request: HttpRequest) -> JsonResponse:
    """``explain_find`` inside a transaction the view opens itself."""
    with transaction.atomic():
        return explain_find(request)


async def async_explain_find(request: HttpRequest) -> JsonResponse:
    """Read ``name`` in the ORM's worker thread, then ``await aexplain()``."""
    items = Item.objects.filter(name=request.GET["name"])
    await items.aexists()
    found = await multidb.aexplain()
    alias = await sync_to_async(lambda: items.db)()
    return JsonResponse(await sync_to_async(_explained)(found, alias))
