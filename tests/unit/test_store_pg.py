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
from nessus_pool.store.queries import Q_GET_TASK, Q_PROBE_WRITE, Q_UPSERT_RESULTS
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


async def test_a_released_connection_costs_no_reset_round_trip(pg_url: str) -> None:
    """asyncpg's default reset sent ``... UNLISTEN *; RESET ALL`` at every release of a
    pooled connection: one more round trip awaited by each commit, claim and read. Our
    pooled connections keep no session state, so none is sent; the session lock of an
    exclusive turn is still released at its end."""
    store = PgStore(pg_url, pool_size=1)  # one connection: the logger sees every statement
    await store.open()
    seen: list[str] = []
    try:
        async with store.connection() as conn:
            conn.add_query_logger(lambda record: seen.append(record.query))
        await store.write([(Q_PROBE_WRITE, ())])
        assert await store.transact(lambda conn: conn.fetchval("SELECT 1")) == 1
        async with store.exclusive_turn(0x5EED) as mine:
            assert mine
        other = await asyncpg.connect(pg_url)
        try:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", 0x5EED)
        finally:
            await other.close()
        assert any("probe" in q for q in seen) and any("pg_advisory_unlock(" in q for q in seen)
        assert not [q for q in seen if "RESET ALL" in q or "UNLISTEN" in q]
    finally:
        await store.close()


async def _free_within(probe: asyncpg.Connection, key: int, limit_s: float) -> bool:
    """True once ``probe`` can take (and give back) the advisory lock ``key``."""
    deadline_s = asyncio.get_running_loop().time() + limit_s
    while not await probe.fetchval("SELECT pg_try_advisory_lock($1)", key):
        if asyncio.get_running_loop().time() > deadline_s:
            return False
        await asyncio.sleep(0.01)
    return bool(await probe.fetchval("SELECT pg_advisory_unlock($1)", key))


@pytest.mark.parametrize("cancel_at", ["waiting", "granted"])
async def test_a_lock_wait_cut_short_leaves_no_lock_behind(pg_url: str, cancel_at: str) -> None:
    """A firing round waits for the session lock and is cancelled: while it still waits,
    or just after the other holder let go, when the server may already have granted the
    lock to the waiting session. Released connections are not reset, so a connection that
    might hold the lock must not go back to the pool: afterwards the lock is free and the
    pool's one connection still serves."""
    key = 0x5EED0 + (cancel_at == "granted")
    store = PgStore(pg_url, pool_size=1)
    await store.open()
    holder = await asyncpg.connect(pg_url)
    probe = await asyncpg.connect(pg_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        entered = asyncio.Event()

        async def round_() -> None:
            async with store.session_lock(key, wait=True):
                entered.set()
                await asyncio.Event().wait()

        for _ in range(5):  # the "granted" race, several times
            waiter = asyncio.create_task(round_())
            for _ in range(200):  # until the waiter's session shows as waiting
                waits = await probe.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                if waits:
                    break
                await asyncio.sleep(0.01)
            assert waits == 1
            if cancel_at == "granted":
                await holder.execute("SELECT pg_advisory_unlock($1)", key)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            if cancel_at == "waiting":
                assert not entered.is_set()
                await holder.execute("SELECT pg_advisory_unlock($1)", key)
            # nobody holds it now: the cancelled round neither kept it nor queued for it
            # (a terminated session's backend may get the lock before it notices that its
            # client is gone, and then dies with it: free within moments, not never)
            assert await _free_within(probe, key, 5.0)
            assert await store.transact(lambda conn: conn.fetchval("SELECT 1")) == 1
            await holder.execute("SELECT pg_advisory_lock($1)", key)
    finally:
        await holder.close()
        await probe.close()
        await store.close()
