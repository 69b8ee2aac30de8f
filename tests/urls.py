from django.urls import path

import multidb.views
from tests.app import views

urlpatterns = [
    path("read/", views.read),
    path("write-then-read/", views.write_then_read),
    path("async-read/", views.async_read),
    path("async-write-then-read/", views.async_write_then_read),
    path("decorated-write/", views.decorated_write),
    path("async-decorated-write/", views.async_decorated_write),
]

urlpatterns += [
    path("read-many/", views.read_many),
    path("async-read-many/", views.async_read_many),
    path("async-query-many/", views.async_query_many),
    path("get-or-create-then-read/", views.get_or_create_then_read),
    path("save-then-read/", views.save_then_read),
    path("async-create-then-query/", views.async_create_then_query),
    path("marked-write/", views.marked_write),
    path("pin-then-fail/", views.pin_then_fail),
    path("thread-info/", views.thread_info),
    path("async-thread-info/", views.async_thread_info),
    path("async-write/", views.async_write),
]

# The health view (tests/test_health_view.py, tests/postgres/test_status.py).
urlpatterns += [path("health/db/", multidb.views.health)]

# Read-your-writes tokens (tests/test_tokens.py).
urlpatterns += [
    path("write-token/", views.write_token_view),
    path("async-write-token/", views.async_write_token_view),
]

# Fuzzed pin cookies and token headers (tests/test_fuzz.py).
urlpatterns += [
    path("fuzz/", views.fuzz_read_many),
    path("async-fuzz/", views.async_fuzz_read_many),
]

# A user's own test cases (tests/test_user_testcases.py).
urlpatterns += [path("names/", views.names)]
