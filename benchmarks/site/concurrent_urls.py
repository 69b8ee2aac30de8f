"""``ROOT_URLCONF`` of ``benchmarks.concurrency``'s server."""

from django.urls import path

import multidb.views

from .concurrent import views_for
from .models import Item

concurrent_reads, async_concurrent_reads = views_for(Item)

urlpatterns = [
    path("conc/sync/", concurrent_reads),
    path("conc/async/", async_concurrent_reads),
    # The server's readiness check: any answer means it is serving.
    path("health/db/", multidb.views.health),
]
