"""OpenTelemetry: add ``"multidb.contrib.opentelemetry"`` to ``INSTALLED_APPS``.

Each request's current span gets ``multidb.read_alias`` and
``multidb.outcome`` (and ``multidb.token_check`` when a pin token was
checked); each probe round is a ``multidb.probe`` span with every database's
status as attributes.  Needs ``opentelemetry-api`` (the ``opentelemetry``
extra) and an SDK set up by the site; nothing here imports it until the app
is ready.
"""
