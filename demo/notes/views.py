"""The demo's views.  ``GET /notes/`` says which server answered it."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.apps import apps
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

import multidb
from demo.servers import which

from .models import Note


def index(request: HttpRequest) -> HttpResponse:
    paths = {"notes": "/notes/", "health": "/health/"}
    if apps.is_installed("demo.invoices"):
        paths["invoices"] = "/invoices/"
    return JsonResponse(paths)


async def notes(request: HttpRequest) -> HttpResponse:
    """``GET``: the newest notes, and the server that read them; ``POST``: add
    one (form field ``text``).  An async view, using the async ORM."""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()[:200] or "(no text)"
        note = await Note.objects.acreate(text=text)
        return JsonResponse(
            {"created": note.as_dict(), **await _explained()}, status=201
        )
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "POST"])
    queryset = Note.objects.all()
    # Where the router sends this request's reads: the primary when the
    # request is pinned (the pin cookie), else the request's replica.
    alias = queryset.db
    listed = [note.as_dict() async for note in queryset[:20]]
    count = await queryset.acount()
    # Same thread as the async ORM's queries above, so the same connection.
    server = await sync_to_async(which)(alias)
    body = {**server, "count": count, "notes": listed, **await _explained()}
    return JsonResponse(body, json_dumps_params={"indent": 2})


async def _explained() -> dict[str, str]:
    """Why this request's reads went where they did (``multidb.aexplain()``)."""
    found = await multidb.aexplain()
    return {"outcome": found.outcome, "explain": str(found)}
