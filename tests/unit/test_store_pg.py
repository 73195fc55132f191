"""What only the PostgreSQL backend has: migrations under an advisory lock, the dialect
translation of the named statements, and errors that never show the password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from nessus_pool.errors import StorageError, StorageUnavailableError
from nessus_pool.store import redact_url
from nessus_pool.store.pg import PgStore, to_pg
from nessus_pool.store.queries import Q_GET_TASK, Q_UPSERT_RESULTS
from nessus_pool.store.schema import PG_MIGRATIONS, SCHEMA_VERSION
from tests.pgcluster import create_schema, drop_schema, with_search_path


@pytest.fixture
async def pg_url(pg_server_url: str) -> AsyncIterator[str]:
    schema = await create_schema(pg_server_url)
    try:
        yield with_search_path(pg_server_url, schema)
    finally:
        await drop_schema(pg_server_url, schema)


async def test_daemons_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = [PgStore(pg_url, pool_size=2) for _ in range(6)]
    try:
        # all six race for an empty schema; without the lock CREATE TABLE collides
        await asyncio.gather(*(s.open() for s in stores))
        conn = await asyncpg.connect(pg_url)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
        finally:
            await conn.close()
        assert versions == sorted(PG_MIGRATIONS)  # each once (numbers may have gaps)
        assert all([await s.writable() for s in stores])
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE schema_version (version INTEGER)")
        await conn.execute("INSERT INTO schema_version VALUES ($1)", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    store = PgStore(pg_url)
    with pytest.raises(StorageError, match="newer than this nessus-pool"):
        await store.open()


async def test_a_refused_connection_is_a_storage_error_without_the_password() -> None:
    # port 1: nothing listens there, the connection is refused
    bad = "postgresql://np:hunter2-secret@127.0.0.1:1/nessus"
    store = PgStore(bad, password="hunter2-secret")
    with pytest.raises(StorageError) as info:
        await store.open()
    assert "hunter2-secret" not in str(info.value)
    assert "127.0.0.1:1/nessus" in str(info.value)
    assert redact_url(bad) == "postgresql://np:***@127.0.0.1:1/nessus"


def test_named_statements_are_translated_to_the_postgresql_dialect() -> None:
    assert to_pg(Q_GET_TASK) == "SELECT data FROM tasks WHERE task_id = $1"
    upsert = to_pg(Q_UPSERT_RESULTS)
    assert "OR REPLACE" not in upsert and "ON CONFLICT (task_id)" in upsert
    assert "$2" in upsert and "?" not in upsert


class _GonePool:
    """A pool whose server has gone: acquiring a connection is refused."""

    def acquire(self) -> object:
        raise ConnectionRefusedError("connection refused")


async def test_a_transaction_that_finds_the_server_gone_starts_the_outage(pg_url: str) -> None:
    """A heartbeat, claim or cancel (``transact``) meeting an unreachable server is a
    storage outage (503 + Retry-After, /readyz), as a read or a write is: not a bare
    StorageError (which the API answers 500) and not a raw OSError."""
    store = PgStore(pg_url, pool_size=2)
    await store.open()
    real = store._pool
    try:
        store._pool = _GonePool()  # type: ignore[assignment]

        async def work(conn: object) -> None:
            raise AssertionError("no connection was given")

        with pytest.raises(StorageUnavailableError) as err:
            await store.transact(work)
        assert store.outage.down and err.value.retry_after_s >= 1
        assert "refused" not in str(err.value)  # the driver's words stay in the log
    finally:
        store._pool = real
        await store.close()


async def test_a_statement_error_in_a_transaction_stays_a_storage_error(pg_url: str) -> None:
    store = PgStore(pg_url, pool_size=2)
    await store.open()
    try:

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute("SELECT * FROM no_such_table")

        with pytest.raises(StorageError, match="UndefinedTableError") as err:
            await store.transact(work)
        assert not isinstance(err.value, StorageUnavailableError) and not store.outage.down
    finally:
        await store.close()
