from django.apps import AppConfig
from django.core import checks


class MultiDBConfig(AppConfig):
    name = "multidb"
    verbose_name = "Replica router"

    def ready(self) -> None:
        from .checks import check_settings

        # Not Tags.database: checks with that tag only run with --database.
        checks.register(check_settings, "multidb")
