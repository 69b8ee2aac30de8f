"""``/invoices/``: the app that lives on the ``billing`` primary.  Its reads
say which server answered them, as ``/notes/`` does."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from demo.servers import which

from .models import Invoice


def invoices(request: HttpRequest) -> HttpResponse:
    """``GET``: the newest invoices, and the server that read them; ``POST``:
    add one (form fields ``customer`` and ``amount``).  A sync view, unlike
    ``/notes/``: under uvicorn Django runs it in a worker thread."""
    if request.method == "POST":
        customer = request.POST.get("customer", "").strip()[:100] or "(nobody)"
        try:
            amount = Decimal(request.POST.get("amount", "0")).quantize(Decimal("0.01"))
        except InvalidOperation:
            return JsonResponse({"error": "amount must be a number"}, status=400)
        if not amount.is_finite() or abs(amount) >= 10**8:
            return JsonResponse({"error": "amount out of range"}, status=400)
        invoice = Invoice.objects.create(customer=customer, amount=amount)
        return JsonResponse({"created": invoice.as_dict()}, status=201)
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "POST"])
    queryset = Invoice.objects.all()
    # The billing primary when the request is pinned to it, else the
    # request's billing replica.
    alias = queryset.db
    listed = [invoice.as_dict() for invoice in queryset[:20]]
    body = {**which(alias), "count": queryset.count(), "invoices": listed}
    return JsonResponse(body, json_dumps_params={"indent": 2})
