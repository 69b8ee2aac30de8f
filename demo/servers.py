"""Which server answered: the views report it with every read."""

from __future__ import annotations

from typing import Any

from django.db import connections


def which(alias: str) -> dict[str, Any]:
    """Ask the server behind ``alias`` (this thread's connection) who it is."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        port, in_recovery = cursor.fetchone()
    return {
        "server": "replica" if in_recovery else "primary",
        "port": port,
        "alias": alias,
    }
