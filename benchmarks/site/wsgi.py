"""``gunicorn benchmarks.site.wsgi:application``.

With ``warm_up`` in the site's settings, the import also reads through the
router and probes every database once, as an app that touches its
databases at start-up does: under ``gunicorn --preload`` that happens in
the master, so the workers are forked with the router's rotation built, the
prober's thread started and its connections open (what
``multidb.health``'s at-fork handlers must start over from).
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.site.settings")
application = get_wsgi_application()


def _warm_up() -> None:
    from multidb import health

    from .models import Row

    list(Row.objects.values_list("id", flat=True)[:1])
    health.probe_now()


if settings.BENCH_WARM_UP:
    _warm_up()
