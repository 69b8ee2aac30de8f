"""Views that report which server their database work ran on."""

from __future__ import annotations

from django.db import connections, router
from django.http import HttpRequest, JsonResponse

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
