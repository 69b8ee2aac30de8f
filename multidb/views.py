"""``health``: a JSON view of the databases, for load balancers and probes.

path("health/db/", multidb.views.health)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from . import health as health_module
from .conf import conf


def report() -> tuple[bool, dict[str, Any]]:
    """Whether the databases are healthy, and the figures that say so.

    Uses the background prober's results while they are fresh, and probes
    now otherwise (health checks off, or the prober not running yet).
    """
    statuses = health_module.registry.statuses()
    interval = conf.HEALTH_CHECK_INTERVAL
    oldest = min(
        (status.last_checked for status in statuses),
        key=lambda checked: checked or datetime.min.replace(tzinfo=timezone.utc),
    )
    freshness = timedelta(
        seconds=max(2 * (interval or 0), 2 * conf.HEALTH_CHECK_TIMEOUT)
    )
    if oldest is None or datetime.now(timezone.utc) - oldest > freshness:
        statuses = health_module.registry.probe(apply=interval is not None)
    primary, replicas = statuses[0], statuses[1:]
    usable = sum(status.usable for status in replicas)
    healthy = primary.state == health_module.OK and usable >= conf.HEALTH_MIN_REPLICAS
    return healthy, {
        "status": "ok" if healthy else "fail",
        "usable_replicas": usable,
        "min_replicas": conf.HEALTH_MIN_REPLICAS,
        "primary": primary.as_dict(),
        "replicas": [status.as_dict() for status in replicas],
    }


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """200 when the primary is reachable and enough replicas are usable, else 503."""
    healthy, body = report()
    return JsonResponse(body, status=200 if healthy else 503)
