from __future__ import annotations

import importlib.util
from typing import Any

from django.core.checks import CheckMessage, Error


def opentelemetry_installed() -> bool:
    # ``opentelemetry`` is a namespace package that other distributions
    # share: look for the API's own module (which imports only that namespace).
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:  # no opentelemetry package at all
        return False


def check_opentelemetry_api(**kwargs: Any) -> list[CheckMessage]:
    if opentelemetry_installed():
        return []
    return [
        Error(
            '"multidb.contrib.opentelemetry" is in INSTALLED_APPS but '
            "opentelemetry-api is not installed: no span gets multidb's "
            "attributes.",
            hint="pip install 'django-replica-router[opentelemetry]', or remove "
            "the app from INSTALLED_APPS.",
            id="multidb.E035",
        )
    ]
