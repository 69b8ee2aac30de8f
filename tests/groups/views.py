"""For each group's model (``Item`` on ``default``, ``Invoice`` on
``billing``): a read that answers which server ran it, and a POST that
creates a row."""

from __future__ import annotations

from django.db.models import Model
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from tests.app.models import Item
from tests.billing.models import Invoice


def _port_of(model: type[Model]) -> int:
    # A raw query runs on the connection the router picks for a read of
    # ``model``, without needing its table.
    (row,) = model._default_manager.raw("SELECT inet_server_port() AS id")
    return int(row.pk)


def _answering_port(model: type[Model]) -> JsonResponse:
    return JsonResponse({"port": _port_of(model)})


@require_GET
def read_items(request: HttpRequest) -> JsonResponse:
    return _answering_port(Item)


@require_POST
def create_item(request: HttpRequest) -> JsonResponse:
    item = Item.objects.create(name=request.POST.get("name", "item"))
    return JsonResponse({"id": item.pk}, status=201)


@require_GET
def read_invoices(request: HttpRequest) -> JsonResponse:
    return _answering_port(Invoice)


@require_POST
def create_invoice(request: HttpRequest) -> JsonResponse:
    invoice = Invoice.objects.create(
        number=int(request.POST.get("number", "1")),
        note=request.POST.get("note", ""),
    )
    return JsonResponse({"id": invoice.pk}, status=201)


@require_GET
def read_both(request: HttpRequest) -> JsonResponse:
    """Which server answered a read of each group's model."""
    return JsonResponse({"item": _port_of(Item), "invoice": _port_of(Invoice)})


@require_POST
def create_invoice_then_read_both(request: HttpRequest) -> JsonResponse:
    """A write to ``billing``, then a read of each group's model."""
    Invoice.objects.create(number=7, note="then read")
    return JsonResponse({"item": _port_of(Item), "invoice": _port_of(Invoice)})
