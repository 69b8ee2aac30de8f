from __future__ import annotations

import importlib.util
from typing import Any

from django.core.checks import CheckMessage, Error


def prometheus_client_installed() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def check_prometheus_client(**kwargs: Any) -> list[CheckMessage]:
    if prometheus_client_installed():
        return []
    return [
        Error(
            '"multidb.contrib.prometheus" is in INSTALLED_APPS but '
            "prometheus_client is not installed: no metric is exported.",
            hint="pip install 'django-replica-router[prometheus]', or remove "
            "the app from INSTALLED_APPS.",
            id="multidb.E034",
        )
    ]
