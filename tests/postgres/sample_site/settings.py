"""Production-like settings: the servers named here do not exist."""


def database(host: str) -> dict:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": host,
        "PORT": "5432",
        "NAME": "shop",
        "USER": "shop",
        "PASSWORD": "not-here",
        "OPTIONS": {"sslmode": "require"},
    }


SECRET_KEY = "sample site"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": database("primary.db.invalid"),
    "replica1": database("replica1.db.invalid"),
    "replica2": database("replica2.db.invalid"),
}
REPLICA_DATABASES = ["replica1", "replica2"]
DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
MULTIDB_PINNING_MODE = "position"

INSTALLED_APPS = ["multidb", "notes"]
MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
ROOT_URLCONF = "urls"
