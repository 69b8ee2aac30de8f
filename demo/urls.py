from django.apps import apps
from django.http import HttpRequest, HttpResponse
from django.urls import path
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from demo.notes import views
from multidb.views import health


def metrics(request: HttpRequest) -> HttpResponse:
    """prometheus_client's default registry, where multidb.contrib.prometheus
    puts its metrics (django-prometheus's /metrics view serves the same)."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


urlpatterns = [
    path("", views.index),
    path("notes/", views.notes),
    path("health/", health),
    path("metrics/", metrics),
]

if apps.is_installed("demo.invoices"):
    from demo.invoices.views import invoices

    urlpatterns.append(path("invoices/", invoices))
