from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from multidb import health


class Command(BaseCommand):
    help = (
        "Probe the primary and every replica now and print their role, state, "
        "lag and position. Exits non-zero if the primary is unreachable, or "
        "with --strict, if any replica is unusable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Also fail when any replica is unusable.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        statuses = health.registry.probe(apply=False)
        if options["json"]:
            self.stdout.write(json.dumps([s.as_dict() for s in statuses], indent=2))
        else:
            self.stdout.write(table(statuses))
        primary, replicas = statuses[0], statuses[1:]
        if not primary.reachable:
            raise CommandError(
                f"The primary ({primary.alias}) is unreachable: {primary.reason}"
            )
        unusable = [status.alias for status in replicas if not status.usable]
        if options["strict"] and unusable:
            raise CommandError(
                f"Unusable replicas: {', '.join(unusable)}. Reads that would go "
                "to them go to other replicas, or to the primary."
            )


def table(statuses: list[health.DatabaseStatus]) -> str:
    header = (
        "ALIAS",
        "ROLE",
        "STATE",
        "LAG BYTES",
        "LAG SECONDS",
        "POSITION",
        "REASON",
    )
    rows = [header] + [
        (
            s.alias,
            s.role,
            s.state,
            "-" if s.lag_bytes is None else str(s.lag_bytes),
            "-" if s.lag_seconds is None else f"{s.lag_seconds:g}",
            s.replay_position or "-",
            s.reason,
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    )
