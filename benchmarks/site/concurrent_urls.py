"""``ROOT_URLCONF`` of ``benchmarks.concurrency``'s server."""

from django.urls import path

import multidb.views

from .concurrent import views_for
from .models import Item
from .views import ping

concurrent_reads, async_concurrent_reads = views_for(Item)

urlpatterns = [
    # Answers once the server serves (``benchmarks.load.Server``).
    path("ping/", ping),
    path("conc/sync/", concurrent_reads),
    path("conc/async/", async_concurrent_reads),
    path("health/db/", multidb.views.health),
]
