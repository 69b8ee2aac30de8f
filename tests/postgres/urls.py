from django.urls import path

import multidb.views
from tests.postgres import views

urlpatterns = [
    path("create/", views.create),
    path("find/", views.find),
    path("read-then-time-out/", views.read_then_time_out_on_the_primary),
]

# The health view (tests/test_health_view.py, tests/postgres/test_status.py).
urlpatterns += [path("health/db/", multidb.views.health)]

# Read-your-writes by position (tests/postgres/test_tokens.py).
urlpatterns += [
    path("find-many/", views.find_many),
    path("get-or-create/", views.get_or_create_item),
    path("get-or-create-then-find/", views.get_or_create_then_find),
    path("async-get-or-create-then-find/", views.async_get_or_create_then_find),
    path("lock-then-find/", views.lock_then_find),
    path("save/", views.save_item),
    path("token/", views.token),
    path("async-token/", views.async_token),
    path("async-find/", views.async_find),
    path("async-find-routed-on-the-loop/", views.async_find_routed_on_the_loop),
    path("async-read-after/", views.async_read_after),
]

# Concurrent mixed requests (test_concurrency.py; the views are the benchmark's).
urlpatterns += [
    path("conc/sync/", views.concurrent_reads),
    path("conc/async/", views.async_concurrent_reads),
]

# The configurations users run (test_configurations.py).
urlpatterns += [
    path("create-async-commit/", views.create_with_async_commit),
    path("find-in-own-transaction/", views.find_in_own_transaction),
    path("find-non-atomic/", views.find_non_atomic),
    path("write-then-find/", views.write_then_find),
]

# Hardening: what an anonymous client can cost (test_tokens.py).
urlpatterns += [
    path("validate/", views.validate_form),
    path("raw-insert/", views.raw_insert),
    path("async-raw-insert/", views.async_raw_insert),
]

# Staleness bounds and the no-replica policy (test_levels.py).
urlpatterns += [
    path("find-within-2s/", views.find_within_2s),
    path("async-find-within-2s/", views.async_find_within_2s),
    path("find-or-503/", views.find_or_503),
    path("async-find-or-503/", views.async_find_or_503),
]

# Catch-up waits and monotonic reads (test_waits.py).
urlpatterns += [
    path("newest/", views.newest),
    path("async-newest/", views.async_newest),
]

# Background tasks that carry the writes (test_celery.py).
urlpatterns += [
    path("celery/create-and-enqueue/", views.create_and_enqueue),
    path("celery/async-create-and-enqueue/", views.async_create_and_enqueue),
]
urlpatterns += [
    path("tasks/create-and-enqueue/", views.create_and_enqueue_django_task),
    path("tasks/async-create-and-enqueue/", views.async_create_and_enqueue_django_task),
]

# multidb.explain() (test_explain.py).
urlpatterns += [
    path("explain/find/", views.explain_find),
    path("explain/write/", views.explain_write),
    path("explain/in-own-transaction/", views.explain_in_own_transaction),
    path("explain/async-find/", views.async_explain_find),
]
