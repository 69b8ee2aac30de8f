"""Which statements on the primary count as writes (``multidb.statements``),
and what the primary's watcher does with each kind."""

from __future__ import annotations

import pytest
from django.db import connections, router, transaction
from psycopg import sql as psycopg_sql

from multidb import pinning, statements
from multidb.pinning import NO_PIN, TIME_PIN
from tests.app.models import Item
from tests.conftest import request_scope

READ, WRITE, LOCK = statements.READ, statements.WRITE, statements.LOCK


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT "app_item"."id" FROM "app_item" LIMIT 21', READ),
        ("  select 1", READ),
        ("/* controller='cart' */ SELECT 1", READ),
        ("-- a comment\nSELECT 1", READ),
        ("SHOW server_version", READ),
        ("EXPLAIN SELECT 1", READ),
        ('SAVEPOINT "s1"', READ),
        ('RELEASE SAVEPOINT "s1"', READ),
        ('ROLLBACK TO SAVEPOINT "s1"', READ),
        ("SET TIME ZONE 'UTC'", READ),
        ('INSERT INTO "app_item" ("name") VALUES (%s)', WRITE),
        ('UPDATE "app_item" SET "name" = %s', WRITE),
        ('DELETE FROM "app_item"', WRITE),
        ("/* sqlcommenter */ DELETE FROM x", WRITE),
        ("-- note\nINSERT INTO x VALUES (1)", WRITE),
        ("MERGE INTO x USING y ON true WHEN MATCHED THEN DELETE", WRITE),
        ("WITH gone AS (DELETE FROM x RETURNING *) SELECT count(*) FROM gone", WRITE),
        ("CREATE TABLE x (id int)", WRITE),
        ("TRUNCATE x", WRITE),
        ("COPY x FROM STDIN", WRITE),
        ("CALL archive()", WRITE),
        ("EXPLAIN ANALYZE INSERT INTO x VALUES (1)", WRITE),
        ("SELECT * INTO archive FROM x", WRITE),
        ("", WRITE),
        ("   ", WRITE),
        ("42", WRITE),
        ('SELECT * FROM "app_item" FOR UPDATE', LOCK),
        ('SELECT * FROM "app_item" FOR NO KEY UPDATE SKIP LOCKED', LOCK),
        ("select * from x for share", LOCK),
        ('SELECT * FROM "app_item" FOR UPDATE OF "app_item"', LOCK),
        ("SELECT format, information FROM fortune", READ),
        ('SELECT "into" FROM t', READ),
        ("SELECT 1\nFOR\n UPDATE", LOCK),
        ("SELECT * FROM x FOR KEY SHARE NOWAIT", LOCK),
    ],
)
def test_each_statement_is_read_write_or_lock(sql, expected):
    assert statements.kind(sql) == expected


def test_a_composed_statement_counts_as_a_write():
    composed = psycopg_sql.SQL("SELECT {}").format(psycopg_sql.Literal(1))

    assert statements.kind(composed) == WRITE


def watch(sql: str) -> None:
    """Show the primary's watcher ``sql`` on the real default connection."""
    pinning._note_primary_use(
        lambda *args: None, sql, None, False, {"connection": connections["default"]}
    )


def test_a_read_on_the_primary_pins_nothing():
    with request_scope(NO_PIN) as request:
        watch("SELECT 1")

    assert (request.pinned, request.wrote) == (NO_PIN, False)


def test_a_lock_outside_a_transaction_pins_at_once():
    with request_scope(NO_PIN) as request:
        watch("SELECT 1 FOR UPDATE")

    assert (request.pinned, request.wrote) == (TIME_PIN, True)


def test_a_statement_outside_a_request_pins_nothing():
    watch("INSERT INTO x VALUES (1)")

    assert pinning.current_request() is None


@pytest.mark.django_db(transaction=True)
def test_a_lock_pins_when_its_transaction_commits_not_before():
    with request_scope(NO_PIN) as request:
        with transaction.atomic():
            # SQLite has no FOR UPDATE (tests/postgres/test_tokens.py runs it).
            watch('SELECT * FROM "app_item" FOR UPDATE')
            assert (request.pinned, request.wrote) == (NO_PIN, False)
        assert (request.pinned, request.wrote) == (TIME_PIN, True)


@pytest.mark.django_db(transaction=True)
def test_a_lock_whose_transaction_rolls_back_pins_nothing():
    with request_scope(NO_PIN) as request, transaction.atomic():
        list(Item.objects.select_for_update().all())
        transaction.set_rollback(True)

    assert (request.pinned, request.wrote) == (NO_PIN, False)


@pytest.mark.django_db(transaction=True)
def test_get_or_create_that_finds_its_row_pins_nothing_and_one_that_creates_pins():
    Item.objects.create(name="there")
    with request_scope(NO_PIN) as request:
        assert Item.objects.get_or_create(name="there")[1] is False
        assert (request.pinned, request.wrote) == (NO_PIN, False)
        assert Item.objects.get_or_create(name="new")[1] is True
        assert (request.pinned, request.wrote) == (TIME_PIN, True)


@pytest.mark.django_db(transaction=True)
def test_a_connection_opened_unwatched_is_watched_once_a_write_is_routed():
    connection = connections["default"]
    connection.ensure_connection()
    connection.execute_wrappers.remove(pinning._note_primary_use)

    with request_scope(NO_PIN) as request:
        Item.objects.create(name="late")

    assert request.wrote is True
    assert connection.execute_wrappers.count(pinning._note_primary_use) == 1


def test_a_write_after_unpinning_pins_again():
    with request_scope(NO_PIN) as request:
        watch("INSERT INTO x VALUES (1)")
        pinning.unpin_this_thread()
        assert request.pinned is NO_PIN
        watch("INSERT INTO x VALUES (2)")

    assert request.pinned is TIME_PIN


@pytest.mark.django_db(transaction=True)
def test_a_request_that_wrote_and_is_pinned_has_nothing_more_to_note():
    connection = connections["default"]
    with request_scope(NO_PIN) as request, transaction.atomic():
        watch("INSERT INTO x VALUES (1)")
        watch('SELECT * FROM "app_item" FOR UPDATE')
        assert connection.run_on_commit == []  # the lock was not looked at
        transaction.set_rollback(True)

    assert (request.pinned, request.wrote) == (TIME_PIN, True)


@pytest.mark.asyncio
async def test_a_write_routed_on_an_event_loop_opens_no_connection_there():
    with request_scope(NO_PIN):
        assert router.db_for_write(Item) == "default"

    # connections["default"] here would make one in a new thread-local,
    # which leaks into the next worker thread's context.
    assert getattr(connections._connections, "default", None) is None
