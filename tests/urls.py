from django.urls import path

from tests.app import views

urlpatterns = [
    path("read/", views.read),
    path("write-then-read/", views.write_then_read),
    path("async-read/", views.async_read),
    path("async-write-then-read/", views.async_write_then_read),
    path("decorated-write/", views.decorated_write),
    path("async-decorated-write/", views.async_decorated_write),
]
