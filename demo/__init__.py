"""The django-replica-router demo site; run it with ``python -m demo``."""
