"""The rows a task's final transition adds to the outbox, in the same commit.

:meth:`OutboxWriter.rows_for` is the engine's final-transition hook: synchronous (it runs
inside ``Engine.change``, where no other coroutine may run between the change in memory
and its place in the commit order), cheap (terminal transitions only, one JSON encode per
row), and it never raises into the engine: a bug here logs and loses the notification,
never the task's final row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from nessus_pool.clock import Clock
from nessus_pool.config import NotificationConfig
from nessus_pool.models import Task
from nessus_pool.notify.payload import events_for, initial_payload
from nessus_pool.store.outbox import PENDING, OutboxRow, op_insert
from nessus_pool.store.writer import Op

log = logging.getLogger("nessus_pool.notify")


def delivery_id(task_id: str, finished_at_ms: int | None, target: str, event: str) -> str:
    """Stable for one end of one task, one target and one event (a retried dead letter that
    ends again gets new ids; the same end written twice collides and is kept once)."""
    key = f"{task_id}\0{finished_at_ms}\0{target}\0{event}".encode()
    return "dlv-" + hashlib.sha256(key).hexdigest()[:24]


class OutboxWriter:
    """Builds outbox rows for final transitions from the current ``[[notifications]]``."""

    def __init__(self, targets: Callable[[], list[NotificationConfig]], clock: Clock) -> None:
        self._targets = targets
        self.clock = clock
        #: task ids whose rows were queued and whose commit the worker has not yet seen
        self.queued: set[str] = set()

    def rows_for(self, t: Task) -> list[Op]:
        """The outbox inserts for ``t``'s final state (``t`` already has it)."""
        try:
            return self._rows(t)
        except Exception:
            log.exception(
                "notification rows not built",
                extra={"event": "notification_rows_failed", "task_id": t.task_id},
            )
            return []

    def _rows(self, t: Task) -> list[Op]:
        targets = self._targets()
        if not targets:
            return []
        events = events_for(t)
        now_ms = self.clock.now_ms()
        ops: list[Op] = []
        for target in targets:
            if target.pools is not None and t.pool not in target.pools:
                continue
            for event in events:
                if event not in target.events:
                    continue
                did = delivery_id(t.task_id, t.finished_at_ms, target.name, event)
                row = OutboxRow(
                    delivery_id=did,
                    target=target.name,
                    event=event,
                    task_id=t.task_id,
                    payload=initial_payload(event, did, t, target.min_severity, now_ms),
                    prepared=False,
                    attempts=0,
                    next_attempt_at_ms=now_ms,
                    state=PENDING,
                    last_error=None,
                    created_at_ms=now_ms,
                    updated_at_ms=now_ms,
                )
                ops.append(op_insert(row))
        if ops:
            self.queued.add(t.task_id)
        return ops
