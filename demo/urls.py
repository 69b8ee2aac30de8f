from django.apps import apps
from django.urls import path

from demo.notes import views
from multidb.views import health

urlpatterns = [
    path("", views.index),
    path("notes/", views.notes),
    path("health/", health),
]

if apps.is_installed("demo.invoices"):
    from demo.invoices.views import invoices

    urlpatterns.append(path("invoices/", invoices))
