"""The notification outbox: its named statements and reads (the only SQL of notifications).

A row is written in the same commit as the task transition that causes it (the engine's
final-transition hook), so a crash never loses one. The delivery worker claims due rows
for a lease (``claimed_until_ms``): a daemon that dies mid-delivery leaves the row due
again when the lease ends, or at once when the next daemon on the store is its only one
(:func:`release_claims`); delivery is at least once. On PostgreSQL the claim is one
``FOR UPDATE SKIP LOCKED`` transaction, so several daemons never claim the same row at once.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import msgspec

from nessus_pool.store.base import BaseStore
from nessus_pool.store.writer import Op

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
#: a findings event whose scan found nothing at or above the target's minimum severity
SKIPPED = "skipped"
STATES = (PENDING, DELIVERED, FAILED, SKIPPED)

_COLS = (
    "delivery_id, target, event, task_id, payload, prepared, attempts, next_attempt_at_ms,"
    " state, last_error, created_at_ms, updated_at_ms"
)
Q_OUTBOX_INSERT = (
    f"INSERT INTO notification_outbox ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (delivery_id) DO NOTHING"
)
Q_OUTBOX_UPDATE = (
    "UPDATE notification_outbox SET state = ?, attempts = ?, next_attempt_at_ms = ?,"
    " last_error = ?, payload = ?, prepared = ?, updated_at_ms = ?, claimed_until_ms = NULL"
    " WHERE delivery_id = ?"
)
Q_OUTBOX_LEASE = "UPDATE notification_outbox SET claimed_until_ms = ? WHERE delivery_id = ?"
_DUE = "state = 'pending' AND next_attempt_at_ms <= ? AND COALESCE(claimed_until_ms, 0) <= ?"
Q_OUTBOX_DUE = (
    f"SELECT {_COLS} FROM notification_outbox WHERE {_DUE} ORDER BY next_attempt_at_ms LIMIT ?"
)
Q_OUTBOX_CLAIM_PG = (
    "UPDATE notification_outbox SET claimed_until_ms = $1 WHERE delivery_id IN ("
    " SELECT delivery_id FROM notification_outbox WHERE state = 'pending'"
    " AND next_attempt_at_ms <= $2 AND COALESCE(claimed_until_ms, 0) <= $2"
    f" ORDER BY next_attempt_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {_COLS}"
)
#: when the worker next has something to do: the next due attempt or the end of a lease
Q_OUTBOX_NEXT_DUE = (
    "SELECT MIN(CASE WHEN COALESCE(claimed_until_ms, 0) > next_attempt_at_ms"
    " THEN claimed_until_ms ELSE next_attempt_at_ms END)"
    " FROM notification_outbox WHERE state = 'pending'"
)
Q_OUTBOX_RELEASE = (
    "UPDATE notification_outbox SET claimed_until_ms = NULL WHERE claimed_until_ms IS NOT NULL"
)
Q_OUTBOX_GET = f"SELECT {_COLS} FROM notification_outbox WHERE delivery_id = ?"
Q_OUTBOX_BY_STATE = (
    f"SELECT {_COLS} FROM notification_outbox WHERE state = ?"
    " ORDER BY updated_at_ms DESC, delivery_id LIMIT ?"
)
Q_OUTBOX_COUNTS = "SELECT state, COUNT(*) FROM notification_outbox GROUP BY state"
Q_OUTBOX_RETRY = (
    "UPDATE notification_outbox SET state = 'pending', attempts = 0, next_attempt_at_ms = ?,"
    " updated_at_ms = ? WHERE delivery_id = ? AND state = 'failed'"
)
Q_OUTBOX_PRUNE = (
    "DELETE FROM notification_outbox WHERE state IN ('delivered', 'skipped') AND updated_at_ms < ?"
)


class OutboxRow(msgspec.Struct, kw_only=True):
    delivery_id: str
    target: str
    event: str
    task_id: str
    #: the JSON payload (version 1); ``prepared`` once its findings parts are filled in
    payload: bytes
    prepared: bool
    attempts: int
    next_attempt_at_ms: int
    state: str
    last_error: str | None
    created_at_ms: int
    updated_at_ms: int


#: SQLite: claims of one process, one at a time (one process per file: the storage lock)
_claim_locks: weakref.WeakKeyDictionary[BaseStore, asyncio.Lock] = weakref.WeakKeyDictionary()


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        delivery_id=r[0],
        target=r[1],
        event=r[2],
        task_id=r[3],
        payload=bytes(r[4]),
        prepared=bool(r[5]),
        attempts=int(r[6]),
        next_attempt_at_ms=int(r[7]),
        state=r[8],
        last_error=r[9],
        created_at_ms=int(r[10]),
        updated_at_ms=int(r[11]),
    )


def op_insert(row: OutboxRow) -> Op:
    return (
        Q_OUTBOX_INSERT,
        (
            row.delivery_id,
            row.target,
            row.event,
            row.task_id,
            row.payload,
            int(row.prepared),
            row.attempts,
            row.next_attempt_at_ms,
            row.state,
            row.last_error,
            row.created_at_ms,
            row.updated_at_ms,
        ),
    )


def op_update(row: OutboxRow) -> Op:
    """Record ``row``'s state, attempts, next attempt, error and payload."""
    return (
        Q_OUTBOX_UPDATE,
        (
            row.state,
            row.attempts,
            row.next_attempt_at_ms,
            row.last_error,
            row.payload,
            int(row.prepared),
            row.updated_at_ms,
            row.delivery_id,
        ),
    )


async def claim_due(store: BaseStore, now_ms: int, lease_ms: int, limit: int) -> list[OutboxRow]:
    """Claim up to ``limit`` due rows for ``lease_ms`` (their next attempt moves past the
    lease, so no other claim takes them meanwhile)."""
    transact = getattr(store, "transact", None)
    if transact is not None:
        # PostgreSQL: one transaction, rows locked by others skipped; through transact, so
        # a server that is gone is a StorageError (the worker backs off) and an outage
        rows = await transact(
            lambda conn: conn.fetch(Q_OUTBOX_CLAIM_PG, now_ms + lease_ms, now_ms, limit)
        )
        return sorted((_row(r) for r in rows), key=lambda r: r.next_attempt_at_ms)
    lock = _claim_locks.setdefault(store, asyncio.Lock())
    async with lock:  # read then lease, with no other claim in between
        rows = [_row(r) for r in await store._fetch(Q_OUTBOX_DUE, (now_ms, now_ms, limit))]
        if rows:
            lease = now_ms + lease_ms
            await store.write([(Q_OUTBOX_LEASE, (lease, r.delivery_id)) for r in rows])
    return rows


async def release_claims(store: BaseStore) -> None:
    """Drop every lease: for a daemon that is the only one on its store (the claims there
    were made by a previous process, which is gone)."""
    await store.write([(Q_OUTBOX_RELEASE, ())])


async def next_due_ms(store: BaseStore) -> int | None:
    rows = await store._fetch(Q_OUTBOX_NEXT_DUE)
    return None if not rows or rows[0][0] is None else int(rows[0][0])


async def get(store: BaseStore, delivery_id: str) -> OutboxRow | None:
    rows = await store._fetch(Q_OUTBOX_GET, (delivery_id,))
    return _row(rows[0]) if rows else None


async def by_state(store: BaseStore, state: str, limit: int) -> list[OutboxRow]:
    """Rows in ``state``, most recently updated first."""
    return [_row(r) for r in await store._fetch(Q_OUTBOX_BY_STATE, (state, limit))]


async def counts(store: BaseStore) -> dict[str, int]:
    found = {r[0]: int(r[1]) for r in await store._fetch(Q_OUTBOX_COUNTS)}
    return {s: found.get(s, 0) for s in STATES}


async def retry(store: BaseStore, delivery_id: str, now_ms: int) -> None:
    """A failed row back to pending with fresh attempts (a no-op for any other state)."""
    await store.write([(Q_OUTBOX_RETRY, (now_ms, now_ms, delivery_id))])


async def prune(store: BaseStore, before_ms: int) -> None:
    """Delete delivered and skipped rows last updated before ``before_ms``."""
    await store.write([(Q_OUTBOX_PRUNE, (before_ms,))])
