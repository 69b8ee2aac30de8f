from django.urls import path

import multidb.views
from tests.groups import views

urlpatterns = [
    path("items/", views.read_items),
    path("items/create/", views.create_item),
    path("invoices/", views.read_invoices),
    path("invoices/create/", views.create_invoice),
    path("both/", views.read_both),
    path("health/db/", multidb.views.health),
    path("invoices/create-then-read/", views.create_invoice_then_read_both),
]
