"""The SQLite schema, as numbered migrations applied in order at open."""

from __future__ import annotations

from nessus_pool.models import UNFINISHED_STATUSES, status_values

#: the unfinished statuses as an SQL list, from the one definition in models.py; the
#: partial index below and the query that loads unfinished tasks must use the same text
#: (SQLite uses a partial index only for a WHERE that matches it)
UNFINISHED_SQL = ", ".join(f"'{v}'" for v in status_values(UNFINISHED_STATUSES))

SCHEMA_VERSION = 6

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
    5: """
    CREATE TABLE notification_outbox (
        delivery_id TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        event TEXT NOT NULL,
        task_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        prepared INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms INTEGER NOT NULL,
        claimed_until_ms INTEGER,
        state TEXT NOT NULL,
        last_error TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE INDEX notification_outbox_due ON notification_outbox(next_attempt_at_ms)
        WHERE state = 'pending';
    CREATE INDEX notification_outbox_state ON notification_outbox(state, updated_at_ms);
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
    5: """
    CREATE TABLE notification_outbox (
        delivery_id TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        event TEXT NOT NULL,
        task_id TEXT NOT NULL,
        payload BYTEA NOT NULL,
        prepared INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms BIGINT NOT NULL,
        claimed_until_ms BIGINT,
        state TEXT NOT NULL,
        last_error TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX notification_outbox_due ON notification_outbox(next_attempt_at_ms)
        WHERE state = 'pending';
    CREATE INDEX notification_outbox_state ON notification_outbox(state, updated_at_ms);
    """,
    6: f"""
    DROP INDEX IF EXISTS tasks_active;
    CREATE INDEX tasks_active ON tasks(status) WHERE status IN ({UNFINISHED_SQL});
    """,
}
assert set(PG_MIGRATIONS) == set(MIGRATIONS), "every SQLite migration has its PostgreSQL twin"
