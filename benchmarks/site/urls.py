from django.conf import settings
from django.urls import path

from . import views

handler500 = views.server_error

urlpatterns = [
    path("ping/", views.ping),
    path("rows/", views.rows),
    path("rows/<int:pk>/", views.row),
]

if settings.DATABASE_ROUTERS[0].startswith("multidb."):
    from multidb.views import health

    urlpatterns += [path("health/db/", health), path("probes/", views.probes)]
