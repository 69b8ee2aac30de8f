"""Django tasks (``multidb.contrib.tasks``) that report where they read."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from multidb.contrib.tasks import task
from tests.app.models import Item


def where(alias: str) -> dict[str, Any]:
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return {"db": alias}
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return {"db": alias, "port": cursor.fetchone()[0]}


@task
def read_item(name: str) -> dict[str, Any]:
    items = Item.objects.filter(name=name)
    return {"found": items.exists(), **where(items.db)}


@task()
async def aread_item(name: str) -> dict[str, Any]:
    items = Item.objects.filter(name=name)
    found = await items.aexists()
    return {"found": found, **await sync_to_async(where)(items.db)}
