"""The demo's views.  ``GET /notes/`` says which server answered it."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from .models import Note


def index(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"notes": "/notes/", "health": "/health/"})


def _server(alias: str) -> dict[str, Any]:
    """Ask the server behind ``alias`` (this thread's connection) who it is."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        port, in_recovery = cursor.fetchone()
    return {
        "server": "replica" if in_recovery else "primary",
        "port": port,
        "alias": alias,
    }


async def notes(request: HttpRequest) -> HttpResponse:
    """``GET``: the newest notes, and the server that read them; ``POST``: add
    one (form field ``text``).  An async view, using the async ORM."""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()[:200] or "(no text)"
        note = await Note.objects.acreate(text=text)
        return JsonResponse({"created": note.as_dict()}, status=201)
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "POST"])
    queryset = Note.objects.all()
    # Where the router sends this request's reads: the primary when the
    # request is pinned (the pin cookie), else the request's replica.
    alias = queryset.db
    listed = [note.as_dict() async for note in queryset[:20]]
    count = await queryset.acount()
    # Same thread as the async ORM's queries above, so the same connection.
    server = await sync_to_async(_server)(alias)
    body = {**server, "count": count, "notes": listed}
    return JsonResponse(body, json_dumps_params={"indent": 2})
