"""Copy a SQLite store into an empty PostgreSQL database (``nessus-pool storage migrate``).

Everything moves in one PostgreSQL transaction through COPY: tasks, events (their ids and
order kept), results, findings and per-host results. The target must be empty: a database
that already holds tasks belongs to some daemon, and merging two histories is not a copy.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nessus_pool.errors import StorageError
from nessus_pool.store.pg import DB_ERRORS, PgStore
from nessus_pool.store.schema import SCHEMA_VERSION

#: table -> its columns, in the order both schemas declare them
TABLES: dict[str, tuple[str, ...]] = {
    "tasks": (
        "seq",
        "task_id",
        "pool",
        "status",
        "priority",
        "idempotency_key",
        "created_at_ms",
        "finished_at_ms",
        "dead_letter",
        "data",
    ),
    "task_events": ("id", "task_id", "at_ms", "status", "reason", "detail"),
    "task_results": ("task_id", "data"),
    "findings": ("task_id", "seq", "severity", "plugin_id", "host", "text_id", "data"),
    "finding_texts": ("task_id", "text_id", "data"),
    "host_results": (
        "task_id",
        "seq",
        "name",
        "auth_status",
        "critical",
        "high",
        "medium",
        "low",
        "info",
        "data",
    ),
    "schedules": ("name", "created_at_ms", "updated_at_ms", "data"),
    "schedule_runs": ("id", "schedule", "slot_ms", "kind", "outcome", "reason", "task_id", "at_ms"),
    "notification_outbox": (
        "delivery_id",
        "target",
        "event",
        "task_id",
        "payload",
        "prepared",
        "attempts",
        "next_attempt_at_ms",
        "claimed_until_ms",
        "state",
        "last_error",
        "created_at_ms",
        "updated_at_ms",
    ),
}
_CHUNK_ROWS = 5000


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StorageError(f"no SQLite store at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"{path} is not a nessus-pool store: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StorageError(
            f"{path} has schema version {version}, this nessus-pool {SCHEMA_VERSION}: "
            "start this nessus-pool on it once (it migrates), then copy"
        )
    return conn


def _chunks(conn: sqlite3.Connection, table: str) -> Iterator[list[tuple[Any, ...]]]:
    cols = ", ".join(TABLES[table])
    order = {
        "task_events": "id",
        "schedule_runs": "id",
        "findings": "task_id, seq",
        "host_results": "task_id, seq",
        "finding_texts": "task_id, text_id",
    }.get(table, "rowid")
    cur = conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order}")
    while rows := cur.fetchmany(_CHUNK_ROWS):
        yield rows


async def copy_sqlite_to_pg(source: Path, target: PgStore) -> dict[str, int]:
    """Copy the store at ``source`` into ``target`` (open, empty). Returns rows per table.
    Raises :class:`StorageError` when the target holds any task, event, result or finding
    (nothing is written then) or when either side fails (the copy is rolled back)."""
    conn = await asyncio.to_thread(_open_source, source)
    counts: dict[str, int] = {}
    try:
        async with target.connection() as pg, pg.transaction():
            for table in TABLES:
                if await pg.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    raise StorageError(
                        f"the target database is not empty ({table} has rows): "
                        "storage migrate copies into an empty database only"
                    )
            for table, columns in TABLES.items():
                counts[table] = 0
                chunks = _chunks(conn, table)
                while rows := await asyncio.to_thread(next, chunks, None):
                    await pg.copy_records_to_table(table, records=rows, columns=columns)
                    counts[table] += len(rows)
            # events and schedule runs keep their ids: move the sequences past them
            for serial in ("task_events", "schedule_runs"):
                await pg.execute(
                    f"SELECT setval(pg_get_serial_sequence('{serial}', 'id'),"
                    f" COALESCE((SELECT MAX(id) FROM {serial}), 0) + 1, false)"
                )
    except DB_ERRORS as exc:
        raise StorageError(f"copy failed: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
    return counts
