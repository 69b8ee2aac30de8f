from django.urls import path

from . import views

urlpatterns = [
    path("ping/", views.ping),
    path("rows/", views.rows),
    path("rows/<int:pk>/", views.row),
]
