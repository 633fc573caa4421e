"""The tables' column types (``app.storage.tables``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from app.storage.database import Database
from app.storage.tables import UTCDateTime

MOMENTS = [
    datetime(2026, 12, 4, 7, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 12, 4, 7, 0, 0, tzinfo=UTC),  # no fraction: still six digits
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=-5))),  # moved to UTC: the next day
    datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),  # a year of three digits is written with four
]


def sqlalchemy_sqlite_text(value: datetime) -> str:
    """What the type stored before it bound SQLite text itself: UTC, naive, through ``DATETIME``'s processor."""
    process = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert process is not None
    text: str = process(value.astimezone(UTC).replace(tzinfo=None))
    return text


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_sqlite_text_is_what_sqlalchemy_stores(moment: datetime) -> None:
    process = UTCDateTime()._cached_bind_processor(sqlite.dialect())
    assert process is not None
    assert process(moment) == sqlalchemy_sqlite_text(moment)
    assert process(None) is None


def test_postgresql_binds_aware_utc_datetimes() -> None:
    process = UTCDateTime()._cached_bind_processor(postgresql.asyncpg.dialect())
    assert process is not None
    bound = process(MOMENTS[3])
    assert bound == MOMENTS[3] and bound.tzinfo is UTC


moments = Table("moments", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(moments.metadata.create_all)
    yield database
    async with database.engine.begin() as conn:
        await conn.run_sync(moments.metadata.drop_all)
    await database.dispose()


async def test_moments_come_back_as_the_same_aware_utc_datetimes(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(insert(moments), [{"id": number, "at": moment} for number, moment in enumerate(MOMENTS)])
    async with db.read() as conn:
        stored = dict((await conn.execute(select(moments.c.id, moments.c.at))).all())
    assert [stored[number] for number in range(len(MOMENTS))] == MOMENTS  # equal instants
    assert all(moment.tzinfo is UTC for moment in stored.values())
    async with db.read() as conn:  # ordered as instants, on SQLite as text
        order = (await conn.execute(select(moments.c.id).order_by(moments.c.at))).scalars().all()
    assert order == sorted(range(len(MOMENTS)), key=lambda number: MOMENTS[number])
