"""``health``: a JSON view of the databases, for load balancers and probes.

path("health/db/", multidb.views.health)

By default it answers with the status and the replica counts only: hosts,
ports, roles, positions and driver errors are for operators, who see them in
``manage.py multidb_status`` and the logs, and in the view's details where
``MULTIDB_HEALTH_DETAILS`` shows them (``"staff"`` or ``"always"``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from . import groups
from . import health as health_module
from .conf import conf


def report() -> tuple[bool, dict[str, Any]]:
    """Whether the databases are healthy, and every figure that says so.

    Uses the background prober's results while they are fresh, and probes
    now otherwise (health checks off, or the prober not running yet).
    Concurrent callers that find them stale share one probe round.
    """
    interval = conf.HEALTH_CHECK_INTERVAL
    freshness = max(2 * (interval or 0), 2 * conf.HEALTH_CHECK_TIMEOUT)
    statuses = health_module.registry.recent(freshness, apply=interval is not None)
    primary = statuses[0]
    replicas = [status for status in statuses if status.role == "replica"]
    usable = sum(status.usable for status in replicas)
    by_group = _by_group(statuses) if groups.active() else None
    if by_group is None:
        healthy = (
            primary.state == health_module.OK and usable >= conf.HEALTH_MIN_REPLICAS
        )
    else:
        healthy = all(group["status"] == "ok" for group in by_group.values())
    body = {
        "status": "ok" if healthy else "fail",
        "usable_replicas": usable,
        "min_replicas": conf.HEALTH_MIN_REPLICAS,
        "primary": primary.as_dict(),
        "replicas": [status.as_dict() for status in replicas],
    }
    if by_group is not None:
        body["groups"] = by_group
    return healthy, body


def _by_group(statuses: list[health_module.DatabaseStatus]) -> dict[str, Any]:
    """Each replica group's figures: healthy when its primary is reachable
    and at least ``MULTIDB_HEALTH_MIN_REPLICAS`` of its replicas are usable
    (a group with no replicas configured needs none)."""
    found: dict[str, Any] = {}
    for primary in (status for status in statuses if status.role == "primary"):
        replicas = [
            s for s in statuses if s.role == "replica" and s.group == primary.alias
        ]
        usable = sum(status.usable for status in replicas)
        needed = min(conf.HEALTH_MIN_REPLICAS, len(replicas))
        healthy = primary.state == health_module.OK and usable >= needed
        found[primary.alias] = {
            "status": "ok" if healthy else "fail",
            "usable_replicas": usable,
            "primary": primary.as_dict(),
            "replicas": [status.as_dict() for status in replicas],
        }
    return found


#: What anyone may see: nothing that names a host, a port, a role, a
#: position or an error.
SUMMARY = ("status", "usable_replicas", "min_replicas")


def shows_details(request: HttpRequest) -> bool:
    """Whether ``request`` may see the per-database details."""
    details = conf.HEALTH_DETAILS
    if details == "always":
        return True
    if details == "staff":
        user = getattr(request, "user", None)
        return bool(
            getattr(user, "is_active", False) and getattr(user, "is_staff", False)
        )
    return False


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """200 when the primary is reachable and enough replicas are usable, else 503.

    With replica groups, every group's primary must be reachable and each
    group with replicas must have enough of them usable (``groups`` in the
    details says which does not); the summary counts all usable replicas.
    """
    healthy, body = report()
    if not shows_details(request):
        body = {key: body[key] for key in SUMMARY}
    return JsonResponse(body, status=200 if healthy else 503)
