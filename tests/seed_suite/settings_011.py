"""0.11's own test settings: two SQLite databases, the replica not a test
mirror, and the deprecated ``SLAVE_DATABASES``."""

SECRET_KEY = "dummy"
USE_TZ = True
DATABASES = {
    "default": {"NAME": "master", "ENGINE": "django.db.backends.sqlite3"},
    "slave": {"NAME": "slave", "ENGINE": "django.db.backends.sqlite3"},
}
SLAVE_DATABASES = ["slave"]
