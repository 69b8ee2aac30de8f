"""Settings of the demo site: a PostgreSQL primary (``default``) and one
streaming replica (``replica``) on 127.0.0.1, at the ports given by the
environment variables ``MULTIDB_DEMO_PRIMARY_PORT`` and
``MULTIDB_DEMO_REPLICA_PORT`` (``python -m demo`` sets them).

With ``MULTIDB_DEMO_BILLING_PORT`` and ``MULTIDB_DEMO_BILLING_REPLICA_PORT``
set too (``python -m demo --groups``), a second, independent primary
``billing`` and its replica ``billing_r1`` form a second replica group, and
the ``invoices`` app lives on ``billing``.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def _port(name: str) -> str:
    try:
        return str(int(os.environ[name]))
    except (KeyError, ValueError):
        raise ImproperlyConfigured(
            f"{name} must be set to a port number; run the demo with "
            "`./run.sh demo` or `python -m demo`, which start the servers."
        ) from None


def database(port: str, **extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": port,
        "USER": "postgres",
        "PASSWORD": "",
        "NAME": "postgres",
        "OPTIONS": {"connect_timeout": 2},
        **extra,
    }


SECRET_KEY = "django-replica-router-demo (not secret)"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": database(_port("MULTIDB_DEMO_PRIMARY_PORT")),
    # Not needed by the demo, which runs no tests; it keeps check W005 quiet.
    "replica": database(_port("MULTIDB_DEMO_REPLICA_PORT"), TEST={"MIRROR": "default"}),
}
REPLICA_DATABASES = ["replica"]
DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
# multidb.contrib.prometheus: the scenario ends with an excerpt of /metrics/.
INSTALLED_APPS = ["multidb", "multidb.contrib.prometheus", "demo.notes"]

#: ``python -m demo --groups``: a second primary with a replica of its own.
GROUPS = "MULTIDB_DEMO_BILLING_PORT" in os.environ
if GROUPS:
    DATABASES["billing"] = database(_port("MULTIDB_DEMO_BILLING_PORT"))
    DATABASES["billing_r1"] = database(
        _port("MULTIDB_DEMO_BILLING_REPLICA_PORT"), TEST={"MIRROR": "billing"}
    )
    # The default group stays REPLICA_DATABASES, its shorthand: naming it
    # here as well would be an error.
    MULTIDB_REPLICA_GROUPS = {"billing": ["billing_r1"]}
    MULTIDB_PRIMARY_FOR = {"invoices": "billing"}
    INSTALLED_APPS.append("demo.invoices")
MIDDLEWARE = [
    "multidb.middleware.PinningRouterMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "demo.urls"

# Probe the servers twice a second.  The replica applies WAL 1 s late on
# purpose, which is well within the lag limit: it stays in the rotation.
MULTIDB_HEALTH_CHECK_INTERVAL = 0.5
MULTIDB_REPLICA_MAX_LAG = 30

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "   [%(name)s] %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "multidb": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}
