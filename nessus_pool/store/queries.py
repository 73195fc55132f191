"""Every SQL statement of nessus-pool, by name (the list filter is built in Store)."""

from __future__ import annotations

from nessus_pool.store.schema import UNFINISHED_SQL

Q_UPSERT_TASK = """
INSERT INTO tasks (task_id, seq, pool, status, priority, idempotency_key, created_at_ms,
                   finished_at_ms, dead_letter, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(task_id) DO UPDATE SET
    pool = excluded.pool, status = excluded.status, priority = excluded.priority,
    finished_at_ms = excluded.finished_at_ms, dead_letter = excluded.dead_letter,
    data = excluded.data
"""
Q_INSERT_EVENT = (
    "INSERT INTO task_events (task_id, at_ms, status, reason, detail) VALUES (?, ?, ?, ?, ?)"
)
Q_GET_TASK = "SELECT data FROM tasks WHERE task_id = ?"
Q_BY_IDEMPOTENCY = "SELECT data FROM tasks WHERE idempotency_key = ?"
# no ORDER BY: through the partial index and sorted in Python it is 2.5x faster than
# SQLite's temp B-tree sort (100,000 queued: 0.19 s against 0.48 s)
Q_ACTIVE = f"SELECT data FROM tasks WHERE status IN ({UNFINISHED_SQL})"
Q_MAX_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM tasks"
Q_EVENTS = (
    "SELECT task_id, at_ms, status, reason, detail FROM task_events WHERE task_id = ? ORDER BY id"
)
Q_UPSERT_RESULTS = "INSERT OR REPLACE INTO task_results (task_id, data) VALUES (?, ?)"
Q_GET_RESULTS = "SELECT data FROM task_results WHERE task_id = ?"
Q_INSERT_FINDING = (
    "INSERT OR REPLACE INTO findings (task_id, seq, severity, plugin_id, host, text_id, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
Q_INSERT_TEXT = "INSERT OR REPLACE INTO finding_texts (task_id, text_id, data) VALUES (?, ?, ?)"
Q_DELETE_TEXTS = "DELETE FROM finding_texts WHERE task_id = ?"
Q_GET_TEXTS = "SELECT text_id, data FROM finding_texts WHERE task_id = ?"
#: a task's findings after a seq, a chunk at a time (keyset: every chunk an index seek)
Q_GET_FINDING_PARTS = (
    "SELECT seq, text_id, data FROM findings WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
#: findings stored before texts were split out (text_id NULL), a task and a chunk at a time
Q_UNSPLIT_TASK = "SELECT task_id FROM findings WHERE text_id IS NULL LIMIT 1"
Q_UNSPLIT_ROWS = (
    "SELECT seq, data FROM findings WHERE task_id = ? AND text_id IS NULL ORDER BY seq LIMIT ?"
)
Q_SET_SPLIT = "UPDATE findings SET text_id = ?, data = ? WHERE task_id = ? AND seq = ?"
Q_DELETE_FINDINGS = "DELETE FROM findings WHERE task_id = ?"
Q_GET_FINDINGS = "SELECT data FROM findings WHERE task_id = ? ORDER BY seq"
Q_COUNT_FINDINGS = "SELECT COUNT(*) FROM findings WHERE task_id = ?"
Q_DELETE_TASK = (
    "DELETE FROM tasks WHERE task_id = ?",
    "DELETE FROM task_events WHERE task_id = ?",
    "DELETE FROM task_results WHERE task_id = ?",
    "DELETE FROM findings WHERE task_id = ?",
    "DELETE FROM host_results WHERE task_id = ?",
    "DELETE FROM finding_texts WHERE task_id = ?",
)

Q_DLQ_COUNTS = "SELECT pool, COUNT(*) FROM tasks WHERE dead_letter = 1 GROUP BY pool"
Q_PROBE_WRITE = "CREATE TABLE IF NOT EXISTS _probe (x INTEGER)"

# --- per-host results (rows of their own, read in pages) ----------------------------------
HOST_COLUMNS = "task_id, seq, name, auth_status, critical, high, medium, low, info, data"
Q_INSERT_HOST = (
    f"INSERT OR REPLACE INTO host_results ({HOST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
Q_DELETE_HOSTS = "DELETE FROM host_results WHERE task_id = ?"
#: names of the hosts one scan listed and another did not, by name, bounded
Q_HOSTS_ONLY_IN = (
    "SELECT DISTINCT a.name FROM host_results a WHERE a.task_id = ? AND NOT EXISTS"
    " (SELECT 1 FROM host_results b WHERE b.task_id = ? AND b.name = a.name)"
    " ORDER BY a.name LIMIT ?"
)
#: the hosts of a scan among some names (the IN list is built per call, bounded)
Q_HOSTS_NAMED = "SELECT DISTINCT name FROM host_results WHERE task_id = ? AND name IN ({marks})"
