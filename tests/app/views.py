"""Views that report where their reads went."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from multidb import db_write, this_thread_is_pinned

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
