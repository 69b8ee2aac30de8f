from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from .checks import check_prometheus_client, prometheus_client_installed


class PrometheusConfig(AppConfig):
    name = "multidb.contrib.prometheus"
    label = "multidb_prometheus"
    verbose_name = "Replica router metrics"

    def ready(self) -> None:
        checks.register(check_prometheus_client, "multidb")
        # Without it, manage.py check says so (multidb.E034); the site runs.
        if prometheus_client_installed():
            from .metrics import install

            install()
