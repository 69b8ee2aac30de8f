from django.urls import path

from tests.groups import views

urlpatterns = [
    path("items/", views.read_items),
    path("items/create/", views.create_item),
    path("invoices/", views.read_invoices),
    path("invoices/create/", views.create_invoice),
]
