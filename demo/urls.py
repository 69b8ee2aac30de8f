from django.urls import path

from demo.notes import views
from multidb.views import health

urlpatterns = [
    path("", views.index),
    path("notes/", views.notes),
    path("health/", health),
]
