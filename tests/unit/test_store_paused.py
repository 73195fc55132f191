"""Schema migration 6 (#17): a database made before the paused status gets its partial index
of unfinished tasks rebuilt with ``paused``, so restart recovery reads paused tasks through
the index (the query's text lists ``paused``; SQLite uses a partial index only for a WHERE
that its own WHERE implies)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nessus_pool.models import Task, TaskStatus
from nessus_pool.store import Store
from nessus_pool.store.queries import Q_ACTIVE
from nessus_pool.store.schema import MIGRATIONS


def _v1_database(path: Path) -> None:
    """The schema as version 1 created it, before ``paused`` existed."""
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1].replace(", 'paused'", ""))
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.commit()
    conn.close()


def _plan(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {Q_ACTIVE}").fetchall()
        index_sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks_active'"
        ).fetchone()[0]
    finally:
        conn.close()
    return " ".join(str(r[-1]) for r in rows) + " | " + str(index_sql)


async def test_migration_6_indexes_paused_tasks_and_recovery_reads_them(tmp_path: Path) -> None:
    db = tmp_path / "np.db"
    _v1_database(db)
    assert "paused" not in _plan(db).split(" | ")[1]
    store = Store(db)
    await store.open()
    try:
        t = Task(
            task_id="p1",
            seq=1,
            pool="lan",
            name="paused one",
            targets=["10.0.0.1"],
            status=TaskStatus.PAUSED,
            created_at_ms=1,
            updated_at_ms=1,
            paused_at_ms=5,
            paused_by="window",
            window_paused_ms=7,
        )
        await store.save_task(t)
        loaded = await store.load_active()
    finally:
        await store.close()
    assert [(x.task_id, x.status, x.paused_by, x.window_paused_ms) for x in loaded] == [
        ("p1", TaskStatus.PAUSED, "window", 7)
    ]
    plan, index_sql = _plan(db).split(" | ")
    assert "'paused'" in index_sql
    assert "USING INDEX tasks_active" in plan or "USING COVERING INDEX" in plan, plan
