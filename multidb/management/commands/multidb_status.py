from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from multidb import groups, health


class Command(BaseCommand):
    help = (
        "Probe the primary and every replica now and print their role, state, "
        "lag and position. Exits non-zero if the primary is unreachable, or "
        "with --strict, if any replica is unusable. With --watch, probe "
        "again and redraw every few seconds until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Also fail when any replica is unusable.",
        )
        parser.add_argument(
            "--watch",
            nargs="?",
            const="2",
            metavar="SECONDS",
            help=(
                "Probe and redraw every SECONDS (default 2) until Ctrl-C, "
                "with each replica's lag over the last minute."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["watch"] is not None:
            self.watch(options)
            return
        statuses = health.registry.probe(apply=False)
        if options["json"]:
            self.stdout.write(json.dumps([s.as_dict() for s in statuses], indent=2))
        else:
            self.stdout.write(table(statuses))
        for primary in statuses:
            if primary.role == "primary" and not primary.reachable:
                raise CommandError(
                    f"The primary ({primary.alias}) is unreachable: {primary.reason}"
                )
        replicas = [status for status in statuses if status.role == "replica"]
        unusable = [status.alias for status in replicas if not status.usable]
        if options["strict"] and unusable:
            raise CommandError(
                f"Unusable replicas: {', '.join(unusable)}. Reads that would go "
                "to them go to other replicas, or to the primary."
            )

    def watch(self, options: dict[str, Any]) -> None:
        # Imported here: it imports this module (the table).
        from multidb.management.commands import _watch

        for option in ("json", "strict"):
            if options[option]:
                raise CommandError(
                    f"--watch shows the table; --{option} is for a single probe."
                )
        try:
            interval = _watch.seconds(options["watch"])
        except ValueError:
            raise CommandError(
                f"--watch takes a positive number of seconds, not {options['watch']!r}."
            ) from None
        # The stream under Django's wrapper, which would end each of rich's
        # writes with a newline.
        out = cast(TextIO, self.stdout._out)
        _watch.watch(
            out,
            interval,
            lambda: health.registry.probe(apply=False),
        )


def table(statuses: list[health.DatabaseStatus]) -> str:
    return layout(rows(statuses))


def rows(statuses: list[health.DatabaseStatus]) -> list[tuple[str, ...]]:
    """The table's header and a row per status, as text cells."""
    if groups.active():
        # One more column, the group: each primary comes before its replicas.
        return _rows(statuses, ("GROUP",), lambda s: (s.group,))
    return _rows(statuses, (), lambda s: ())


def _rows(
    statuses: list[health.DatabaseStatus],
    first: tuple[str, ...],
    first_cells: Callable[[health.DatabaseStatus], tuple[str, ...]],
) -> list[tuple[str, ...]]:
    header = (
        *first,
        "ALIAS",
        "ROLE",
        "STATE",
        "LAG BYTES",
        "LAG SECONDS",
        "POSITION",
        "REASON",
    )
    return [header] + [
        (
            *first_cells(s),
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


def layout(rows: list[tuple[str, ...]]) -> str:
    """``rows`` in columns as wide as their longest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    )
