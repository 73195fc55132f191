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
    # the cluster migration (assigned NUMBER 3 for the merge)
    2: """
    ALTER TABLE tasks ADD COLUMN scanner_id TEXT;
    ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_scanner ON tasks(scanner_id) WHERE scanner_id IS NOT NULL;
    CREATE TABLE daemons (
        daemon_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        pools_hash TEXT NOT NULL,
        pools TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        heartbeat_at_ms INTEGER NOT NULL,
        zone TEXT NOT NULL
    );
    CREATE TABLE scanner_leases (
        scanner_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
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
    # the cluster migration (assigned NUMBER 3 for the merge); ``pools`` is a JSON object
    # pool name -> hash of its definition, to report pools defined differently
    2: """
    ALTER TABLE tasks ADD COLUMN scanner_id TEXT;
    ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_scanner ON tasks(scanner_id) WHERE scanner_id IS NOT NULL;
    CREATE INDEX tasks_claim ON tasks(pool, priority DESC, seq) WHERE status = 'queued';
    CREATE SEQUENCE tasks_seq;
    CREATE TABLE daemons (
        daemon_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        pools_hash TEXT NOT NULL,
        pools TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        heartbeat_at_ms BIGINT NOT NULL,
        zone TEXT NOT NULL
    );
    CREATE TABLE scanner_leases (
        scanner_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    """,
}
assert set(PG_MIGRATIONS) == set(MIGRATIONS), "every SQLite migration has its PostgreSQL twin"
SCHEMA_VERSION = max(MIGRATIONS)
