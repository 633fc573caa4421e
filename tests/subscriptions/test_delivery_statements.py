"""The dispatcher's statements, built once, as each dialect compiles them (no database): the lease is
taken in one statement that skips rows another dispatcher holds, and leaves out those this one delivers."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite

from app.subscriptions.delivery_statements import CLAIM, DUE, RELEASE_IF_DONE


def test_the_claim_locks_what_it_takes_and_skips_what_another_dispatcher_holds() -> None:
    sql = " ".join(str(CLAIM.compile(dialect=postgresql.dialect())).split())
    assert sql.startswith("UPDATE subscription_state SET lease_owner=%(holder)s")
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "subscription_state.subscription_id NOT IN (__[POSTCOMPILE_running])" in sql
    assert "LIMIT %(room)s" in sql
    assert "RETURNING subscription_state.subscription_id" in sql


def test_what_is_due_is_read_without_a_lock_on_both_backends() -> None:
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        sql = " ".join(str(DUE.compile(dialect=dialect)).split())
        assert "FOR UPDATE" not in sql
        assert "subscription_state.delivered_through < subscription_state.events_assigned" in sql


def test_a_lease_is_given_back_when_done_only_if_nothing_waits() -> None:
    sql = " ".join(str(RELEASE_IF_DONE.compile(dialect=sqlite.dialect())).split())
    assert "subscription_state.delivered_through >= subscription_state.events_assigned" in sql
    assert "subscription_state.lease_owner = ?" in sql
