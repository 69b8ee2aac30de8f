from django.urls import path

from tests.postgres import views

urlpatterns = [
    path("create/", views.create),
    path("find/", views.find),
]
