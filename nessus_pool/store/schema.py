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
    # results storage: per-host results as rows (read in pages), not in the results blob.
    # Results rows written by migration 1's code hold a "hosts" array: its hosts move here
    # and the row keeps hosts_total and auth_plugins_found in their place. Findings keep
    # their per-finding fields; the texts they share with other findings of the task are
    # stored once in finding_texts (rows written before, text_id NULL, are split by the
    # store after it opens: see BaseStore.split_old_findings).
    2: """
    CREATE TABLE host_results (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        auth_status TEXT NOT NULL,
        critical INTEGER NOT NULL,
        high INTEGER NOT NULL,
        medium INTEGER NOT NULL,
        low INTEGER NOT NULL,
        info INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX host_results_auth ON host_results(task_id, auth_status, seq);
    CREATE INDEX host_results_name ON host_results(task_id, name);
    INSERT INTO host_results
        (task_id, seq, name, auth_status, critical, high, medium, low, info, data)
    SELECT r.task_id, CAST(j.key AS INTEGER),
        COALESCE(json_extract(j.value, '$.name'), ''),
        COALESCE(json_extract(j.value, '$.authentication_status'), 'unknown'),
        COALESCE(json_extract(j.value, '$.severity_breakdown.critical'), 0),
        COALESCE(json_extract(j.value, '$.severity_breakdown.high'), 0),
        COALESCE(json_extract(j.value, '$.severity_breakdown.medium'), 0),
        COALESCE(json_extract(j.value, '$.severity_breakdown.low'), 0),
        COALESCE(json_extract(j.value, '$.severity_breakdown.info'), 0),
        CAST(j.value AS BLOB)
    FROM task_results r, json_each(CAST(r.data AS TEXT), '$.hosts') j
    WHERE json_valid(CAST(r.data AS TEXT))
        AND json_type(CAST(r.data AS TEXT), '$.hosts') = 'array';
    UPDATE task_results SET data = CAST(json_set(
            json_remove(CAST(data AS TEXT), '$.hosts'),
            '$.hosts_total', json_array_length(CAST(data AS TEXT), '$.hosts'),
            '$.auth_plugins_found', (
                SELECT COALESCE(SUM(json_array_length(j.value, '$.evidence')), 0)
                FROM json_each(CAST(task_results.data AS TEXT), '$.hosts') j)
        ) AS BLOB)
    WHERE json_valid(CAST(data AS TEXT)) AND json_type(CAST(data AS TEXT), '$.hosts') = 'array';
    ALTER TABLE findings ADD COLUMN text_id INTEGER;
    CREATE TABLE finding_texts (
        task_id TEXT NOT NULL,
        text_id INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (task_id, text_id)
    );
    CREATE INDEX findings_unsplit ON findings(task_id) WHERE text_id IS NULL;
    """,
    # the cluster migration
    3: """
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
    2: """
    CREATE TABLE host_results (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        auth_status TEXT NOT NULL,
        critical INTEGER NOT NULL,
        high INTEGER NOT NULL,
        medium INTEGER NOT NULL,
        low INTEGER NOT NULL,
        info INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
    CREATE INDEX host_results_auth ON host_results(task_id, auth_status, seq);
    CREATE INDEX host_results_name ON host_results(task_id, name);
    CREATE TEMP TABLE old_results ON COMMIT DROP AS
        SELECT task_id, convert_from(data, 'UTF8')::json AS doc FROM task_results
        WHERE position('"hosts"' IN convert_from(data, 'UTF8')) > 0;
    DELETE FROM old_results WHERE json_typeof(doc -> 'hosts') IS DISTINCT FROM 'array';
    INSERT INTO host_results
        (task_id, seq, name, auth_status, critical, high, medium, low, info, data)
    SELECT r.task_id, (e.ord - 1)::int,
        COALESCE(e.h ->> 'name', ''),
        COALESCE(e.h ->> 'authentication_status', 'unknown'),
        COALESCE((e.h -> 'severity_breakdown' ->> 'critical')::int, 0),
        COALESCE((e.h -> 'severity_breakdown' ->> 'high')::int, 0),
        COALESCE((e.h -> 'severity_breakdown' ->> 'medium')::int, 0),
        COALESCE((e.h -> 'severity_breakdown' ->> 'low')::int, 0),
        COALESCE((e.h -> 'severity_breakdown' ->> 'info')::int, 0),
        convert_to(e.h::text, 'UTF8')
    FROM old_results r, json_array_elements(r.doc -> 'hosts') WITH ORDINALITY AS e(h, ord);
    UPDATE task_results t SET data = convert_to((
            (SELECT jsonb_object_agg(k, v) FROM json_each(r.doc) AS kv(k, v) WHERE k <> 'hosts')
            || jsonb_build_object(
                'hosts_total', json_array_length(r.doc -> 'hosts'),
                'auth_plugins_found', (
                    SELECT COALESCE(SUM(json_array_length(h -> 'evidence')), 0)
                    FROM json_array_elements(r.doc -> 'hosts') AS h))
        )::text, 'UTF8')
    FROM old_results r WHERE t.task_id = r.task_id;
    ALTER TABLE findings ADD COLUMN text_id BIGINT;
    CREATE TABLE finding_texts (
        task_id TEXT NOT NULL,
        text_id BIGINT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (task_id, text_id)
    );
    CREATE INDEX findings_unsplit ON findings(task_id) WHERE text_id IS NULL;
    """,
    # the cluster migration; ``pools`` is a JSON object
    # pool name -> hash of its definition, to report pools defined differently
    3: """
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
#: the newest migration; numbers may have gaps (branches get numbers that are merged later)
SCHEMA_VERSION = max(MIGRATIONS)
