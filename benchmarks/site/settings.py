"""Settings of the benchmark site; see ``benchmarks/site/__init__.py``.

``MULTIDB_BENCH_SITE`` holds ``ports`` (``{alias: port}`` for ``default``
and the replicas, on 127.0.0.1; every alias but ``default`` is a replica),
``router`` (``"seed"`` or ``"ours"``), ``pin_seconds``, and for ours
``mode`` and ``health_interval``.  Optional, for ``benchmarks.faults``:
``health_timeout`` (``MULTIDB_HEALTH_CHECK_TIMEOUT``), ``max_lag``
(``MULTIDB_REPLICA_MAX_LAG``, ``null`` for no limit), ``conn_max_age``
(``CONN_MAX_AGE``, default 0), and ``options``/``replica_options``: libpq
options added to every database's ``OPTIONS``, or only the replicas'.
Optional, for the configuration matrix of ``benchmarks.consistency``:
``user`` (the role every alias connects as, default ``postgres``),
``atomic_requests`` (``ATOMIC_REQUESTS`` on ``default``), ``databases``
(``{alias: entry}``, merged over each alias' entry, ``OPTIONS`` included:
a pooler's host and port), ``warm_up`` (under WSGI, read through the
router and probe once at import, see ``benchmarks/site/wsgi.py``),
``catch_up_wait`` (``MULTIDB_CATCH_UP_WAIT``) and ``monotonic_reads``
(``MULTIDB_MONOTONIC_READS``).
"""

from __future__ import annotations

import json
import os
from typing import Any

_site = json.loads(os.environ["MULTIDB_BENCH_SITE"])


def _database(alias: str, port: int) -> dict[str, Any]:
    options = {"connect_timeout": 2, **_site.get("options", {})}
    if alias != "default":
        options.update(_site.get("replica_options", {}))
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "USER": _site.get("user", "postgres"),
        "PASSWORD": "",
        "NAME": "postgres",
        "CONN_MAX_AGE": _site.get("conn_max_age", 0),
        "ATOMIC_REQUESTS": alias == "default" and _site.get("atomic_requests", False),
    }
    override = dict(_site.get("databases", {}).get(alias, {}))
    options.update(override.pop("OPTIONS", {}))
    return {**entry, **override, "OPTIONS": options}


SECRET_KEY = "django-replica-router consistency benchmark (not secret)"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.site.urls"
INSTALLED_APPS = ["benchmarks.site"]
DATABASES = {alias: _database(alias, port) for alias, port in _site["ports"].items()}
REPLICA_DATABASES = [alias for alias in DATABASES if alias != "default"]
MULTIDB_PINNING_SECONDS = int(_site["pin_seconds"])
#: Read by ``benchmarks/site/wsgi.py``.
BENCH_WARM_UP = bool(_site.get("warm_up", False))
#: Read by ``benchmarks/site/views.py``: every page read first runs
#: ``get_or_create`` of the user's profile row (rows o0 and o).
BENCH_GET_OR_CREATE = bool(_site.get("get_or_create", False))

if _site["router"] == "seed":
    DATABASE_ROUTERS = ["multidb_seed.PinningReplicaRouter"]
    MIDDLEWARE = ["multidb_seed.middleware.PinningRouterMiddleware"]
else:
    DATABASE_ROUTERS = [
        "benchmarks.site.routers.PinOnWriteRouting"
        if _site.get("pin_on_write_routing")
        else "multidb.PinningReplicaRouter"
    ]
    MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
    MULTIDB_PINNING_MODE = _site["mode"]
    MULTIDB_HEALTH_CHECK_INTERVAL = float(_site["health_interval"])
    # The fault benchmark's monitor reads each database's state off the
    # health view, on loopback.
    MULTIDB_HEALTH_DETAILS = "always"
    if "health_timeout" in _site:
        MULTIDB_HEALTH_CHECK_TIMEOUT = float(_site["health_timeout"])
    if "max_lag" in _site:
        MULTIDB_REPLICA_MAX_LAG = _site["max_lag"]
    MULTIDB_CATCH_UP_WAIT = _site.get("catch_up_wait", 0)
    MULTIDB_MONOTONIC_READS = bool(_site.get("monotonic_reads", False))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "multidb": {"handlers": ["console"], "level": "INFO"},
    },
}
