"""The SQLite schema, as numbered migrations applied in order at open."""

from __future__ import annotations

from nessus_pool.models import UNFINISHED_STATUSES, status_values

#: the unfinished statuses as an SQL list, from the one definition in models.py; the
#: partial index below and the query that loads unfinished tasks must use the same text
#: (SQLite uses a partial index only for a WHERE that matches it)
UNFINISHED_SQL = ", ".join(f"'{v}'" for v in status_values(UNFINISHED_STATUSES))


MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL UNIQUE,
        pool TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        dead_letter INTEGER NOT NULL DEFAULT 0,
        data BLOB NOT NULL
    );
    CREATE INDEX tasks_active ON tasks(status)
        WHERE status IN ({UNFINISHED_SQL});
    CREATE INDEX tasks_pool_seq ON tasks(pool, seq);
    CREATE INDEX tasks_dlq ON tasks(pool, dead_letter) WHERE dead_letter = 1;
    CREATE TABLE task_events (
        id INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT
    );
    CREATE INDEX task_events_task ON task_events(task_id, id);
    CREATE TABLE task_results (
        task_id TEXT PRIMARY KEY,
        data BLOB NOT NULL
    );
    CREATE TABLE findings (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        severity INTEGER NOT NULL,
        plugin_id INTEGER NOT NULL,
        host TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX findings_sev ON findings(task_id, severity);
    """,
    # schedules created through the API (config ones live in the file) and each schedule's
    # run history: a slot fired (with its task), skipped (and why) or run by hand
    4: """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE schedule_runs (
        id INTEGER PRIMARY KEY,
        schedule TEXT NOT NULL,
        slot_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        task_id TEXT,
        at_ms INTEGER NOT NULL,
        UNIQUE (schedule, kind, slot_ms)
    );
    CREATE INDEX schedule_runs_recent ON schedule_runs(schedule, id);
    """,
    # #17: "paused" is an unfinished status; the partial index must list it, or the query
    # that loads unfinished tasks (whose text lists it now) cannot use the index
    6: f"""
    DROP INDEX IF EXISTS tasks_active;
    CREATE INDEX tasks_active ON tasks(status) WHERE status IN ({UNFINISHED_SQL});
    """,
}

#: the PostgreSQL schema: the same tables and columns (BIGINT for ms and seq, BYTEA for
#: blobs), applied under an advisory lock so that daemons starting at once migrate once
PG_MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE tasks (
        seq BIGINT PRIMARY KEY,
        task_id TEXT NOT NULL UNIQUE,
        pool TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_at_ms BIGINT NOT NULL,
        finished_at_ms BIGINT,
        dead_letter INTEGER NOT NULL DEFAULT 0,
        data BYTEA NOT NULL
    );
    CREATE INDEX tasks_active ON tasks(status) WHERE status IN ({UNFINISHED_SQL});
    CREATE INDEX tasks_pool_seq ON tasks(pool, seq);
    CREATE INDEX tasks_dlq ON tasks(pool, dead_letter) WHERE dead_letter = 1;
    CREATE TABLE task_events (
        id BIGSERIAL PRIMARY KEY,
        task_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT
    );
    CREATE INDEX task_events_task ON task_events(task_id, id);
    CREATE TABLE task_results (
        task_id TEXT PRIMARY KEY,
        data BYTEA NOT NULL
    );
    CREATE TABLE findings (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        severity INTEGER NOT NULL,
        plugin_id INTEGER NOT NULL,
        host TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
    CREATE INDEX findings_sev ON findings(task_id, severity);
    CREATE TABLE probe (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
    """,
    4: """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE TABLE schedule_runs (
        id BIGSERIAL PRIMARY KEY,
        schedule TEXT NOT NULL,
        slot_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        task_id TEXT,
        at_ms BIGINT NOT NULL,
        UNIQUE (schedule, kind, slot_ms)
    );
    CREATE INDEX schedule_runs_recent ON schedule_runs(schedule, id);
    """,
    6: f"""
    DROP INDEX IF EXISTS tasks_active;
    CREATE INDEX tasks_active ON tasks(status) WHERE status IN ({UNFINISHED_SQL});
    """,
}
assert set(PG_MIGRATIONS) == set(MIGRATIONS), "every SQLite migration has its PostgreSQL twin"
#: the newest migration; numbers may have gaps (branches get numbers that are merged later)
SCHEMA_VERSION = max(MIGRATIONS)
