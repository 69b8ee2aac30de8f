"""Settings of the benchmark site; see ``benchmarks/site/__init__.py``.

``MULTIDB_BENCH_SITE`` holds ``ports`` (``{alias: port}`` for ``default``,
``replica_a`` and ``replica_b`` on 127.0.0.1), ``router`` (``"seed"`` or
``"ours"``), ``pin_seconds``, and for ours ``mode`` and ``health_interval``.
"""

from __future__ import annotations

import json
import os
from typing import Any

_site = json.loads(os.environ["MULTIDB_BENCH_SITE"])


def _database(port: int) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "USER": "postgres",
        "PASSWORD": "",
        "NAME": "postgres",
        "OPTIONS": {"connect_timeout": 2},
    }


SECRET_KEY = "django-replica-router consistency benchmark (not secret)"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.site.urls"
INSTALLED_APPS = ["benchmarks.site"]
DATABASES = {alias: _database(port) for alias, port in _site["ports"].items()}
REPLICA_DATABASES = [alias for alias in DATABASES if alias != "default"]
MULTIDB_PINNING_SECONDS = int(_site["pin_seconds"])

if _site["router"] == "seed":
    DATABASE_ROUTERS = ["multidb_seed.PinningReplicaRouter"]
    MIDDLEWARE = ["multidb_seed.middleware.PinningRouterMiddleware"]
else:
    DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
    MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
    MULTIDB_PINNING_MODE = _site["mode"]
    MULTIDB_HEALTH_CHECK_INTERVAL = float(_site["health_interval"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
