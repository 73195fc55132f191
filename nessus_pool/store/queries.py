"""Every SQL statement of nessus-pool, by name (the list filter is built in Store)."""

from __future__ import annotations

from nessus_pool.models import ACTIVE_STATUSES, status_values
from nessus_pool.store.schema import UNFINISHED_SQL

#: the statuses of a task that holds a scanner slot, as an SQL list (from models.py, so a
#: status added there is re-attached, fenced and counted in a cluster without a change here)
ACTIVE_SQL = ", ".join(f"'{v}'" for v in status_values(ACTIVE_STATUSES))

Q_UPSERT_TASK = """
INSERT INTO tasks (task_id, seq, pool, status, priority, idempotency_key, created_at_ms,
                   finished_at_ms, dead_letter, data, scanner_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(task_id) DO UPDATE SET
    pool = excluded.pool, status = excluded.status, priority = excluded.priority,
    finished_at_ms = excluded.finished_at_ms, dead_letter = excluded.dead_letter,
    data = excluded.data, scanner_id = excluded.scanner_id
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
# --- several daemons on PostgreSQL ([cluster]; ``$n`` markers, never run on SQLite) -------

#: NOTIFY channels: a task was queued in a pool (payload: the pool); a cancel was asked
#: for a task some other daemon may run (payload: the task id)
SUBMIT_CHANNEL = "nessus_pool_submit"
CANCEL_CHANNEL = "nessus_pool_cancel"
#: not SQL: an op that says "the ops queued with this one are written only while this
#: daemon holds the lease ``(scanner_id, epoch)``" (fencing; ``(None, None)``: always)
Q_FENCE = "-- fence"
#: not SQL: ``pg_notify(channel, payload)`` once per commit that holds it
Q_NOTIFY = "-- notify"

# lease rows are always locked in scanner_id order (fence, renewal): never a deadlock
Q_FENCE_HELD = (
    "SELECT scanner_id, epoch FROM scanner_leases"
    " WHERE owner = $1 AND scanner_id = ANY($2::text[]) ORDER BY scanner_id FOR SHARE"
)
Q_CLAIM = (
    "SELECT data FROM tasks WHERE pool = $1 AND status = 'queued'"
    " ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
)
Q_POOL_STATS = (
    "SELECT pool, status = 'queued', COUNT(*), MIN(created_at_ms) FROM tasks WHERE status IN"
    f" ({UNFINISHED_SQL}) GROUP BY pool, status = 'queued'"
)
Q_QUEUE_KEYS = (
    "SELECT priority, seq FROM tasks WHERE pool = $1 AND status = 'queued'"
    " ORDER BY priority DESC, seq LIMIT $2"
)
Q_QUEUED_COUNT = "SELECT COUNT(*) FROM tasks WHERE pool = $1 AND status = 'queued'"
Q_HELD_TASKS = (
    f"SELECT data, cancel_requested FROM tasks WHERE status IN ({ACTIVE_SQL})"
    " AND (scanner_id = $1 OR scanner_id IS NULL)"
)
Q_CANCELS_FOR = (
    "SELECT task_id FROM tasks WHERE cancel_requested = 1 AND scanner_id = ANY($1::text[])"
    f" AND status IN ({ACTIVE_SQL})"
)
Q_NEXT_SEQ = "SELECT nextval('tasks_seq')"
#: the sequence starts past the tasks already there (copied by ``storage migrate``)
Q_SYNC_SEQ = (
    "SELECT setval('tasks_seq', GREATEST((SELECT COALESCE(MAX(seq), 0) FROM tasks),"
    " (SELECT last_value FROM tasks_seq)))"
)
Q_LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))"
Q_BY_IDEMPOTENCY_PG = "SELECT task_id FROM tasks WHERE idempotency_key = $1"
Q_LOCK_TASK = "SELECT data FROM tasks WHERE task_id = $1 FOR UPDATE"
Q_REQUEST_CANCEL = "UPDATE tasks SET cancel_requested = 1 WHERE task_id = $1"
Q_UPSERT_DAEMON = """
INSERT INTO daemons (daemon_id, host, pid, version, config_hash, pools_hash, pools,
                     started_at_ms, heartbeat_at_ms, zone)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
ON CONFLICT (daemon_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    version = excluded.version, config_hash = excluded.config_hash,
    pools_hash = excluded.pools_hash, pools = excluded.pools,
    started_at_ms = excluded.started_at_ms, heartbeat_at_ms = excluded.heartbeat_at_ms,
    zone = excluded.zone
"""
Q_DAEMON = "SELECT host, pid, heartbeat_at_ms FROM daemons WHERE daemon_id = $1"
Q_ALIVE = "SELECT daemon_id, zone FROM daemons WHERE heartbeat_at_ms > $1"
Q_RECENT_POOLS = "SELECT pools FROM daemons WHERE heartbeat_at_ms > $1"
Q_QUEUED_POOLS = "SELECT DISTINCT pool FROM tasks WHERE status = 'queued'"
Q_HEARTBEAT = "UPDATE daemons SET heartbeat_at_ms = $2 WHERE daemon_id = $1"
Q_RENEW_LEASES = (
    "UPDATE scanner_leases SET expires_at_ms = $2 WHERE scanner_id IN (SELECT scanner_id"
    " FROM scanner_leases WHERE owner = $1 AND scanner_id = ANY($3::text[])"
    " ORDER BY scanner_id FOR UPDATE) RETURNING scanner_id, epoch"
)
#: a free or expired lease (or our own from before a restart) -> ours, with the next epoch
Q_ACQUIRE_LEASE = """
INSERT INTO scanner_leases AS l (scanner_id, owner, epoch, expires_at_ms)
VALUES ($1, $2, 1, $3)
ON CONFLICT (scanner_id) DO UPDATE SET owner = excluded.owner, epoch = l.epoch + 1,
    expires_at_ms = excluded.expires_at_ms
WHERE l.expires_at_ms <= $4 OR l.owner = $2
RETURNING epoch
"""
Q_NEXT_EXPIRY = "SELECT MIN(expires_at_ms) FROM scanner_leases WHERE scanner_id = ANY($1::text[])"
#: given up: free for anyone, and no write of ours passes its fence any more
Q_RELEASE_LEASES = (
    "UPDATE scanner_leases SET expires_at_ms = 0, owner = '' WHERE owner = $1"
    " AND scanner_id = ANY($2::text[])"
)
Q_DAEMONS = (
    "SELECT daemon_id, host, pid, version, config_hash, pools_hash, pools, started_at_ms,"
    " heartbeat_at_ms, zone FROM daemons ORDER BY daemon_id"
)
Q_LEASES = "SELECT scanner_id, owner, epoch, expires_at_ms FROM scanner_leases ORDER BY scanner_id"
