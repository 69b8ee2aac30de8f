"""Prometheus metrics: add ``"multidb.contrib.prometheus"`` to ``INSTALLED_APPS``.

Counters of how requests were routed (counted by the middleware in
``multidb.tallies``) and of replica state changes, and gauges read from the
health registry at scrape time, all on ``prometheus_client``'s default
``REGISTRY`` (the one django-prometheus's ``/metrics`` view,
``make_wsgi_app()`` and ``start_http_server()`` expose).  Needs
``prometheus_client``: the ``prometheus`` extra.  Nothing here imports it
until the app is ready.
"""
