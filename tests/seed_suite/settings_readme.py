"""The settings README.rst recommends: the app installed, the router and the
middleware, a replica that is a test mirror, the prober at its default."""

SECRET_KEY = "dummy"
USE_TZ = True
DATABASES = {
    "default": {"NAME": "primary", "ENGINE": "django.db.backends.sqlite3"},
    "replica": {
        "NAME": "replica",
        "ENGINE": "django.db.backends.sqlite3",
        "TEST": {"MIRROR": "default"},
    },
}
REPLICA_DATABASES = ["replica"]
DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
INSTALLED_APPS = ["multidb"]
MIDDLEWARE = ["multidb.middleware.PinningRouterMiddleware"]
