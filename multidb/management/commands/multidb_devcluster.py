from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from multidb.conf import conf, replica_weights


class Command(BaseCommand):
    help = (
        "Start a local PostgreSQL primary with streaming replicas, print the "
        "DATABASES settings that reach them, and keep them running until "
        "Ctrl-C; or, with a COMMAND, control the cluster running on --port. "
        "The replicas' aliases default to REPLICA_DATABASES. Same as "
        "python -m multidb.devcluster."
    )
    # It starts the servers the settings point to: nothing to check before.
    requires_system_checks: list[str] = []
    stealth_options = ("stdin",)

    # multidb.testing is imported only when this command runs (import-linter
    # allows exactly this edge), never by a site.
    def add_arguments(self, parser: CommandParser) -> None:
        from multidb.testing import devcluster

        devcluster.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        from multidb.testing import devcluster

        if options["replicas"] is None and options["aliases"] is None:
            options["aliases"] = list(replica_weights(conf.REPLICA_DATABASES)) or None
        try:
            devcluster.run(
                options,
                prog="python manage.py multidb_devcluster",
                stdin=options.get("stdin"),
                stdout=self.stdout,
            )
        except devcluster.DevClusterError as exc:
            raise CommandError(str(exc)) from None
