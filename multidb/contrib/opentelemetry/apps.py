from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from .checks import check_opentelemetry_api, opentelemetry_installed


class OpenTelemetryConfig(AppConfig):
    name = "multidb.contrib.opentelemetry"
    label = "multidb_opentelemetry"
    verbose_name = "Replica router tracing"

    def ready(self) -> None:
        checks.register(check_opentelemetry_api, "multidb")
        # Without it, manage.py check says so (multidb.E035); the site runs.
        if opentelemetry_installed():
            from .tracing import install

            install()
